package keys_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cagent-dev/cagent/control/keys"
)

func TestKeyringSealOpen(t *testing.T) {
	kr, err := keys.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	id, sealed, err := kr.Seal([]byte("hunter2"), []byte("t1/name"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "hunter2") {
		t.Fatal("plaintext in ciphertext")
	}
	if _, id2, _ := kr.Seal([]byte("hunter2"), []byte("t1/name")); string(id2) == string(sealed) {
		t.Fatal("nonce reused")
	}
	if pt, err := kr.Open(id, sealed, []byte("t1/name")); err != nil || string(pt) != "hunter2" {
		t.Fatalf("open: %q %v", pt, err)
	}
	// Bound to its owner: another tenant or name does not open it.
	if _, err := kr.Open(id, sealed, []byte("t2/name")); err == nil {
		t.Fatal("opened with another AAD")
	}
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	if _, err := kr.Open(id, tampered, []byte("t1/name")); err == nil {
		t.Fatal("opened a tampered value")
	}
	if _, err := kr.Open("nokey", sealed, nil); err == nil {
		t.Fatal("opened with an unknown key id")
	}
	if _, err := kr.Open(id, sealed[:5], nil); err == nil {
		t.Fatal("opened a short value")
	}
	// Rotation: old values still open, new ones use the new key.
	old := kr.Active()
	nid, err := kr.Generate()
	if err != nil || nid == old || kr.Active() != nid {
		t.Fatalf("generate: %s %v", nid, err)
	}
	if _, err := kr.Open(old, sealed, []byte("t1/name")); err != nil {
		t.Fatal(err)
	}
	round, err := keys.ParseKeyring(kr.String())
	if err != nil || round.Active() != nid || !round.Has(old) {
		t.Fatalf("round trip: %v", err)
	}
	if only := kr.OnlyActive(); only.Has(old) || !only.Has(nid) {
		t.Fatal("OnlyActive kept the old key")
	}
}

func TestParseKeyringErrors(t *testing.T) {
	for _, s := range []string{"", "# only a comment", "k1", "k1 notbase64!", "k1 AAAA", "K1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"k1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,k1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="} {
		if _, err := keys.ParseKeyring(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	kr, err := keys.ParseKeyring("k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=, k2 AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	if err != nil || kr.Active() != "k2" || !kr.Has("k1") {
		t.Fatalf("%v", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "token.key")
	k1, err := keys.LoadOrCreate(p, "")
	if err != nil || len(k1) != 32 {
		t.Fatalf("%v", err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	k2, err := keys.LoadOrCreate(p, "")
	if err != nil || string(k1) != string(k2) {
		t.Fatal("second load differs")
	}
	os.WriteFile(p, []byte("c2hvcnQ=\n"), 0o600)
	if _, err := keys.LoadOrCreate(p, ""); err == nil {
		t.Fatal("short key accepted")
	}
	kp := filepath.Join(dir, "ring")
	kr, fromEnv, err := keys.LoadOrCreateKeyring(kp, "CAGENT_TEST_UNSET_VAR")
	if err != nil || fromEnv {
		t.Fatal(err)
	}
	kr.Generate()
	if err := keys.WriteKeyring(kp, kr); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(kp)
	back, _, err := keys.LoadOrCreateKeyring(kp, "")
	if err != nil || back.Active() != kr.Active() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", err, fi.Mode())
	}
}

func TestParseToken(t *testing.T) {
	h, _ := keys.NewHasher(make([]byte, 32))
	tok, _ := h.NewToken()
	if len(tok.Plain) < len(keys.TokenPrefix)+24+1+43 {
		t.Fatalf("short token %q", tok.Plain)
	}
	for _, bad := range []string{"", "cagent_", tok.Plain[len(keys.TokenPrefix):], tok.Plain + "A", "cagent_zz" + tok.Plain[9:], strings.Replace(tok.Plain, "_", ":", 2)} {
		if _, _, ok := keys.ParseToken(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
	a, _ := h.NewToken()
	if a.Plain == tok.Plain || a.Salt == tok.Salt || a.Hash == tok.Hash {
		t.Fatal("tokens repeat")
	}
}
