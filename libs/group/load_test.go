package group_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	eventsv1 "github.com/ambient-code/control-plane/proto/ambient/events/v1"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/events"
	"github.com/ambient-code/control-plane/libs/group"
)

// TestLoadConfig: every consumer reads the same variables with the same
// ranges, keeps its own defaults, and anything LoadConfig accepts Run
// accepts too.
func TestLoadConfig(t *testing.T) {
	t.Parallel()
	sessions := []eventsv1.Resource{eventsv1.Resource_RESOURCE_SESSIONS}
	tests := []struct {
		name    string
		def     group.Config
		env     map[string]string
		want    group.Config // compared when wantErr is empty
		wantErr []string     // variables the error must name
	}{
		{
			name: "package defaults",
			def:  group.Config{Group: "event-tally"},
			env:  map[string]string{group.EnvMemberID: "m-0"},
			want: group.Config{Stream: events.StreamName, SubjectPrefix: events.SubjectPrefix, Group: "event-tally", Member: "m-0",
				Partitions: group.DefaultPartitions, MaxDeliver: group.DefaultMaxDeliver, AckWait: group.DefaultAckWait, MemberTTL: group.DefaultMemberTTL, MaxInFlight: group.DefaultMaxInFlight,
				NotReadyAfter: group.DefaultNotReadyAfter},
		},
		{
			name: "service defaults and fields no variable sets are kept",
			def:  group.Config{Group: "runner-manager", AckWait: 30 * time.Second, Resources: sessions},
			env:  map[string]string{group.EnvMemberID: "m-0"},
			want: group.Config{Stream: events.StreamName, SubjectPrefix: events.SubjectPrefix, Group: "runner-manager", Member: "m-0", Resources: sessions,
				Partitions: group.DefaultPartitions, MaxDeliver: group.DefaultMaxDeliver, AckWait: 30 * time.Second, MemberTTL: group.DefaultMemberTTL, MaxInFlight: group.DefaultMaxInFlight,
				NotReadyAfter: group.DefaultNotReadyAfter},
		},
		{
			name: "every variable",
			def:  group.Config{Group: "g"},
			env: map[string]string{
				group.EnvSubjectPrefix: events.ShadowSubjectPrefix, group.EnvStream: events.ShadowStreamName, group.EnvGroup: "canary",
				group.EnvMemberID: "c-1", group.EnvPartitions: "8", group.EnvMemberPartitions: "0-1,5", group.EnvMaxDeliver: "1000",
				group.EnvAckWait: "1s", group.EnvMemberTTL: "300ms", group.EnvReplicas: "3",
				group.EnvMaxInFlight: "1", group.EnvNotReadyAfter: "30s",
			},
			want: group.Config{Stream: events.ShadowStreamName, SubjectPrefix: events.ShadowSubjectPrefix, Group: "canary", Member: "c-1",
				Partitions: 8, MemberPartitions: []int{0, 1, 5}, MaxDeliver: 1000, AckWait: time.Second, MemberTTL: 300 * time.Millisecond, Replicas: 3, MaxInFlight: 1,
				NotReadyAfter: 30 * time.Second},
		},
		{
			name:    "out of range",
			def:     group.Config{Group: "g"},
			env:     map[string]string{group.EnvMemberID: "m", group.EnvPartitions: "1025", group.EnvMaxDeliver: "1001", group.EnvAckWait: "999ms", group.EnvMemberTTL: "299ms", group.EnvReplicas: "6", group.EnvMaxInFlight: "4097", group.EnvNotReadyAfter: "0s"},
			wantErr: []string{group.EnvPartitions, group.EnvMaxDeliver, group.EnvAckWait, group.EnvMemberTTL, group.EnvReplicas, group.EnvMaxInFlight, group.EnvNotReadyAfter},
		},
		{
			name:    "zero tries",
			def:     group.Config{Group: "g"},
			env:     map[string]string{group.EnvMemberID: "m", group.EnvMaxDeliver: "0", group.EnvReplicas: "0", group.EnvMaxInFlight: "0"},
			wantErr: []string{group.EnvMaxDeliver, group.EnvReplicas, group.EnvMaxInFlight},
		},
		{
			name:    "bad names",
			def:     group.Config{Group: "g"},
			env:     map[string]string{group.EnvMemberID: "a b", group.EnvGroup: "x.y", group.EnvStream: "s*", group.EnvSubjectPrefix: "a..b"},
			wantErr: []string{group.EnvMemberID, group.EnvGroup, group.EnvStream, group.EnvSubjectPrefix},
		},
		{
			name:    "the dead-letter stream",
			def:     group.Config{Group: "g"},
			env:     map[string]string{group.EnvMemberID: "m", group.EnvStream: "AMBIENT_DLQ", group.EnvSubjectPrefix: "zz.shadow"},
			wantErr: []string{group.EnvStream},
		},
		{
			// The events carry the live prefix: this member would count
			// nothing, and be ready.
			name:    "another prefix on the live stream",
			def:     group.Config{Group: "g"},
			env:     map[string]string{group.EnvMemberID: "m", group.EnvSubjectPrefix: "x.y"},
			wantErr: []string{group.EnvSubjectPrefix},
		},
		{
			name:    "shadow prefix overlapping the live one",
			def:     group.Config{Group: "g"},
			env:     map[string]string{group.EnvMemberID: "m", group.EnvStream: "S", group.EnvSubjectPrefix: "ambient.events.s"},
			wantErr: []string{group.EnvSubjectPrefix},
		},
		{
			name:    "member partition outside partitions",
			def:     group.Config{Group: "g"},
			env:     map[string]string{group.EnvMemberID: "m", group.EnvPartitions: "4", group.EnvMemberPartitions: "4"},
			wantErr: []string{group.EnvMemberPartitions},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := envconfig.New(envconfig.Map(tc.env))
			got := group.LoadConfig(l, tc.def)
			err := l.Err()
			if len(tc.wantErr) > 0 {
				var ve *envconfig.VarError
				if !errors.As(err, &ve) {
					t.Fatalf("err = %v, want VarErrors naming %v", err, tc.wantErr)
				}
				for _, name := range tc.wantErr {
					if !strings.Contains(err.Error(), name+":") {
						t.Errorf("error %q does not name %s", err, name)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("config differs (-want +got):\n%s", diff)
			}
			if _, err := got.WithDefaults(); err != nil {
				t.Errorf("Run would refuse what LoadConfig accepted: %v", err)
			}
		})
	}
}
