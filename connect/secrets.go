package connect

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// DefaultSecretTTL is how long secret values stay usable without contact
// with the control plane (the seeds cached them for 5 minutes).
const DefaultSecretTTL = 5 * time.Minute

// secretCache holds the secret values the control plane sent, in memory
// only. Values stay usable while the control plane is in contact (any
// message refreshes it) and for ttl after the last contact; then they are
// erased and lookups fail closed with the reason.
type secretCache struct {
	now func() time.Time
	ttl time.Duration

	mu      sync.Mutex
	values  map[string]string
	got     bool      // a state was ever received (since this process started)
	contact time.Time // last message from the control plane
}

func (c *secretCache) set(values map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.values = make(map[string]string, len(values))
	for k, v := range values {
		c.values[k] = v
	}
	c.got = true
	c.contact = c.now()
}

func (c *secretCache) touch() {
	c.mu.Lock()
	c.contact = c.now()
	c.mu.Unlock()
}

// Secret implements credential.SecretSource. Errors name the secret and
// the reason, never a value.
func (c *secretCache) Secret(_ context.Context, name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.got {
		return "", fmt.Errorf("secret %s: not received from the control plane yet (connected mode keeps secrets in memory only)", name)
	}
	if age := c.now().Sub(c.contact); age > c.ttl {
		c.values = nil // erase them: nothing may use them any more
		return "", fmt.Errorf("secret %s: no contact with the control plane for %s (more than %s); cached secret values expired, failing closed", name, age.Round(time.Second), c.ttl)
	}
	v, ok := c.values[name]
	if !ok {
		return "", fmt.Errorf("secret %s: not set in the control plane for this agent", name)
	}
	return v, nil
}
