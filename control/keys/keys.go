// Package keys holds the control plane's cryptography: API tokens (random,
// shown once, stored as a salted HMAC-SHA256 under a server key) and the
// AES-256-GCM keyring that encrypts secrets at rest.
package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TokenPrefix starts every API token, so that leaked tokens are easy to
// recognise in logs and by secret scanners.
const TokenPrefix = "cagent_"

// SecretBytes is the random part of a token: 256 bits.
const SecretBytes = 32

// Token is a freshly minted API token. Plain is shown to the user once and
// never stored; the database keeps ID, Salt and Hash.
type Token struct {
	ID    string // public identifier, also embedded in Plain
	Plain string // cagent_<id>_<secret>
	Salt  string // hex, random per token
	Hash  string // hex HMAC-SHA256(server key, salt || secret)
}

// Hasher hashes token secrets under the server key.
type Hasher struct{ key []byte }

// NewHasher returns a Hasher for a server key of at least 32 bytes.
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("token key: need at least 32 bytes, have %d", len(key))
	}
	return &Hasher{key: append([]byte(nil), key...)}, nil
}

// NewToken mints a token.
func (h *Hasher) NewToken() (Token, error) {
	id := make([]byte, 12)
	secret := make([]byte, SecretBytes)
	salt := make([]byte, 16)
	for _, b := range [][]byte{id, secret, salt} {
		if _, err := rand.Read(b); err != nil {
			return Token{}, fmt.Errorf("token: %w", err)
		}
	}
	t := Token{ID: hex.EncodeToString(id), Salt: hex.EncodeToString(salt)}
	sec := base64.RawURLEncoding.EncodeToString(secret)
	t.Plain = TokenPrefix + t.ID + "_" + sec
	t.Hash = h.hash(t.Salt, sec)
	return t, nil
}

func (h *Hasher) hash(salt, secret string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(salt))
	m.Write([]byte{0})
	m.Write([]byte(secret))
	return hex.EncodeToString(m.Sum(nil))
}

// ParseToken splits a presented token into its id and secret. It only checks
// the shape; Verify checks the secret.
func ParseToken(plain string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(plain, TokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 24 || len(secret) != base64.RawURLEncoding.EncodedLen(SecretBytes) {
		return "", "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	return id, secret, true
}

// Verify reports whether secret matches the stored salt and hash, in
// constant time.
func (h *Hasher) Verify(salt, hash, secret string) bool {
	want, err := hex.DecodeString(hash)
	if err != nil {
		return false
	}
	got, _ := hex.DecodeString(h.hash(salt, secret))
	return hmac.Equal(want, got)
}

// LoadOrCreate returns the key in file path, or from the environment
// variable env when it is set (base64), creating path with a fresh 32-byte
// key and mode 0600 when neither exists.
func LoadOrCreate(path, env string) ([]byte, error) {
	if v := os.Getenv(env); env != "" && v != "" {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("%s: want at least 32 bytes, base64", env)
		}
		return k, nil
	}
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("%s: want at least 32 bytes, base64", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := writeNew(path, base64.StdEncoding.EncodeToString(k)+"\n"); err != nil {
		return nil, err
	}
	return k, nil
}

// writeNew creates path with mode 0600, failing if it exists.
func writeNew(path, data string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Keyring is a set of AES-256 keys by id; new values are sealed with the
// active key, old values open with whichever key sealed them.
type Keyring struct {
	keys   map[string]cipher.AEAD
	raw    map[string][]byte
	order  []string
	active string
}

// ParseKeyring reads "ID BASE64KEY" entries separated by newlines or commas;
// the last entry is the active key.
func ParseKeyring(s string) (*Keyring, error) {
	kr := &Keyring{keys: map[string]cipher.AEAD{}, raw: map[string][]byte{}}
	for _, line := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == ',' }) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, b64, ok := strings.Cut(line, " ")
		if !ok {
			id, b64, ok = strings.Cut(line, ":")
		}
		if !ok || !validKeyID(id) {
			return nil, errors.New("keyring: want entries of the form \"ID BASE64KEY\"")
		}
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("keyring: key %s: want 32 bytes, base64", id)
		}
		if err := kr.add(id, k); err != nil {
			return nil, err
		}
	}
	if kr.active == "" {
		return nil, errors.New("keyring: no keys")
	}
	return kr, nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func (kr *Keyring) add(id string, k []byte) error {
	if _, dup := kr.keys[id]; dup {
		return fmt.Errorf("keyring: duplicate key id %s", id)
	}
	blk, err := aes.NewCipher(k)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return err
	}
	kr.keys[id], kr.raw[id] = aead, append([]byte(nil), k...)
	kr.order = append(kr.order, id)
	kr.active = id
	return nil
}

