// Package secretstore keeps named secrets encrypted at rest for standalone
// data planes (`cagent secret set NAME`). Values are sealed with AES-256-GCM
// under a key kept beside them (mode 0600); each entry's name is bound as
// additional data, so entries cannot be swapped between names.
//
// Layout under <state-dir>/secrets (directory 0700):
//
//	key           32 random bytes, 0600; Open refuses it if group or others can read it
//	secrets.json  {"version":1,"secrets":{NAME:{"nonce":B64,"ciphertext":B64}}}, 0600
//	lock          flock taken by writers, so `cagent secret set` and a running
//	              data plane never lose each other's updates
//
// Readers notice a changed secrets.json (mtime, size, inode) on the next
// lookup, so a secret set from the command line takes effect without a restart.
package secretstore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cagent-dev/cagent/internal/atomicfile"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	keySize = 32
	// MaxValueBytes bounds one secret value.
	MaxValueBytes = 64 << 10
	fileVersion   = 1
	// aadPrefix domain-separates our additional data from any other use of the key.
	aadPrefix = "cagent-secret-v1\x00"
)

// validName reports whether name is 1 to 128 of [A-Za-z0-9_.-]. A loop,
// not a regexp: compiling `{1,128}` at init cost every cagent command
// ~0.4 ms and 1,700 allocations (GODEBUG=inittrace=1).
func validName(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// ErrNotFound is wrapped when a secret does not exist.
var ErrNotFound = errors.New("no such secret")

// ValidName reports an error unless name is 1-128 of [A-Za-z0-9_.-].
func ValidName(name string) error {
	if !validName(name) {
		return fmt.Errorf("secretstore: invalid secret name %q: use 1 to 128 of A-Z a-z 0-9 _ . -", name)
	}
	return nil
}

type sealed struct {
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

type fileData struct {
	Version int               `json:"version"`
	Secrets map[string]sealed `json:"secrets"`
}

// Store is the encrypted secret store. It is safe for concurrent use, and
// across processes (writers hold a lock file; readers see atomic renames).
type Store struct {
	dir      string
	path     string
	lockPath string
	aead     cipher.AEAD

	mu      sync.Mutex
	entries map[string]sealed
	stamp   stamp // of the file the entries were read from
}

// stamp identifies a version of the secrets file on disk.
type stamp struct {
	ok    bool
	mod   time.Time
	size  int64
	inode uint64
}

// Open opens the store under <stateDir>/secrets, creating the directory and
// a fresh key on first use.
func Open(stateDir string) (*Store, error) {
	dir := filepath.Join(stateDir, "secrets")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	key, err := loadOrCreateKey(filepath.Join(dir, "key"))
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	s := &Store{
		dir:      dir,
		path:     filepath.Join(dir, "secrets.json"),
		lockPath: filepath.Join(dir, "lock"),
		aead:     aead,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reloadLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

func loadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	// Write a complete temporary file, then link it into place: link fails if
	// another process created the key first, and then we use theirs.
	f, err := os.CreateTemp(filepath.Dir(path), ".key.tmp*")
	if err != nil {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("secretstore: write key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	atomicfile.SyncDir(filepath.Dir(path))
	return readKey(path)
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secretstore: key %s is accessible by group or others (mode %04o); run chmod 600 %s", path, perm, path)
	}
	key, err := io.ReadAll(io.LimitReader(f, keySize+1))
	if err != nil {
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("secretstore: key %s is not %d bytes", path, keySize)
	}
	return key, nil
}

func statFile(path string) (stamp, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return stamp{}, nil
	}
	if err != nil {
		return stamp{}, fmt.Errorf("secretstore: %w", err)
	}
	s := stamp{ok: true, mod: st.ModTime(), size: st.Size()}
	if sys, ok := st.Sys().(*unix.Stat_t); ok {
		s.inode = sys.Ino
	}
	return s, nil
}

// reloadLocked re-reads the secrets file if it changed since the last read.
func (s *Store) reloadLocked() error {
	st, err := statFile(s.path)
	if err != nil {
		return err
	}
	if s.entries != nil && st == s.stamp {
		return nil
	}
	entries := map[string]sealed{}
	if st.ok {
		data, err := os.ReadFile(s.path)
		if errors.Is(err, fs.ErrNotExist) {
			data = nil
		} else if err != nil {
			return fmt.Errorf("secretstore: %w", err)
		}
		if data != nil {
			entries, err = decode(data)
			if err != nil {
				return fmt.Errorf("secretstore: %s is corrupt: %v", s.path, err)
			}
		}
	}
	s.entries, s.stamp = entries, st
	return nil
}

func decode(data []byte) (map[string]sealed, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f fileData
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("unsupported version %d", f.Version)
	}
	for name := range f.Secrets {
		if !validName(name) {
			return nil, fmt.Errorf("invalid secret name %q", name)
		}
	}
	if f.Secrets == nil {
		f.Secrets = map[string]sealed{}
	}
	return f.Secrets, nil
}

func aad(name string) []byte { return []byte(aadPrefix + name) }

// Set stores value under name, replacing any previous value.
func (s *Store) Set(name, value string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if value == "" {
		return fmt.Errorf("secretstore: secret %q: empty value", name)
	}
	if len(value) > MaxValueBytes {
		return fmt.Errorf("secretstore: secret %q: value longer than %d bytes", name, MaxValueBytes)
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("secretstore: %w", err)
	}
	ct := s.aead.Seal(nil, nonce, []byte(value), aad(name))
	return s.update(func(m map[string]sealed) error {
		m[name] = sealed{Nonce: nonce, Ciphertext: ct}
		return nil
	})
}

// Delete removes name.
func (s *Store) Delete(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return s.update(func(m map[string]sealed) error {
		if _, ok := m[name]; !ok {
			return fmt.Errorf("secretstore: secret %q: %w", name, ErrNotFound)
		}
		delete(m, name)
		return nil
	})
}

// update applies fn to the current entries under the cross-process lock and
// writes the result atomically.
func (s *Store) update(fn func(map[string]sealed) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lock, err := os.OpenFile(s.lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("secretstore: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("secretstore: lock %s: %w", s.lockPath, err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)

	s.entries = nil // force a fresh read under the lock
	if err := s.reloadLocked(); err != nil {
		return err
	}
	next := make(map[string]sealed, len(s.entries)+1)
	for k, v := range s.entries {
		next[k] = v
	}
	if err := fn(next); err != nil {
		return err
	}
	data, err := json.MarshalIndent(fileData{Version: fileVersion, Secrets: next}, "", "  ")
	if err != nil {
		return fmt.Errorf("secretstore: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("secretstore: write %s: %w", s.path, err)
	}
	st, err := statFile(s.path)
	if err != nil {
		return err
	}
	s.entries, s.stamp = next, st
	return nil
}

// Names returns the stored secret names, sorted.
func (s *Store) Names() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reloadLocked(); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(s.entries))
	for n := range s.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Secret returns the value of name, re-reading the file if it changed on
// disk. It implements credential.SecretSource. Errors never contain values.
func (s *Store) Secret(ctx context.Context, name string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := ValidName(name); err != nil {
		return "", err
	}
	s.mu.Lock()
	err := s.reloadLocked()
	e, ok := s.entries[name]
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("secretstore: secret %q: %w", name, ErrNotFound)
	}
	if len(e.Nonce) != s.aead.NonceSize() {
		return "", fmt.Errorf("secretstore: secret %q: bad nonce length %d", name, len(e.Nonce))
	}
	pt, err := s.aead.Open(nil, e.Nonce, e.Ciphertext, aad(name))
	if err != nil {
		return "", fmt.Errorf("secretstore: secret %q does not decrypt (the entry was altered or moved from another name, or %s is not the key it was sealed with)", name, filepath.Join(s.dir, "key"))
	}
	return string(pt), nil
}
