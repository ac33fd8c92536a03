package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	garbage := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(garbage, []byte("not: [a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // variable names the error must mention
		check   func(t *testing.T, c Config)
	}{
		{name: "token required", env: map[string]string{}, wantErr: []string{apiclient.EnvAPIToken}},
		{name: "defaults", env: map[string]string{apiclient.EnvAPIToken: "t", group.EnvMemberID: "m1"}, check: func(t *testing.T, c Config) {
			if c.API.Addr != apiclient.DefaultGRPCAddr || c.Group.Group != DefaultGroup || c.Group.Partitions != group.DefaultPartitions || c.Group.MaxDeliver != group.DefaultMaxDeliver || c.SessionSelector.String() != "all" || len(c.RoleAllowList) != 3 || c.Namespace != DefaultNamespace {
				t.Errorf("defaults not applied: %+v", c)
			}
		}},
		{name: "namespace deny-list", env: map[string]string{apiclient.EnvAPIToken: "t", EnvNamespaceDeny: "kube-*, ambient"}, check: func(t *testing.T, c Config) {
			if !slices.Equal(c.NamespaceDenyList, []string{"kube-*", "ambient"}) {
				t.Errorf("deny-list = %v", c.NamespaceDenyList)
			}
		}},
		{name: "default deny-list", env: map[string]string{apiclient.EnvAPIToken: "t"}, check: func(t *testing.T, c Config) {
			if !slices.Equal(c.NamespaceDenyList, []string{"kube-*", "default", "openshift*"}) {
				t.Errorf("deny-list = %v", c.NamespaceDenyList)
			}
		}},
		{name: "canary slice", env: map[string]string{apiclient.EnvAPIToken: "t", group.EnvMemberPartitions: "0, 3-4"}, check: func(t *testing.T, c Config) {
			if !slices.Equal(c.Group.MemberPartitions, []int{0, 3, 4}) || c.Group.Member == "" {
				t.Errorf("member partitions = %v id=%q", c.Group.MemberPartitions, c.Group.Member)
			}
		}},
		{name: "objects bucket of the stream's informer", env: map[string]string{apiclient.EnvAPIToken: "t"}, check: func(t *testing.T, c Config) {
			if c.ObjectsBucket != bus.BucketObjects {
				t.Errorf("live stream: objects bucket %q, want %q", c.ObjectsBucket, bus.BucketObjects)
			}
		}},
		{name: "objects bucket of a shadow informer", env: map[string]string{apiclient.EnvAPIToken: "t",
			group.EnvStream: events.ShadowStreamName, group.EnvSubjectPrefix: events.ShadowSubjectPrefix}, check: func(t *testing.T, c Config) {
			// What the shadow informer writes (its docs name it).
			if want := "ambient-objects-ambient-events-shadow"; c.ObjectsBucket != want {
				t.Errorf("shadow stream: objects bucket %q, want %q", c.ObjectsBucket, want)
			}
		}},
		{name: "objects bucket set", env: map[string]string{apiclient.EnvAPIToken: "t",
			group.EnvStream: events.ShadowStreamName, group.EnvSubjectPrefix: events.ShadowSubjectPrefix, EnvObjectsBucket: "mine"}, check: func(t *testing.T, c Config) {
			if c.ObjectsBucket != "mine" {
				t.Errorf("objects bucket %q, want the one set", c.ObjectsBucket)
			}
		}},
		{name: "bad values named", env: map[string]string{
			apiclient.EnvAPIToken: "t", EnvSessionSelector: "some", group.EnvMemberPartitions: "99", group.EnvMemberID: "a.b",
			EnvRoleAllowList: "Not A Role", service.EnvLogLevel: "loud", EnvNamespace: "Bad_NS", EnvNamespaceDeny: "kube-[",
		}, wantErr: []string{EnvSessionSelector, group.EnvMemberPartitions, group.EnvMemberID, EnvRoleAllowList, service.EnvLogLevel, EnvNamespace, EnvNamespaceDeny}},
		// Found at load, not when the clients are built: the error names
		// the variable.
		{name: "kubeconfig that is none", env: map[string]string{apiclient.EnvAPIToken: "t", EnvKubeconfig: garbage}, wantErr: []string{EnvKubeconfig + ": want a kubeconfig"}},
		{name: "the leases bucket", env: map[string]string{apiclient.EnvAPIToken: "t", EnvObjectsBucket: "ambient-leases"}, wantErr: []string{EnvObjectsBucket + ": want an objects bucket"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(envconfig.Map(tc.env))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("Load succeeded, want an error")
				}
				var ve *envconfig.VarError
				if !errors.As(err, &ve) {
					t.Errorf("error %v has no *envconfig.VarError", err)
				}
				for _, name := range tc.wantErr {
					if !strings.Contains(err.Error(), name) {
						t.Errorf("error does not name %s: %v", name, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
