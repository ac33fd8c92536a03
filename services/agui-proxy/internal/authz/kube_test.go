package authz

import (
	"errors"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestNewKubeInstance: the kube authority needs its installation, a
// non-empty label value, as kube-reconciler does: with none, every project
// namespace would be another installation's and every session denied. The
// client is real but never dialed (the constructor asks nothing).
func TestNewKubeInstance(t *testing.T) {
	t.Parallel()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{CacheTTL: time.Second, CacheSize: 10}
	for _, bad := range []string{"", "blue/green", "-blue"} {
		if _, err := NewKube(KubeConfig{Client: cs, Instance: bad}, cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("instance %q: %v, want ErrInvalidConfig", bad, err)
		}
	}
	if _, err := NewKube(KubeConfig{Client: cs, Instance: "acp-green"}, cfg); err != nil {
		t.Fatalf("instance acp-green: %v", err)
	}
}
