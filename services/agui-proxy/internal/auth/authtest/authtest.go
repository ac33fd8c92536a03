// Package authtest serves a JWKS and signs JWTs for tests of JWT auth.
package authtest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer is a test token issuer with one RSA signing key, served as a JWKS.
type Issuer struct {
	// URL of the JWKS.
	URL string
	// Name is the iss claim; Audience the default aud claim.
	Name     string
	Audience string
	KeyID    string
	key      *rsa.PrivateKey
}

// NewIssuer starts a JWKS server for a fresh RSA key; it stops with t.
func NewIssuer(t testing.TB, audience string) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	iss := &Issuer{Name: "https://issuer.test", Audience: audience, KeyID: "test-key-1", key: key}
	jwks, err := json.Marshal(map[string][]map[string]string{"keys": {{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": iss.KeyID,
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
	}}})
	if err != nil {
		t.Fatalf("marshal jwks: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks) // test server; a failed write fails the test elsewhere
	}))
	t.Cleanup(srv.Close)
	iss.URL = srv.URL
	return iss
}

// Claims returns valid claims for subject, expiring in an hour.
func (i *Issuer) Claims(subject string) jwt.RegisteredClaims {
	now := time.Now()
	return jwt.RegisteredClaims{
		Issuer:    i.Name,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{i.Audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}
}

// UserClaims returns valid claims for subject with a "groups" claim,
// expiring in an hour.
func (i *Issuer) UserClaims(subject string, groups ...string) jwt.MapClaims {
	now := time.Now()
	gs := make([]any, len(groups))
	for k, g := range groups {
		gs[k] = g
	}
	return jwt.MapClaims{
		"iss": i.Name, "sub": subject, "aud": []any{i.Audience},
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "groups": gs,
	}
}

// Sign signs claims with the issuer's key (RS256, kid set).
func (i *Issuer) Sign(t testing.TB, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = i.KeyID
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// SignWithOtherKey signs claims with a key not in the JWKS but the same kid.
func (i *Issuer) SignWithOtherKey(t testing.TB, claims jwt.Claims) string {
	t.Helper()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = i.KeyID
	s, err := tok.SignedString(other)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}
