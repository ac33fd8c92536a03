package memapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-code/control-plane/libs/memapi"
	"github.com/ambient-code/control-plane/libs/restapi"
	ambientv1 "github.com/ambient-code/control-plane/proto/ambient/v1"
)

// TestConcurrentUse runs writers, listers and a watcher at once (run with
// -race) and checks the final state.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	srv := start(t)
	c := client(t, srv, testToken)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w, err := c.WatchSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitWatch(t, srv)

	const writers, perWriter = 4, 50
	var wg errgroup.Group
	received := make(chan int, 1) // the watcher's count, sent once
	go func() {
		n := 0
		for {
			if _, err := w.Recv(); err != nil {
				received <- n
				return
			}
			n++
		}
	}()
	for g := range writers {
		wg.Go(func() error {
			for i := range perWriter {
				s, err := c.CreateSession(t.Context(), &ambientv1.CreateSessionRequest{Name: fmt.Sprintf("w%d-%d", g, i)})
				if err != nil {
					return err
				}
				id := s.GetMetadata().GetId()
				if _, err := c.UpdateSession(t.Context(), &ambientv1.UpdateSessionRequest{Id: id, Prompt: proto.String("x")}); err != nil {
					return err
				}
				if _, err := c.UpdateSessionStatus(t.Context(), &ambientv1.UpdateSessionStatusRequest{Id: id, Phase: proto.String("Running")}); err != nil {
					return err
				}
				if i%2 == 0 {
					if err := c.DeleteSession(t.Context(), id); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	for range 2 {
		wg.Go(func() error {
			for range 20 {
				if _, err := c.ListSessions(t.Context()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := wg.Wait(); err != nil {
		t.Fatal(err)
	}
	srv.EndWatches()
	n := <-received
	t.Logf("watcher received %d events before its end", n)
	got, err := c.ListSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := writers * perWriter / 2; len(got) != want {
		t.Errorf("%d sessions left, want %d", len(got), want)
	}
	for _, s := range got {
		if s.GetPhase() != "Running" || s.GetPrompt() != "x" {
			t.Errorf("session %s: phase %q prompt %q", s.GetName(), s.GetPhase(), s.GetPrompt())
		}
	}
}

// TestConcurrentSettingsForeignKey: a settings write checks its project
// while holding the settings store's lock, reading the projects store
// (lock order: settings, then projects), while a group member's REST
// reads consult the settings for group grants before reading projects.
// Run with -race, all of them at once; a deadlock would hang the test
// (the test binary's timeout is the guard). Each settings create races
// the create of its project: it is refused with the foreign key error or
// stored, never anything else, and stored once the project exists.
func TestConcurrentSettingsForeignKey(t *testing.T) {
	t.Parallel()
	srv := start(t, memapi.WithUsers(users()))
	c := client(t, srv, testToken)
	ctx := t.Context()
	const (
		writers, perWriter = 4, 20
		grant              = `[{"group":"team-b","role":"ambient-project-view"}]`
	)
	var wg errgroup.Group
	for w := range writers {
		wg.Go(func() error {
			for i := range perWriter {
				name := fmt.Sprintf("p%d-%d", w, i)
				var race errgroup.Group
				var early error
				race.Go(func() error {
					_, err := c.CreateProject(ctx, &ambientv1.CreateProjectRequest{Name: name})
					return err
				})
				race.Go(func() error {
					_, early = c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: name, GroupAccess: proto.String(grant)})
					return nil
				})
				if err := race.Wait(); err != nil {
					return fmt.Errorf("create project %s: %w", name, err)
				}
				if early != nil {
					if status.Code(early) != codes.Internal || !strings.Contains(early.Error(), `"fk_project_settings_project_id"`) {
						return fmt.Errorf("settings racing their project %s: %w, want the foreign key error", name, early)
					}
					if _, err := c.CreateProjectSettings(ctx, &ambientv1.CreateProjectSettingsRequest{ProjectId: name, GroupAccess: proto.String(grant)}); err != nil {
						return fmt.Errorf("settings of the existing project %s: %w", name, err)
					}
				}
				if i%2 == 1 {
					if err := c.DeleteProject(ctx, name); err != nil {
						return fmt.Errorf("delete project %s: %w", name, err)
					}
				}
			}
			return nil
		})
	}
	for _, path := range []string{"/projects", "/projects/p0-0"} {
		wg.Go(func() error {
			for range 40 {
				if code, err := carolGet(ctx, srv.RESTURL()+"/api/ambient/v1"+path); err != nil || (code != http.StatusOK && code != http.StatusNotFound) {
					return fmt.Errorf("carol GET %s: %d %w", path, code, err)
				}
			}
			return nil
		})
	}
	if err := wg.Wait(); err != nil {
		t.Fatal(err)
	}

	if _, projects, settings := srv.Len(); projects != writers*perWriter/2 || settings != writers*perWriter {
		t.Errorf("%d projects and %d settings, want %d and %d", projects, settings, writers*perWriter/2, writers*perWriter)
	}
	// Every live project's settings grant team-b: carol sees them all.
	rc := restClient{t: t, base: srv.RESTURL(), token: carolToken}
	code, body := rc.do("GET", "/projects?size=500", "")
	var l restapi.List
	if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil || l.Total != writers*perWriter/2 {
		t.Errorf("carol's projects: %d %s (%v), want all %d live ones", code, body, err, writers*perWriter/2)
	}
}

// carolGet is a GET as carol (users_test.go) that a goroutine may call:
// it reports failures instead of ending the test.
func carolGet(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+carolToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("get: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	return resp.StatusCode, nil
}
