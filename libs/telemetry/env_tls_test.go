package telemetry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/envconfig"
)

// writeKeyPair writes a self-signed PEM certificate and its PEM key into
// dir under name+".crt" and name+".key" and returns their paths.
func writeKeyPair(t *testing.T, dir, name string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// TestLoadEnvTLSFiles: the OTLP exporters' TLS files are refused at start
// when the SDK would silently not use them. The SDK drops a CA file that
// holds no PEM certificate (the exporter then trusts the system roots), a
// client certificate without its key or a key without its certificate (it
// reads them as a pair per level), and a pair that does not match (the
// exporter connects without a client certificate): each showed only as
// failed exports, although checkSDKEnv exists to refuse such values and
// used to check no more than that each file existed.
func TestLoadEnvTLSFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeKeyPair(t, dir, "a")
	otherCert, _ := writeKeyPair(t, dir, "b")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		badVars []string
	}{
		{name: "valid files", env: map[string]string{
			"OTEL_EXPORTER_OTLP_CERTIFICATE": cert, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": cert, "OTEL_EXPORTER_OTLP_CLIENT_KEY": key,
			"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": otherCert,
		}},
		{name: "CA file without a certificate", env: map[string]string{"OTEL_EXPORTER_OTLP_CERTIFICATE": notPEM, "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE": key},
			badVars: []string{"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"}},
		{name: "client certificate without its key", env: map[string]string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": cert},
			badVars: []string{"OTEL_EXPORTER_OTLP_CLIENT_KEY"}},
		{name: "client key without its certificate", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": key},
			badVars: []string{"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE"}},
		// The SDK pairs the variables of one level only: a per-signal
		// certificate does not take the general key.
		{name: "pair split across levels", env: map[string]string{"OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": cert, "OTEL_EXPORTER_OTLP_CLIENT_KEY": key},
			badVars: []string{"OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"}},
		{name: "key of another certificate", env: map[string]string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": otherCert, "OTEL_EXPORTER_OTLP_CLIENT_KEY": key},
			badVars: []string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"}},
		{name: "client certificate not PEM", env: map[string]string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": notPEM, "OTEL_EXPORTER_OTLP_CLIENT_KEY": key},
			badVars: []string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			LoadEnv(l)
			err := l.Err()
			if len(tc.badVars) == 0 {
				if err != nil {
					t.Fatalf("LoadEnv error = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, envconfig.ErrInvalid) {
				t.Fatalf("LoadEnv error = %v, want ErrInvalid naming %v", err, tc.badVars)
			}
			for _, v := range tc.badVars {
				if !strings.Contains(err.Error(), v+":") {
					t.Errorf("error %q does not name %s", err, v)
				}
			}
		})
	}
}
