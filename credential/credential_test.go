package credential_test

import (
	"context"
	"errors"
	"github.com/cagent-dev/cagent/internal/testutil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cagent-dev/cagent/credential"
	"github.com/cagent-dev/cagent/policy"
	"github.com/cagent-dev/cagent/secretstore"
)

// canary is a distinctive value: finding it in an error string is a leak.
const canary = "sk-CANARY-41d9e2f0aa-never-print"

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestHeaderValue(t *testing.T) {
	dir := t.TempDir()
	state := t.TempDir()
	store, err := secretstore.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"openai": canary, "crlf": canary + "\r\nX-Evil: 1"} {
		if err := store.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"plain":     canary,
		"newline":   canary + "\n",
		"crlf":      canary + "\r\n",
		"empty":     "",
		"justnl":    "\n",
		"twolines":  canary + "\nsecond",
		"nul":       canary + "\x00",
		"large":     strings.Repeat("a", credential.MaxValueBytes+1),
		"maxlen":    strings.Repeat("a", credential.MaxValueBytes) + "\n",
		"tabinside": "a\tb",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	r := &credential.Resolver{
		LookupEnv: env(map[string]string{
			"KEY":   canary,
			"EMPTY": "",
			"CR":    canary + "\r",
			"LF":    canary + "\nX-Injected: yes",
			"NUL":   "a\x00" + canary,
			"DEL":   canary + "\x7f",
			"ESC":   "\x1b[31m" + canary,
		}),
		Secrets: store,
	}
	tests := []struct {
		name    string
		c       *policy.Credential
		want    string
		wantErr string
	}{
		{"env", &policy.Credential{Header: "Authorization", Format: "Bearer {value}", Env: "KEY"}, "Bearer " + canary, ""},
		{"default format", &policy.Credential{Header: "X-Api-Key", Env: "KEY"}, canary, ""},
		{"format twice", &policy.Credential{Header: "X", Format: "{value}:{value}", Env: "KEY"}, canary + ":" + canary, ""},
		{"env missing", &policy.Credential{Header: "X", Env: "OPENAI_API_KEY"}, "", "credential env:OPENAI_API_KEY is not set"},
		{"env empty", &policy.Credential{Header: "X", Env: "EMPTY"}, "", "credential env:EMPTY is empty"},
		{"env CR", &policy.Credential{Header: "X", Env: "CR"}, "", "control character"},
		{"env LF", &policy.Credential{Header: "X", Env: "LF"}, "", "control character"},
		{"env NUL", &policy.Credential{Header: "X", Env: "NUL"}, "", "control character"},
		{"env DEL", &policy.Credential{Header: "X", Env: "DEL"}, "", "control character"},
		{"env ESC", &policy.Credential{Header: "X", Env: "ESC"}, "", "control character"},
		{"file", &policy.Credential{Header: "X", Format: "token {value}", File: filepath.Join(dir, "plain")}, "token " + canary, ""},
		{"file newline trimmed", &policy.Credential{Header: "X", File: filepath.Join(dir, "newline")}, canary, ""},
		{"file CRLF trimmed", &policy.Credential{Header: "X", File: filepath.Join(dir, "crlf")}, canary, ""},
		{"file tab kept", &policy.Credential{Header: "X", File: filepath.Join(dir, "tabinside")}, "a\tb", ""},
		{"file at max length", &policy.Credential{Header: "X", File: filepath.Join(dir, "maxlen")}, strings.Repeat("a", credential.MaxValueBytes), ""},
		{"file empty", &policy.Credential{Header: "X", File: filepath.Join(dir, "empty")}, "", "is empty"},
		{"file only newline", &policy.Credential{Header: "X", File: filepath.Join(dir, "justnl")}, "", "is empty"},
		{"file two lines", &policy.Credential{Header: "X", File: filepath.Join(dir, "twolines")}, "", "control character"},
		{"file NUL", &policy.Credential{Header: "X", File: filepath.Join(dir, "nul")}, "", "control character"},
		{"file too large", &policy.Credential{Header: "X", File: filepath.Join(dir, "large")}, "", "longer than"},
		{"file missing", &policy.Credential{Header: "X", File: filepath.Join(dir, "nope")}, "", "credential file:" + filepath.Join(dir, "nope")},
		{"file is a directory", &policy.Credential{Header: "X", File: dir}, "", "not a regular file"},
		{"secret", &policy.Credential{Header: "X", Format: "Bearer {value}", Secret: "openai"}, "Bearer " + canary, ""},
		{"secret missing", &policy.Credential{Header: "X", Secret: "absent"}, "", "credential secret:absent"},
		{"secret with CRLF", &policy.Credential{Header: "X", Secret: "crlf"}, "", "control character"},
		{"nil", nil, "", "none configured"},
		{"no source", &policy.Credential{Header: "X"}, "", "none of env, file or secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.HeaderValue(context.Background(), tt.c)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("no error; got a value of %d bytes", len(got))
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %q, want containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "CANARY") || strings.Contains(err.Error(), canary[:12]) {
					t.Errorf("error leaks the value: %q", err)
				}
				if got != "" {
					t.Error("value returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %d bytes, want %d (%q...)", len(got), len(tt.want), got[:min(len(got), 10)])
			}
		})
	}
}

