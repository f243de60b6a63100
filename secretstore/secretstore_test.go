package secretstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cagent-dev/cagent/credential"
)

var _ credential.SecretSource = (*Store)(nil)

// canary is distinctive enough that finding it anywhere means a leak.
const canary = "sk-CANARY-7f3a9c1e5b-do-not-leak"

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	if names, err := s.Names(); err != nil || len(names) != 0 {
		t.Fatalf("Names on a new store = %v, %v", names, err)
	}
	for name, value := range map[string]string{"openai": canary, "gh.token-2": "ghp_x", "A_B": "multi word value"} {
		if err := s.Set(name, value); err != nil {
			t.Fatal(err)
		}
		got, err := s.Secret(ctx, name)
		if err != nil || got != value {
			t.Fatalf("Secret(%s) = %q, %v", name, got, err)
		}
	}
	if err := s.Set("openai", "replaced"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Secret(ctx, "openai"); got != "replaced" {
		t.Errorf("after replace: %q", got)
	}
	names, err := s.Names()
	if err != nil || !slices.Equal(names, []string{"A_B", "gh.token-2", "openai"}) {
		t.Errorf("Names = %v, %v", names, err)
	}
	if err := s.Delete("gh.token-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Secret(ctx, "gh.token-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted secret: err = %v", err)
	}
	if err := s.Delete("gh.token-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete twice: err = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Secret(cctx, "openai"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v", err)
	}
}

