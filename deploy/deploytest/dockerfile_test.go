package deploytest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// imageTargets are the final targets of deploy/Dockerfile: one image per
// service (and the in-memory API for the compose stack).
var imageTargets = []string{"informer", "kube-reconciler", "runner-manager", "agui-proxy", "event-tally", "memapi"}

// dockerfile is deploy/Dockerfile parsed by BuildKit's own frontend parser.
type dockerfile struct {
	stages  map[string]instructions.Stage
	order   []string
	metaArg map[string]string
}

func parseDockerfile(t *testing.T, rel string) dockerfile {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(readFile(t, rel)))
	if err != nil {
		t.Fatalf("parse %s: %v", rel, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s: parser warning: %s", rel, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		t.Errorf("%s:%v: lint %s: %s", rel, loc, rule, msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("instructions of %s: %v", rel, err)
	}
	df := dockerfile{stages: map[string]instructions.Stage{}, metaArg: map[string]string{}}
	for _, s := range stages {
		if s.Name == "" {
			t.Errorf("%s: unnamed stage %q", rel, s.SourceCode)
		}
		df.stages[s.Name] = s
		df.order = append(df.order, s.Name)
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			df.metaArg[kv.Key] = kv.ValueString()
		}
	}
	return df
}

// chain returns a stage and the stages it is built FROM, nearest first.
func (df dockerfile) chain(name string) []instructions.Stage {
	var out []instructions.Stage
	for s, ok := df.stages[name]; ok; s, ok = df.stages[s.BaseName] {
		out = append(out, s)
	}
	return out
}

// buildScript matches the RUN line of a build stage.
var buildScript = regexp.MustCompile(`deploy/build-go\.sh\s+(\S+)((?:\s+[a-z0-9-]+)+)\s*(?:&&|$)`)

// TestDockerfile checks deploy/Dockerfile: it parses and lints cleanly with
// BuildKit's parser, each service target runs the binary its build stage
// produced from a cmd directory that exists, on a non-root distroless base,
// with OCI labels; and `go list` resolves every package it builds (the same
// workspace module graph the build uses).
func TestDockerfile(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	df := parseDockerfile(t, "deploy/Dockerfile")

	base := df.metaArg["BASE_IMAGE"]
	if !strings.HasPrefix(base, "gcr.io/distroless/static") || !strings.HasSuffix(base, ":nonroot") {
		t.Errorf("BASE_IMAGE = %q, want a distroless static nonroot image", base)
	}
	if !strings.HasPrefix(df.metaArg["GO_VERSION"], "1.26") {
		t.Errorf("GO_VERSION = %q, want the repository's Go 1.26", df.metaArg["GO_VERSION"])
	}

	var pkgs []string // ./services/x/cmd/y, for go list
	for _, target := range imageTargets {
		t.Run(target, func(t *testing.T) {
			chain := df.chain(target)
			if len(chain) == 0 {
				t.Fatalf("no stage %q", target)
			}
			if last := chain[len(chain)-1]; last.BaseName != "${BASE_IMAGE}" {
				t.Errorf("%s is built on %q, want ${BASE_IMAGE}", target, last.BaseName)
			}
			labels := map[string]string{}
			var user string
			var entrypoint []string
			copied := map[string]string{} // binary path in the image -> source stage
			for i := len(chain) - 1; i >= 0; i-- {
				for _, cmd := range chain[i].Commands {
					switch c := cmd.(type) {
					case *instructions.LabelCommand:
						for _, kv := range c.Labels {
							labels[kv.Key] = kv.Value
						}
					case *instructions.UserCommand:
						user = c.User
					case *instructions.EntrypointCommand:
						if c.PrependShell {
							t.Errorf("ENTRYPOINT in shell form (no shell in distroless): %s", c)
						}
						entrypoint = c.CmdLine
					case *instructions.CopyCommand:
						for _, src := range c.SourcePaths {
							dest := c.DestPath
							if strings.HasSuffix(dest, "/") {
								dest += filepath.Base(src)
							}
							copied[dest] = c.From + ":" + src
						}
					}
				}
			}
			if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
				t.Errorf("USER = %q, want a non-root uid", user)
			}
			for _, l := range []string{"source", "revision", "version", "title", "description"} {
				if labels["org.opencontainers.image."+l] == "" {
					t.Errorf("no OCI label org.opencontainers.image.%s", l)
				}
			}
			if labels["org.opencontainers.image.title"] != target {
				t.Errorf("title label = %q", labels["org.opencontainers.image.title"])
			}
			want := "/usr/local/bin/" + target
			if !slices.Equal(entrypoint, []string{want}) {
				t.Fatalf("ENTRYPOINT = %v, want [%s]", entrypoint, want)
			}
			from, ok := copied[want]
			if !ok {
				t.Fatalf("%s is never copied into the image", want)
			}
			buildStage := strings.SplitN(from, ":", 2)[0]
			if copied["/usr/local/bin/httpcheck"] == "" {
				t.Error("httpcheck (compose health checks) is not in the image")
			}

			// The build stage runs build-go.sh MODULE CMD...; each
			// MODULE/cmd/CMD must be a main package, and every binary the
			// image copies from the stage must be one of those CMDs.
			var built []string
			for _, cmd := range df.stages[buildStage].Commands {
				run, ok := cmd.(*instructions.RunCommand)
				if !ok {
					continue
				}
				m := buildScript.FindStringSubmatch(strings.Join(run.CmdLine, " "))
				if m == nil {
					continue
				}
				for _, c := range strings.Fields(m[2]) {
					dir := filepath.Join(root, m[1], "cmd", c)
					if !isMainPackage(t, dir) {
						t.Errorf("%s builds %s: not a main package", buildStage, dir)
					}
					// Services stamp their version (-X main.version); the
					// dev-only memapi and demo runner need not.
					if c == target && target != "memapi" && !declaresVersion(t, dir) {
						t.Errorf("%s: main declares no `var version` for -X main.version", dir)
					}
					built = append(built, c)
					pkgs = append(pkgs, "./"+filepath.ToSlash(filepath.Join(m[1], "cmd", c)))
				}
			}
			for dest, src := range copied {
				if !strings.HasPrefix(src, buildStage+":") || !strings.HasPrefix(dest, "/usr/local/bin/") {
					continue
				}
				if !slices.Contains(built, filepath.Base(dest)) || !strings.HasSuffix(src, "/out/"+filepath.Base(dest)) {
					t.Errorf("copies %s from %s, which the build stage does not build (%v)", dest, src, built)
				}
			}
		})
	}
	if t.Failed() {
		return
	}
	// The packages resolve in workspace mode with a static (CGO_ENABLED=0)
	// linux build: a missing module, go.sum entry or cgo-only import shows here.
	goList(t, root, []string{"GOWORK=" + filepath.Join(root, "go.work")}, pkgs...)
	goList(t, filepath.Join(root, "deploy", "httpcheck"), []string{"GOWORK=off"}, ".")
}

