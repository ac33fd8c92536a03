package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/service"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	base := func(kv ...string) map[string]string {
		m := map[string]string{apiclient.EnvAPIToken: "secret-token", EnvInstanceID: "informer-0"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // variables the error must name
		check   func(t *testing.T, c Config)
	}{
		{
			name: "defaults",
			env:  base(),
			check: func(t *testing.T, c Config) {
				if c.API.Addr != apiclient.DefaultGRPCAddr || c.NATS.URL != bus.DefaultURL || c.LeaseTTL != DefaultLeaseTTL ||
					c.ResyncPeriod != DefaultResyncPeriod || c.Stream != events.StreamName || c.SubjectPrefix != events.SubjectPrefix ||
					c.ObjectsBucket != "ambient-objects" || c.LeaseKey != DefaultLeaseKey || c.Shadow() || c.Workers != DefaultWorkers ||
					c.AuditInterval != time.Minute || c.UnsyncedStepDown != DefaultUnsyncedStepDown {
					t.Errorf("defaults: %+v", c)
				}
			},
		},
		{
			name: "shadow derives its own bucket and lease",
			env:  base(EnvSubjectPrefix, events.ShadowSubjectPrefix, EnvEventsStream, events.ShadowStreamName),
			check: func(t *testing.T, c Config) {
				if !c.Shadow() || c.ObjectsBucket != "ambient-objects-ambient-events-shadow" || c.LeaseKey != "informer-ambient-events-shadow" {
					t.Errorf("shadow: bucket %q lease %q", c.ObjectsBucket, c.LeaseKey)
				}
			},
		},
		{
			name: "durations",
			env:  base(EnvLeaseTTL, "3s", EnvResyncPeriod, "0"),
			check: func(t *testing.T, c Config) {
				if c.LeaseTTL != 3*time.Second || c.ResyncPeriod != 0 {
					t.Errorf("lease %v resync %v", c.LeaseTTL, c.ResyncPeriod)
				}
			},
		},
		{name: "token required", env: map[string]string{}, wantErr: []string{apiclient.EnvAPIToken}},
		{name: "shadow prefix into live stream", env: base(EnvSubjectPrefix, "ambient.shadow"), wantErr: []string{EnvSubjectPrefix}},
		{name: "live prefix into shadow stream", env: base(EnvEventsStream, "OTHER"), wantErr: []string{EnvSubjectPrefix}},
		{name: "shadow reusing live bucket", env: base(EnvSubjectPrefix, "s.e", EnvEventsStream, "S", EnvObjectsBucket, "ambient-objects"), wantErr: []string{EnvObjectsBucket}},
		{name: "bad values", env: base(EnvLeaseTTL, "10", apiclient.EnvGRPCUseTLS, "maybe", bus.EnvNATSURL, "http://x", service.EnvLogLevel, "loud", EnvWorkers, "0"),
			wantErr: []string{EnvLeaseTTL, apiclient.EnvGRPCUseTLS, bus.EnvNATSURL, service.EnvLogLevel, EnvWorkers}},
		{name: "short lease", env: base(EnvLeaseTTL, "100ms"), wantErr: []string{EnvLeaseTTL}},
		{name: "backoff order", env: base(EnvBackoffInitial, "10s", EnvBackoffMax, "1s"), wantErr: []string{EnvBackoffMax}},
		{name: "negative audit interval", env: base(EnvAuditInterval, "-1s"), wantErr: []string{EnvAuditInterval}},
		{name: "missing CA file", env: base(apiclient.EnvGRPCCAFile, "/does/not/exist"), wantErr: []string{apiclient.EnvGRPCCAFile}},
		{name: "backoff initial zero", env: base(EnvBackoffInitial, "0s"), wantErr: []string{EnvBackoffInitial}},
		// Names and subjects of the control plane's own streams and buckets:
		// the informer would create its stream or bucket over them.
		{name: "the dead-letter stream", env: base(EnvEventsStream, "AMBIENT_DLQ", EnvSubjectPrefix, "zz.shadow"), wantErr: []string{EnvEventsStream}},
		{name: "a KV bucket's stream", env: base(EnvEventsStream, "KV_x", EnvSubjectPrefix, "zz.shadow"), wantErr: []string{EnvEventsStream}},
		{name: "a live work queue", env: base(EnvEventsStream, "AMBIENT_EVENTS-kube-reconciler", EnvSubjectPrefix, "zz.shadow"), wantErr: []string{EnvEventsStream}},
		{name: "the leases bucket", env: base(EnvObjectsBucket, "ambient-leases"), wantErr: []string{EnvObjectsBucket}},
		// runner-manager's heartbeats: its TTL would expire cached objects.
		{name: "the runner members bucket", env: base(EnvObjectsBucket, "ambient-runner-members"), wantErr: []string{EnvObjectsBucket}},
		{name: "a members bucket", env: base(EnvObjectsBucket, "ambient-members-AMBIENT_EVENTS-svc"), wantErr: []string{EnvObjectsBucket}},
		{name: "shadow prefix under the live one", env: base(EnvEventsStream, "S", EnvSubjectPrefix, "ambient.events.x"), wantErr: []string{EnvSubjectPrefix}},
		{name: "shadow prefix above the live one", env: base(EnvEventsStream, "S", EnvSubjectPrefix, "ambient"), wantErr: []string{EnvSubjectPrefix}},
		{name: "shadow prefix of the dead letters", env: base(EnvEventsStream, "S", EnvSubjectPrefix, "ambient.dlq"), wantErr: []string{EnvSubjectPrefix}},
		{name: "intervals of nanoseconds", env: base(EnvResyncPeriod, "1ns", EnvAuditInterval, "1ns"), wantErr: []string{EnvResyncPeriod, EnvAuditInterval}},
		{name: "step-down shorter than the backoff cap", env: base(EnvBackoffMax, "1m", EnvUnsyncedStepDown, "30s"), wantErr: []string{EnvUnsyncedStepDown}},
		{name: "step-down under a second", env: base(EnvBackoffInitial, "1ms", EnvBackoffMax, "1ms", EnvUnsyncedStepDown, "500ms"), wantErr: []string{EnvUnsyncedStepDown}},
		{
			name: "step-down off",
			env:  base(EnvUnsyncedStepDown, "0"),
			check: func(t *testing.T, c Config) {
				if c.UnsyncedStepDown != 0 {
					t.Errorf("step-down %v, want 0", c.UnsyncedStepDown)
				}
			},
		},
		{name: "instance id with a space", env: base(EnvInstanceID, "a b"), wantErr: []string{EnvInstanceID}},
		{name: "stream max age under the server's minimum", env: base(EnvStreamMaxAge, "50ms"), wantErr: []string{EnvStreamMaxAge}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(envconfig.Map(tc.env))
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, c)
				return
			}
			var ve *envconfig.VarError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a VarError", err)
			}
			for _, name := range tc.wantErr {
				// Named as the variable at fault, not only in another's
				// message.
				if !strings.Contains(err.Error(), name+": ") && !strings.Contains(err.Error(), name+"/") {
					t.Errorf("error does not name %s: %v", name, err)
				}
			}
			if strings.Contains(err.Error(), "secret-token") {
				t.Error("error leaks the token")
			}
		})
	}
}

func TestDefaultInstanceIDIsUnique(t *testing.T) {
	t.Parallel()
	a, err := Load(envconfig.Map(map[string]string{apiclient.EnvAPIToken: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(envconfig.Map(map[string]string{apiclient.EnvAPIToken: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if a.InstanceID == "" || a.InstanceID == b.InstanceID {
		t.Fatalf("instance ids %q and %q: want distinct, non-empty", a.InstanceID, b.InstanceID)
	}
}