// NewKeyring returns a keyring holding one fresh random key.
func NewKeyring() (*Keyring, error) {
	kr := &Keyring{keys: map[string]cipher.AEAD{}, raw: map[string][]byte{}}
	if _, err := kr.Generate(); err != nil {
		return nil, err
	}
	return kr, nil
}

// Generate adds a fresh random key and makes it active.
func (kr *Keyring) Generate() (string, error) {
	k := make([]byte, 32)
	idb := make([]byte, 4)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	if _, err := rand.Read(idb); err != nil {
		return "", err
	}
	id := "k" + hex.EncodeToString(idb)
	return id, kr.add(id, k)
}

// Active is the id of the key new values are sealed with.
func (kr *Keyring) Active() string { return kr.active }

// Has reports whether the keyring holds key id.
func (kr *Keyring) Has(id string) bool { _, ok := kr.keys[id]; return ok }

// String encodes the keyring in the ParseKeyring format, active key last.
func (kr *Keyring) String() string {
	var b strings.Builder
	for _, id := range kr.order {
		fmt.Fprintf(&b, "%s %s\n", id, base64.StdEncoding.EncodeToString(kr.raw[id]))
	}
	return b.String()
}

// OnlyActive returns a keyring holding just the active key.
func (kr *Keyring) OnlyActive() *Keyring {
	n := &Keyring{keys: map[string]cipher.AEAD{}, raw: map[string][]byte{}}
	_ = n.add(kr.active, kr.raw[kr.active])
	return n
}

// Seal encrypts plaintext with the active key. aad binds the ciphertext to
// its owner (tenant and name), so a row copied elsewhere fails to open.
func (kr *Keyring) Seal(plaintext, aad []byte) (keyID string, sealed []byte, err error) {
	aead := kr.keys[kr.active]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, err
	}
	return kr.active, aead.Seal(nonce, nonce, plaintext, aad), nil
}

// Open decrypts a value sealed under key keyID.
func (kr *Keyring) Open(keyID string, sealed, aad []byte) ([]byte, error) {
	aead, ok := kr.keys[keyID]
	if !ok {
		return nil, fmt.Errorf("secret sealed with unknown key %q", keyID)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("sealed value too short")
	}
	pt, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], aad)
	if err != nil {
		return nil, fmt.Errorf("secret with key %q: %w", keyID, err)
	}
	return pt, nil
}

// LoadOrCreateKeyring reads the keyring from the environment variable env
// when set, else from path, creating path (mode 0600) with one fresh key when
// neither exists. fromEnv reports where it came from.
func LoadOrCreateKeyring(path, env string) (kr *Keyring, fromEnv bool, err error) {
	if v := os.Getenv(env); env != "" && v != "" {
		kr, err := ParseKeyring(v)
		if err != nil {
			return nil, true, fmt.Errorf("%s: %w", env, err)
		}
		return kr, true, nil
	}
	b, err := os.ReadFile(path)
	if err == nil {
		kr, err := ParseKeyring(string(b))
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		return kr, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	kr, err = NewKeyring()
	if err != nil {
		return nil, false, err
	}
	return kr, false, writeNew(path, kr.String())
}

// WriteKeyring atomically replaces path with the keyring (mode 0600).
func WriteKeyring(path string, kr *Keyring) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := writeNew(tmp, kr.String()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
