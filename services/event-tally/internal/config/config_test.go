package config

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/group"
	"github.com/ambient-code/control-plane/libs/service"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		env       map[string]string
		wantErr   []string // variable names the error must name
		wantParts []int
	}{
		{name: "defaults", env: map[string]string{group.EnvMemberID: "m-0"}},
		{name: "canary slice list", env: map[string]string{group.EnvMemberID: "c", group.EnvMemberPartitions: "1,3"}, wantParts: []int{1, 3}},
		{name: "canary slice range", env: map[string]string{group.EnvMemberID: "c", group.EnvMemberPartitions: "0-2"}, wantParts: []int{0, 1, 2}},
		{name: "slice out of range", env: map[string]string{group.EnvMemberID: "c", group.EnvMemberPartitions: "16"}, wantErr: []string{group.EnvMemberPartitions}},
		{name: "bad names", env: map[string]string{group.EnvMemberID: "a b", group.EnvGroup: "x.y", service.EnvLogLevel: "loud"}, wantErr: []string{group.EnvMemberID, group.EnvGroup, service.EnvLogLevel}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(envconfig.Map(tc.env))
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(c.Group.MemberPartitions, tc.wantParts) {
					t.Errorf("member partitions = %v, want %v", c.Group.MemberPartitions, tc.wantParts)
				}
				return
			}
			var ve *envconfig.VarError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a VarError", err)
			}
			for _, name := range tc.wantErr {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %s", err, name)
				}
			}
		})
	}
}