func TestSecretsNotConfigured(t *testing.T) {
	var r credential.Resolver
	_, err := r.HeaderValue(context.Background(), &policy.Credential{Header: "X", Secret: "openai"})
	if !errors.Is(err, credential.ErrNotConfigured) || !strings.Contains(err.Error(), "secret:openai") {
		t.Errorf("err = %v", err)
	}
}

func TestDefaultLookupEnv(t *testing.T) {
	t.Setenv("CAGENT_TEST_CRED", canary)
	var r credential.Resolver
	got, err := r.HeaderValue(context.Background(), &policy.Credential{Header: "X", Env: "CAGENT_TEST_CRED"})
	if err != nil || got != canary {
		t.Errorf("got %v", err)
	}
}

func TestFileRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	writeFile(t, p, "first\n")
	var r credential.Resolver
	c := &policy.Credential{Header: "X", File: p}
	if v, err := r.HeaderValue(context.Background(), c); err != nil || v != "first" {
		t.Fatalf("got %q, %v", v, err)
	}
	// Same size, new mtime: must be re-read.
	writeFile(t, p, "secnd\n")
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(p, future, future); err != nil {
		t.Fatal(err)
	}
	if v, err := r.HeaderValue(context.Background(), c); err != nil || v != "secnd" {
		t.Fatalf("after rotation got %q, %v", v, err)
	}
	// Replaced by rename (the usual way secrets are rotated).
	tmp := p + ".new"
	writeFile(t, tmp, "third-value")
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if v, err := r.HeaderValue(context.Background(), c); err != nil || v != "third-value" {
		t.Fatalf("after rename got %q, %v", v, err)
	}
	// Replaced by rename with the same size and mtime: the inode tells.
	st, _ := os.Stat(p)
	writeFile(t, tmp, "forth-value")
	os.Chtimes(tmp, st.ModTime(), st.ModTime())
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if v, err := r.HeaderValue(context.Background(), c); err != nil || v != "forth-value" {
		t.Fatalf("after same-size rename got %q, %v", v, err)
	}
	// Removed: an error, not the stale cached value.
	os.Remove(p)
	if v, err := r.HeaderValue(context.Background(), c); err == nil {
		t.Fatalf("removed file still yields %q", v)
	}
}

func TestFIFODoesNotHang(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		testutil.SkipUnlessCI(t, "mkfifo: %v", err)
	}
	var r credential.Resolver
	done := make(chan error, 1)
	go func() {
		_, err := r.HeaderValue(context.Background(), &policy.Credential{Header: "X", File: p})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the opener so the goroutine ends.
		if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		t.Fatal("reading a FIFO credential hangs")
	}
}

func TestConcurrentFileReads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	writeFile(t, p, canary)
	var r credential.Resolver
	c := &policy.Credential{Header: "X", Format: "Bearer {value}", File: p}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if v, err := r.HeaderValue(context.Background(), c); err != nil || v != "Bearer "+canary {
					t.Error("bad value", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestName(t *testing.T) {
	tests := []struct {
		c    *policy.Credential
		want string
	}{
		{nil, ""},
		{&policy.Credential{Env: "OPENAI_API_KEY"}, "env:OPENAI_API_KEY"},
		{&policy.Credential{File: "/run/key"}, "file:/run/key"},
		{&policy.Credential{Secret: "openai"}, "secret:openai"},
		{&policy.Credential{}, ""},
	}
	for _, tt := range tests {
		if got := credential.Name(tt.c); got != tt.want {
			t.Errorf("Name(%+v) = %q, want %q", tt.c, got, tt.want)
		}
	}
}

func FuzzHeaderValue(f *testing.F) {
	for _, s := range []string{canary, "a\r\nb", "\x00", "", "Bearer", "\t", "ünï"} {
		f.Add(s, "Bearer {value}")
	}
	f.Fuzz(func(t *testing.T, value, format string) {
		if !strings.Contains(format, "{value}") || strings.ContainsAny(format, "\r\n") {
			return // policy validation refuses such formats
		}
		r := &credential.Resolver{LookupEnv: env(map[string]string{"K": value})}
		got, err := r.HeaderValue(context.Background(), &policy.Credential{Header: "X", Format: format, Env: "K"})
		if err != nil {
			if len(value) >= 8 && strings.Contains(err.Error(), value) {
				t.Fatalf("error %q contains the value", err)
			}
			return
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			t.Fatalf("value with CR/LF/NUL accepted")
		}
		if value == "" {
			t.Fatal("empty value accepted")
		}
		if want := strings.ReplaceAll(format, "{value}", value); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
}
