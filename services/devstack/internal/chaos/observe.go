package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ambient-code/control-plane/libs/apiclient"
	"github.com/ambient-code/control-plane/libs/registry"
)

// observation is the whole system seen from outside at one moment: the
// API, the process table, KV, Kubernetes, the tally and the proxies.
type observation struct {
	At time.Time
	// Sessions are the API's sessions by id.
	Sessions map[string]apiSession
	// Runners are the live runner processes by session id.
	Runners map[string][]runnerProc
	// Owners are the records of KV ambient-runners by session id; nil when
	// KV could not be read (OwnersErr).
	Owners    map[string]registry.Endpoint
	OwnersErr string
	Kube      kubeState
	KubeErr   string
	Tally     tallySnapshot
	TallyErr  string
	// Routes counts, per session, the agui-proxies that reached its runner.
	Routes map[string]int
	// Unrouted counts, per session asked about (observe's gone), the
	// agui-proxies that answered 404: no route to it.
	Unrouted map[string]int
	// Proxies is how many agui-proxies were asked.
	Proxies int
}

// apiSession is what the audit reads of an API session.
type apiSession struct {
	Phase      string
	Conditions string
	// Completed: completion_time is set.
	Completed bool
	// Written back by kube-reconciler from the session's AgenticSession.
	KubeCRUID, KubeNamespace, SDKSessionID string
}

// tallySnapshot is event-tally's /tally?ids=true (services/event-tally/tally).
type tallySnapshot struct {
	Resources    map[string]tallyCounts `json:"resources"`
	Events       int                    `json:"events"`
	Redeliveries int                    `json:"redeliveries"`
}

// tallyCounts is the tally of one resource.
type tallyCounts struct {
	Added    int      `json:"added"`
	Modified int      `json:"modified"`
	Deleted  int      `json:"deleted"`
	IDs      int      `json:"ids"`
	SeenIDs  []string `json:"seen_ids"`
	// DeletedIDs are the ids a DELETED event was counted for.
	DeletedIDs []string `json:"deleted_ids"`
}

// Resource tokens of the tally (libs/events.ResourceToken).
const (
	tallySessions = "sessions"
	tallyProjects = "projects"
	tallySettings = "project_settings"
)

// observer gathers observations.
type observer struct {
	api        *apiclient.Client
	sys        *system
	smp        *sampler
	nv         *natsView
	namespaces []string
	hc         *http.Client
}

// observe reads everything; a part that cannot be read is recorded as such
// (the audit then fails what depends on it) rather than ending the run.
// wantRoutes are the sessions whose runners each proxy must reach, gone
// those each proxy must answer 404 for.
func (o *observer) observe(ctx context.Context, wantRoutes, gone []string) (observation, error) {
	obs := observation{At: time.Now(), Sessions: map[string]apiSession{}, Routes: map[string]int{}, Unrouted: map[string]int{}, Proxies: len(o.sys.proxyURLs)}
	obs.Runners, _ = o.smp.Latest()
	ss, err := o.api.ListSessions(ctx)
	if err != nil {
		return obs, fmt.Errorf("list sessions: %w", err)
	}
	for _, s := range ss {
		obs.Sessions[s.GetMetadata().GetId()] = apiSession{Phase: s.GetPhase(), Conditions: s.GetConditions(), Completed: s.GetCompletionTime() != nil,
			KubeCRUID: s.GetKubeCrUid(), KubeNamespace: s.GetKubeNamespace(), SDKSessionID: s.GetSdkSessionId()}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		kctx, cancel := context.WithTimeout(gctx, 20*time.Second)
		defer cancel()
		owners, oerr := o.nv.runnerRecords(kctx)
		if oerr != nil {
			obs.OwnersErr = oerr.Error()
		} else {
			obs.Owners = owners
		}
		return nil
	})
	g.Go(func() error {
		kctx, cancel := context.WithTimeout(gctx, 20*time.Second)
		defer cancel()
		var kerr error
		if obs.Kube, kerr = o.sys.kube.listKube(kctx, o.namespaces); kerr != nil {
			obs.KubeErr = kerr.Error()
		}
		return nil
	})
	g.Go(func() error {
		if terr := o.tally(gctx, &obs.Tally); terr != nil {
			obs.TallyErr = terr.Error()
		}
		return nil
	})
	routes, unrouted := make([]int, len(wantRoutes)), make([]int, len(gone))
	g.Go(func() error {
		for i, id := range wantRoutes {
			for _, p := range o.sys.proxyURLs {
				if o.routes(gctx, p, id) == http.StatusOK {
					routes[i]++
				}
			}
		}
		for i, id := range gone {
			for _, p := range o.sys.proxyURLs {
				if o.routes(gctx, p, id) == http.StatusNotFound {
					unrouted[i]++
				}
			}
		}
		return nil
	})
	_ = g.Wait() //nolint:errcheck // every part records its own error above
	for i, id := range wantRoutes {
		obs.Routes[id] = routes[i]
	}
	for i, id := range gone {
		obs.Unrouted[id] = unrouted[i]
	}
	return obs, nil
}

func (o *observer) tally(ctx context.Context, into *tallySnapshot) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.sys.tallyURL+"/tally?ids=true", nil)
	if err != nil {
		return fmt.Errorf("build tally request: %w", err)
	}
	resp, err := o.hc.Do(req)
	if err != nil {
		return fmt.Errorf("get tally: %w", err)
	}
	defer resp.Body.Close() //nolint:errcheck // read below
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get tally: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("decode tally: %w", err)
	}
	return nil
}

// routes returns the status of GET /sessions/{id}/health through proxy:
// 200 answered by session id's runner, 404 no route (unknown session), 0
// no answer.
func (o *observer) routes(ctx context.Context, proxy, id string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, proxy+"/sessions/"+id+"/health", nil)
	if err != nil {
		return 0
	}
	resp, err := o.hc.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close() //nolint:errcheck // only the status matters
	return resp.StatusCode
}