// isMainPackage reports whether dir holds a non-test .go file of package main.
func isMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatalf("glob %s: %v", dir, err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		if regexp.MustCompile(`(?m)^package main\b`).Match(b) {
			return true
		}
	}
	return false
}

// declaresVersion reports whether dir's main package declares `var version`.
func declaresVersion(t *testing.T, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatalf("glob %s: %v", dir, err)
	}
	re := regexp.MustCompile(`(?m)^var version\s*=\s*"`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		if re.Match(b) {
			return true
		}
	}
	return false
}

// goList runs `go list -deps` on pkgs in dir and fails on any package error.
func goList(t *testing.T, dir string, env []string, pkgs ...string) {
	t.Helper()
	args := append([]string{"list", "-e", "-deps", "-f", "{{with .Error}}{{$.ImportPath}}: {{.}}{{end}}"}, pkgs...)
	cmd := exec.CommandContext(t.Context(), "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=readonly"}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("go list in %s reports package errors:\n%s", dir, s)
	}
}

// TestImagesMakefile checks that deploy/images.mk builds exactly the
// Dockerfile's service targets.
func TestImagesMakefile(t *testing.T) {
	t.Parallel()
	mk := string(readFile(t, "deploy/images.mk"))
	m := regexp.MustCompile(`(?m)^IMAGE_SERVICES \?= (.+)$`).FindStringSubmatch(mk)
	if m == nil {
		t.Fatal("IMAGE_SERVICES not found in deploy/images.mk")
	}
	got := strings.Fields(m[1])
	if !slices.Equal(got, imageTargets) {
		t.Errorf("IMAGE_SERVICES = %v, want %v", got, imageTargets)
	}
	for _, want := range []string{"--target $*", "-f deploy/Dockerfile", "VERSION=$(VERSION)", "REVISION=$(REVISION)", "skipping"} {
		if !strings.Contains(mk, want) {
			t.Errorf("images.mk lacks %q", want)
		}
	}
	// The build script stamps the version and builds static, trimmed binaries.
	script := string(readFile(t, "deploy/build-go.sh"))
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version="} {
		if !strings.Contains(script, want) {
			t.Errorf("build-go.sh lacks %q", want)
		}
	}
}
