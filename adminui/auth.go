package adminui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/cagent-dev/cagent/internal/atomicfile"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// tokenFile is where the hash of the admin token lives, under the state dir.
// Only the SHA-256 of the token is stored: the token is 256 random bits, so
// a plain hash is enough to make the file useless to a reader.
const tokenFile = "admin/token.sha256"

// tokenPrefix marks admin tokens so they are recognisable in a leak scan.
const tokenPrefix = "cagent_admin_"

// TokenPath is the file holding the admin token's hash.
func TokenPath(stateDir string) string { return filepath.Join(stateDir, tokenFile) }

// EnsureToken makes an admin token if the state dir has none. It returns
// the new token (to be shown once) and true, or "" and false when one exists.
func EnsureToken(stateDir string) (string, bool, error) {
	if _, err := os.Stat(TokenPath(stateDir)); err == nil {
		return "", false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("admin token: %w", err)
	}
	tok, err := RotateToken(stateDir)
	if err != nil {
		return "", false, err
	}
	return tok, true, nil
}

// RotateToken replaces the admin token and returns the new one. Sessions
// made with the old token stop working at their next request.
func RotateToken(stateDir string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	if err := os.MkdirAll(filepath.Dir(TokenPath(stateDir)), 0o700); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if err := atomicfile.WriteFile(TokenPath(stateDir), []byte(hashToken(tok)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// readTokenHash returns the stored hash; it is re-read on every check so
// that `cagent admin token --rotate` takes effect without a restart.
func readTokenHash(stateDir string) (string, error) {
	b, err := os.ReadFile(TokenPath(stateDir))
	if err != nil {
		return "", err
	}
	h := strings.TrimSpace(string(b))
	if len(h) != 64 {
		return "", errors.New("admin token file is malformed")
	}
	return h, nil
}

func equalHash(a, b string) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func randomID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

type session struct {
	csrf      string
	tokenHash string // the token hash it was made with
	expires   time.Time
	remote    string
}

// sessions is the in-memory session table. A restart logs everyone out,
// which is what a local admin tool should do.
type sessions struct {
	mu   sync.Mutex
	m    map[string]*session
	now  func() time.Time
	idle time.Duration

	// Failed logins, for throttling guessing. The token has 256 bits, so
	// this is about keeping logs and CPU quiet, not about entropy.
	failures []time.Time
}

const maxSessions = 64

func newSessions(now func() time.Time, idle time.Duration) *sessions {
	return &sessions{m: map[string]*session{}, now: now, idle: idle}
}

func (s *sessions) create(tokenHash, remote string) (id string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m {
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	if len(s.m) >= maxSessions { // drop the one closest to expiry
		var oldest string
		for k, v := range s.m {
			if oldest == "" || v.expires.Before(s.m[oldest].expires) {
				oldest = k
			}
		}
		delete(s.m, oldest)
	}
	id = randomID()
	sess = &session{csrf: randomID(), tokenHash: tokenHash, expires: now.Add(s.idle), remote: remote}
	s.m[id] = sess
	return id, sess
}

// get returns a live session and extends it; currentHash invalidates
// sessions made with a rotated-away token.
func (s *sessions) get(id, currentHash string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[id]
	if !ok {
		return nil
	}
	now := s.now()
	if now.After(sess.expires) || !equalHash(sess.tokenHash, currentHash) {
		delete(s.m, id)
		return nil
	}
	sess.expires = now.Add(s.idle)
	c := *sess
	return &c
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// allowAttempt reports whether a login may be tried now: at most 10
// failures per minute across all clients.
func (s *sessions) allowAttempt() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.now().Add(-time.Minute)
	k := 0
	for _, t := range s.failures {
		if t.After(cut) {
			s.failures[k] = t
			k++
		}
	}
	s.failures = s.failures[:k]
	return len(s.failures) < 10
}

func (s *sessions) fail() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, s.now())
}