func TestNames(t *testing.T) {
	s := openStore(t, t.TempDir())
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"openai_key.v2-prod", true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"", false},
		{"has space", false},
		{"slash/name", false},
		{"../key", false},
		{"nul\x00", false},
		{"ünicode", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.20q", tt.name), func(t *testing.T) {
			err := s.Set(tt.name, "v")
			if (err == nil) != tt.ok {
				t.Fatalf("Set(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestValuesRefused(t *testing.T) {
	s := openStore(t, t.TempDir())
	if err := s.Set("a", ""); err == nil {
		t.Error("empty value accepted")
	}
	big := strings.Repeat(canary, MaxValueBytes/len(canary)+1)
	err := s.Set("a", big)
	if err == nil {
		t.Fatal("oversized value accepted")
	}
	if strings.Contains(err.Error(), canary) {
		t.Error("error contains the value")
	}
}

func TestFilesAtRest(t *testing.T) {
	state := t.TempDir()
	s := openStore(t, state)
	if err := s.Set("openai", canary); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("other", canary+"-2"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(state, "secrets")
	for p, want := range map[string]os.FileMode{
		dir:                                0o700 | os.ModeDir,
		filepath.Join(dir, "key"):          0o600,
		filepath.Join(dir, "secrets.json"): 0o600,
	} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), want)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "key")); st.Size() != 32 {
		t.Errorf("key is %d bytes", st.Size())
	}
	// The raw file is what we promise: version + name -> {nonce, ciphertext}.
	raw, err := os.ReadFile(filepath.Join(dir, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int
		Secrets map[string]map[string][]byte
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	e := f.Secrets["openai"]
	if f.Version != 1 || len(e["nonce"]) != 12 || len(e["ciphertext"]) != len(canary)+16 {
		t.Errorf("unexpected layout: %s", raw)
	}
	// No file anywhere under the state dir holds the plaintext.
	err = filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(canary)) || bytes.Contains(b, []byte("CANARY")) {
			t.Errorf("%s contains the plaintext", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// editFile rewrites secrets.json through fn on its decoded form.
func editFile(t *testing.T, state string, fn func(m map[string]sealed)) {
	t.Helper()
	p := filepath.Join(state, "secrets", "secrets.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var f fileData
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	fn(f.Secrets)
	out, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTampering(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(m map[string]sealed)
		failed []string // secrets that must no longer decrypt
	}{
		{"flipped ciphertext bit", func(m map[string]sealed) {
			m["a"].Ciphertext[0] ^= 1
		}, []string{"a"}},
		{"flipped tag bit", func(m map[string]sealed) {
			c := m["a"].Ciphertext
			c[len(c)-1] ^= 0x80
		}, []string{"a"}},
		{"flipped nonce bit", func(m map[string]sealed) {
			m["a"].Nonce[3] ^= 1
		}, []string{"a"}},
		{"truncated ciphertext", func(m map[string]sealed) {
			e := m["a"]
			e.Ciphertext = e.Ciphertext[:4]
			m["a"] = e
		}, []string{"a"}},
		{"swapped entries", func(m map[string]sealed) {
			m["a"], m["b"] = m["b"], m["a"]
		}, []string{"a", "b"}},
		{"entry copied to another name", func(m map[string]sealed) {
			m["b"] = m["a"]
		}, []string{"b"}},
		{"short nonce", func(m map[string]sealed) {
			e := m["a"]
			e.Nonce = e.Nonce[:8]
			m["a"] = e
		}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			s := openStore(t, state)
			if err := s.Set("a", canary+"-a"); err != nil {
				t.Fatal(err)
			}
			if err := s.Set("b", canary+"-b"); err != nil {
				t.Fatal(err)
			}
			editFile(t, state, tt.edit)
			for _, name := range tt.failed {
				v, err := s.Secret(context.Background(), name) // the store reloads the changed file
				if err == nil {
					t.Fatalf("%s decrypted to %q after tampering", name, v)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) || strings.Contains(err.Error(), canary) {
					t.Errorf("error %q: want the name, never the value", err)
				}
			}
		})
	}
}

func TestWrongKey(t *testing.T) {
	state := t.TempDir()
	s := openStore(t, state)
	if err := s.Set("a", canary); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	openStore(t, other)
	// Replace the key with another store's key.
	k, err := os.ReadFile(filepath.Join(other, "secrets", "key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "secrets", "key"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, state)
	if _, err := s2.Secret(context.Background(), "a"); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
		t.Errorf("wrong key: err = %v", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name    string
		mangle  func(t *testing.T, dir string)
		wantErr string
	}{
		{"group readable key", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "key"), 0o640)
		}, "chmod 600"},
		{"other readable key", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "key"), 0o604)
		}, "group or others"},
		{"short key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "key"), []byte("short"), 0o600)
		}, "not 32 bytes"},
		{"long key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "key"), make([]byte, 33), 0o600)
		}, "not 32 bytes"},
		{"corrupt secrets file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "secrets.json"), []byte("{not json"), 0o600)
		}, "secrets.json is corrupt"},
		{"bad name in file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "secrets.json"), []byte(`{"version":1,"secrets":{"a/b":{"nonce":"","ciphertext":""}}}`), 0o600)
		}, "invalid secret name"},
		{"future version", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "secrets.json"), []byte(`{"version":9,"secrets":{}}`), 0o600)
		}, "unsupported version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			s := openStore(t, state)
			if err := s.Set("a", "v"); err != nil {
				t.Fatal(err)
			}
			tt.mangle(t, filepath.Join(state, "secrets"))
			_, err := Open(state)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open: err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestKeyCreatedOnce(t *testing.T) {
	state := t.TempDir()
	openStore(t, state)
	k1, _ := os.ReadFile(filepath.Join(state, "secrets", "key"))
	openStore(t, state)
	k2, _ := os.ReadFile(filepath.Join(state, "secrets", "key"))
	if !bytes.Equal(k1, k2) {
		t.Fatal("key regenerated on second open")
	}
	// Concurrent first opens agree on one key.
	state = t.TempDir()
	var wg sync.WaitGroup
	stores := make([]*Store, 8)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(state)
			if err != nil {
				t.Error(err)
			}
			stores[i] = s
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := stores[0].Set("x", canary); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if v, err := s.Secret(context.Background(), "x"); err != nil || v != canary {
			t.Errorf("store %d: %v", i, err)
		}
	}
}

func TestReloadAndConcurrentWriters(t *testing.T) {
	state := t.TempDir()
	reader := openStore(t, state)
	// Separate Store values stand in for separate processes (`cagent secret
	// set` while `cagent up` runs): each opens its own lock file description.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(state)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range 10 {
				if err := s.Set(fmt.Sprintf("w%d-%d", w, i), fmt.Sprint(w*100+i)); err != nil {
					t.Error(err)
				}
				reader.Secret(context.Background(), "w0-0")
			}
		}()
	}
	wg.Wait()
	names, err := reader.Names()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 40 {
		t.Fatalf("%d secrets after 40 concurrent sets (lost updates)", len(names))
	}
	if v, err := reader.Secret(context.Background(), "w3-9"); err != nil || v != "309" {
		t.Errorf("w3-9 = %q, %v", v, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"secrets":{"a":{"nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AA=="}}}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"secrets":{"../x":{}}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decode(data)
		if err != nil {
			return
		}
		if m == nil {
			t.Fatal("nil map without error")
		}
		for name := range m {
			if ValidName(name) != nil {
				t.Fatalf("invalid name %q accepted", name)
			}
		}
	})
}
