// Package credential resolves the value the proxy injects into requests to a
// domain. A credential value never appears in an error, a log line or a
// metric: errors name the credential (env:NAME, file:PATH, secret:NAME) only.
package credential

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cagent-dev/cagent/policy"
)

// MaxValueBytes bounds a credential value (it ends up in a request header).
const MaxValueBytes = 16 << 10

// ErrNotConfigured is wrapped when a credential names a source the resolver
// does not have (a secret: credential without a secret store).
var ErrNotConfigured = errors.New("no secret store configured")

// ErrNotSet is wrapped when an env: credential's variable is not set.
var ErrNotSet = errors.New("is not set")

// SecretSource looks up named secrets (the local encrypted store, or the
// control plane in connected mode). Its errors must not contain values.
type SecretSource interface {
	Secret(ctx context.Context, name string) (string, error)
}

// Resolver produces header values for policy credentials. The zero value
// reads the process environment and refuses secret: credentials.
type Resolver struct {
	LookupEnv func(string) (string, bool) // os.LookupEnv when nil
	Secrets   SecretSource                // nil: secret: credentials fail closed

	mu    sync.Mutex
	files map[string]fileEntry // path -> last read value, checked by mtime and size
}

type fileEntry struct {
	mod   time.Time
	size  int64
	inode uint64
	value string
}

// Name returns the credential's name for audit events: "env:OPENAI_API_KEY",
// "file:/run/key" or "secret:openai" ("" for nil).
func Name(c *policy.Credential) string {
	switch {
	case c == nil:
		return ""
	case c.Env != "":
		return "env:" + c.Env
	case c.File != "":
		return "file:" + c.File
	case c.Secret != "":
		return "secret:" + c.Secret
	}
	return ""
}

// HeaderValue returns c.Format with {value} replaced by the credential's
// value. A missing or empty value is an error, never an empty header, and so
// is a value containing CR, LF, NUL or another control character.
func (r *Resolver) HeaderValue(ctx context.Context, c *policy.Credential) (string, error) {
	if c == nil {
		return "", errors.New("credential: none configured")
	}
	name := Name(c)
	var (
		v   string
		err error
	)
	switch {
	case c.Env != "":
		v, err = r.env(c.Env)
	case c.File != "":
		v, err = r.file(c.File)
	case c.Secret != "":
		v, err = r.secret(ctx, c.Secret)
	default:
		return "", errors.New("credential: none of env, file or secret is set")
	}
	if errors.Is(err, ErrNotSet) {
		return "", fmt.Errorf("credential %s %w", name, err)
	}
	if err != nil {
		return "", fmt.Errorf("credential %s: %w", name, err)
	}
	if v == "" {
		return "", fmt.Errorf("credential %s is empty", name)
	}
	if len(v) > MaxValueBytes {
		return "", fmt.Errorf("credential %s is longer than %d bytes", name, MaxValueBytes)
	}
	if i := badByte(v); i >= 0 {
		// Position only: the byte itself is part of the value.
		return "", fmt.Errorf("credential %s contains a control character (CR, LF, NUL or similar) at byte %d; refusing to inject it into a header", name, i)
	}
	format := c.Format
	if format == "" {
		format = "{value}"
	}
	return strings.ReplaceAll(format, "{value}", v), nil
}

// badByte returns the index of the first byte not allowed in a header value
// (control characters other than tab, and DEL), or -1.
func badByte(v string) int {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}

func (r *Resolver) env(name string) (string, error) {
	lookup := r.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(name)
	if !ok {
		return "", ErrNotSet
	}
	return v, nil
}

// file reads path, re-reading it only when its mtime or size changed, so a
// rotated key file takes effect on the next request.
func (r *Resolver) file(path string) (string, error) {
	// O_NONBLOCK: a FIFO at path must not hang the request forever.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err // *PathError: names the path, holds no content
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", errors.New("is not a regular file")
	}
	var inode uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		inode = sys.Ino
	}
	r.mu.Lock()
	e, ok := r.files[path]
	r.mu.Unlock()
	if ok && e.mod.Equal(st.ModTime()) && e.size == st.Size() && e.inode == inode {
		return e.value, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxValueBytes+3))
	if err != nil {
		return "", err
	}
	v := strings.TrimSuffix(string(b), "\n")
	v = strings.TrimSuffix(v, "\r")
	if len(v) > MaxValueBytes {
		return "", fmt.Errorf("is longer than %d bytes", MaxValueBytes)
	}
	r.mu.Lock()
	if r.files == nil {
		r.files = make(map[string]fileEntry)
	}
	r.files[path] = fileEntry{mod: st.ModTime(), size: st.Size(), inode: inode, value: v}
	r.mu.Unlock()
	return v, nil
}

func (r *Resolver) secret(ctx context.Context, name string) (string, error) {
	if r.Secrets == nil {
		return "", ErrNotConfigured
	}
	return r.Secrets.Secret(ctx, name)
}
