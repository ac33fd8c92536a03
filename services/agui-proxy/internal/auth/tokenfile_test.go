package auth_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ambient-code/control-plane/services/agui-proxy/internal/auth"
)

func TestTokenFileReload(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	accepts := func(f *auth.TokenFile, tok string) bool {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		_, err := f.Verify(t.Context(), req)
		return err == nil
	}
	write(tokenA + "\n")
	f, err := auth.NewTokenFile(path, discard())
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		content string // "" removes the file
		changed bool
		wantErr bool
		acceptA bool
		acceptB bool
	}{
		{name: "unchanged", content: tokenA + "\n", acceptA: true},
		{name: "rotated", content: tokenB + "\n", changed: true, acceptB: true},
		{name: "invalid keeps last good", content: "short\n", wantErr: true, acceptB: true},
		{name: "missing keeps last good", content: "", wantErr: true, acceptB: true},
		{name: "both", content: tokenA + "\n" + tokenB + "\n", changed: true, acceptA: true, acceptB: true},
	}
	for _, st := range steps {
		if st.content == "" {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		} else {
			write(st.content)
		}
		changed, err := f.Reload()
		if (err != nil) != st.wantErr || changed != st.changed {
			t.Fatalf("%s: Reload = %v, %v", st.name, changed, err)
		}
		if accepts(f, tokenA) != st.acceptA || accepts(f, tokenB) != st.acceptB {
			t.Fatalf("%s: accepts A %v B %v, want %v %v", st.name, accepts(f, tokenA), accepts(f, tokenB), st.acceptA, st.acceptB)
		}
	}
	if _, err := auth.NewTokenFile(filepath.Join(t.TempDir(), "none"), discard()); err == nil {
		t.Fatal("NewTokenFile of a missing file succeeded")
	}
}
