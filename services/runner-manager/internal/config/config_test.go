package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/bus"
	"github.com/ambient-code/control-plane/libs/envconfig"
	"github.com/ambient-code/control-plane/libs/group"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	base := map[string]string{apiclient.EnvAPIToken: "tok", "HOME": "/home/u", group.EnvMemberID: "rm-0"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // variable names the error must mention
		check   func(t *testing.T, c Config)
	}{
		{"defaults", base, nil, func(t *testing.T, c Config) {
			if c.WorkspaceRoot != "/home/u/.ambient/workspaces" || !slices.Equal(c.RunnerCommand, []string{"python", "local_entry.py"}) ||
				c.PortLow != 9100 || c.PortHigh != 9199 || c.MaxSessions != 10 || c.MaxPerProject != 0 || c.StopGrace != 10*time.Second ||
				c.HealthInterval != 500*time.Millisecond || c.HealthAttempts != 30 || c.BossSpace != "default" ||
				c.AdvertiseHost != "127.0.0.1" || c.Selector.String() != "all" || c.LostPolicy != "restart" ||
				c.ResyncInterval != time.Minute || c.CheckInterval != 10*time.Second || c.PortReuseDelay != 30*time.Second ||
				c.Group.Group != "runner-manager" || c.Group.AckWait != 10*time.Second || c.Group.Member != "rm-0" || c.NATS.Name != "runner-manager/rm-0" {
				t.Fatalf("defaults = %+v", c)
			}
		}},
		{"per-project cap", with(EnvMaxPerProject, "3"), nil, func(t *testing.T, c Config) {
			if c.MaxPerProject != 3 {
				t.Fatalf("MaxPerProject = %d, want 3", c.MaxPerProject)
			}
		}},
		{"negative per-project cap", with(EnvMaxPerProject, "-1"), []string{EnvMaxPerProject}, nil},
		{"per-project cap not a number", with(EnvMaxPerProject, "two"), []string{EnvMaxPerProject}, nil},
		{"quoted command", with(EnvRunnerCommand, `python "my runner.py" --name 'a b'`), nil, func(t *testing.T, c Config) {
			if !slices.Equal(c.RunnerCommand, []string{"python", "my runner.py", "--name", "a b"}) {
				t.Fatalf("argv = %q", c.RunnerCommand)
			}
		}},
		{"relative paths resolved against the working directory", with(EnvRunnerCommand, `bin/demo-runner config_test.go --x 'a b'`), nil, func(t *testing.T, c Config) {
			wd, err := os.Getwd()
			if err != nil {
				t.Fatal(err)
			}
			// The runner runs in its workspace, where neither path would be found.
			if want := []string{filepath.Join(wd, "bin/demo-runner"), filepath.Join(wd, "config_test.go"), "--x", "a b"}; !slices.Equal(c.RunnerCommand, want) {
				t.Fatalf("argv = %q, want %q", c.RunnerCommand, want)
			}
		}},
		{"canary slice", with(group.EnvMemberPartitions, "1, 3-4"), nil, func(t *testing.T, c Config) {
			if !slices.Equal(c.Group.MemberPartitions, []int{1, 3, 4}) {
				t.Fatalf("partitions = %v", c.Group.MemberPartitions)
			}
		}},
		{"selection", with(EnvProjects, "a, b", EnvSessionLabel, "executor=local"), nil, func(t *testing.T, c Config) {
			if got := c.Selector.String(); got != "projects=a,b label=executor=local" {
				t.Fatalf("selector = %q", got)
			}
		}},
		{"extra env allow-list", with(EnvRunnerEnvAllow, "DEMO_HOST, HTTPS_PROXY,GOOGLE_*"), nil, func(t *testing.T, c Config) {
			if !slices.Equal(c.EnvAllow, []string{"DEMO_HOST", "HTTPS_PROXY", "GOOGLE_*"}) {
				t.Fatalf("EnvAllow = %q", c.EnvAllow)
			}
		}},
		{"boss url", with(EnvBossURL, "http://boss.example:8080/api"), nil, func(t *testing.T, c Config) {
			if c.BossURL != "http://boss.example:8080/api" {
				t.Fatalf("BossURL = %q", c.BossURL)
			}
		}},
		// Where the platform's runner sends its first prompt
		// (BACKEND_API_URL) and with what token (BOT_TOKEN): unset by
		// default, an absolute http(s) URL, a token file read at start and
		// trimmed; anything else stops the start naming the variable.
		{"backend url and bot token unset", base, nil, func(t *testing.T, c Config) {
			if c.BackendURL != "" || c.BotToken != "" {
				t.Fatalf("BackendURL %q BotToken %q, want both empty", c.BackendURL, c.BotToken.Reveal())
			}
		}},
		{"backend url and bot token file", with(EnvBackendURL, " http://agui-proxy:8080 ", EnvBotToken+envconfig.FileSuffix, tokenFile(t, " bot-secret \n")), nil, func(t *testing.T, c Config) {
			if c.BackendURL != "http://agui-proxy:8080" || c.BotToken.Reveal() != "bot-secret" {
				t.Fatalf("BackendURL %q BotToken %q", c.BackendURL, c.BotToken.Reveal())
			}
		}},
		{"backend url not http", with(EnvBackendURL, "ftp://agui-proxy"), []string{EnvBackendURL}, nil},
		{"backend url relative", with(EnvBackendURL, "/api"), []string{EnvBackendURL}, nil},
		{"bot token file missing", with(EnvBotToken+envconfig.FileSuffix, filepath.Join(t.TempDir(), "absent")), []string{EnvBotToken + envconfig.FileSuffix}, nil},
		{"bot token file empty", with(EnvBotToken+envconfig.FileSuffix, tokenFile(t, " \n")), []string{EnvBotToken + envconfig.FileSuffix}, nil},
		{"negative intervals", with(EnvResyncInterval, "-1s", EnvCheckInterval, "-5s"), []string{EnvResyncInterval, EnvCheckInterval}, nil},
		{"check disabled", with(EnvCheckInterval, "0"), nil, func(t *testing.T, c Config) {
			if c.CheckInterval != 0 {
				t.Fatalf("CheckInterval = %v", c.CheckInterval)
			}
		}},
		// A released runner port waits PORT_REUSE_DELAY before another
		// runner gets it (agui-proxy may still route the released
		// session's clients there); 0 turns that off.
		{"port reuse delay", with(EnvPortReuseDelay, "90s"), nil, func(t *testing.T, c Config) {
			if c.PortReuseDelay != 90*time.Second {
				t.Fatalf("PortReuseDelay = %v, want 1m30s", c.PortReuseDelay)
			}
		}},
		{"port reuse delay disabled", with(EnvPortReuseDelay, "0"), nil, func(t *testing.T, c Config) {
			if c.PortReuseDelay != 0 {
				t.Fatalf("PortReuseDelay = %v, want 0", c.PortReuseDelay)
			}
		}},
		{"negative port reuse delay", with(EnvPortReuseDelay, "-1s"), []string{EnvPortReuseDelay}, nil},
		{"port reuse delay without a unit", with(EnvPortReuseDelay, "60"), []string{EnvPortReuseDelay}, nil},
		{"port reuse delay not a duration", with(EnvPortReuseDelay, "soon"), []string{EnvPortReuseDelay}, nil},
		{"advertise ipv6 pod ip", with(EnvAdvertiseHost, "fd00:10:244::7"), nil, func(t *testing.T, c Config) {
			if c.AdvertiseHost != "fd00:10:244::7" {
				t.Fatalf("AdvertiseHost = %q", c.AdvertiseHost)
			}
		}},
		{"advertise host name", with(EnvAdvertiseHost, "rm-0.runner-manager.acp.svc.cluster.local"), nil, func(t *testing.T, c Config) {
			if c.AdvertiseHost != "rm-0.runner-manager.acp.svc.cluster.local" {
				t.Fatalf("AdvertiseHost = %q", c.AdvertiseHost)
			}
		}},
		// The proxy dials <host>:<port>: none of these can be dialled, and each
		// session would run with its route failing (502) for good.
		{"advertise host with a port", with(EnvAdvertiseHost, "10.0.0.5:9100"), []string{EnvAdvertiseHost}, nil},
		{"advertise unexpanded reference", with(EnvAdvertiseHost, "$(POD_IP)"), []string{EnvAdvertiseHost}, nil},
		{"advertise bracketed ipv6", with(EnvAdvertiseHost, "[fd00::7]"), []string{EnvAdvertiseHost}, nil},
		{"advertise host with a tab", with(EnvAdvertiseHost, "10.0.0.5\t"), []string{EnvAdvertiseHost}, nil},
		{"allow-everything refused", with(EnvRunnerEnvAllow, "DEMO_HOST,*"), []string{EnvRunnerEnvAllow}, nil},
		{"missing token", map[string]string{"HOME": "/h", group.EnvMemberID: "x"}, []string{apiclient.EnvAPIToken}, nil},
		{"many bad values", with(EnvPortRange, "9200-9100", EnvMaxSessions, "0", EnvRunnerCommand, `python "unterminated`,
			EnvLostPolicy, "maybe", group.EnvMemberPartitions, "99", EnvWorkspaceRoot, "relative/path", EnvSessionLabel, "novalue",
			EnvStopGrace, "-1s", bus.EnvNATSURL, "http://x", group.EnvMemberID, "bad.name", EnvRunnerEnvAllow, "A=B",
			EnvBossURL, "not a url at all"),
			[]string{EnvPortRange, EnvMaxSessions, EnvRunnerCommand, EnvLostPolicy, group.EnvMemberPartitions, EnvWorkspaceRoot,
				EnvSessionLabel, EnvStopGrace, bus.EnvNATSURL, group.EnvMemberID, EnvRunnerEnvAllow, EnvBossURL}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Load(envconfig.Map(tc.env), nil)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			var ve *envconfig.VarError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a VarError", err)
			}
			for _, name := range tc.wantErr {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error does not name %s:\n%v", name, err)
				}
			}
			if strings.Contains(err.Error(), "tok") {
				t.Error("error leaks the token")
			}
		})
	}
}

// tokenFile writes content to a new file and returns its path.
func tokenFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret") // "tok" in a path would fail the leak check
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEnvAllowEntry(t *testing.T) {
	t.Parallel()
	for _, e := range []string{"DEMO_HOST", "DEMO_*", "_X", "http_proxy", "A1"} {
		if !validEnvAllowEntry(e) {
			t.Errorf("validEnvAllowEntry(%q) = false, want true", e)
		}
	}
	for _, e := range []string{"", "*", "1A", "A-B", "A*B", "A=B", "A B", "**"} {
		if validEnvAllowEntry(e) {
			t.Errorf("validEnvAllowEntry(%q) = true, want false", e)
		}
	}
}
