// Package authz decides whether the caller of a proxy route may reach a
// session, by asking an authority the platform already has, never a list of
// the proxy's own:
//
//   - [NewAPI] (AGUI_AUTHZ=api) GETs the session from the ambient API's REST
//     API with the caller's own Authorization header. The caller may reach
//     the session iff the API returns it: 404 or 403 deny (403), 401 is
//     passed on (401), anything else, an unreachable API included, is 503.
//     REST, not gRPC: the real server's GetSession over gRPC authenticates
//     but authorizes nothing (any user gets any session), while its REST
//     routes run its authorization middleware. One GET decides every route
//     of the session: the API has no side-effect-free way to ask whether
//     the caller may change it, so in this mode whoever may read a session
//     may also run and interrupt it.
//   - [NewKube] (AGUI_AUTHZ=kube) creates a SubjectAccessReview for the JWT's
//     user and groups on the session's AgenticSession (vteam.ambient-code,
//     agenticsessions, named after the lower-cased session id) in the
//     project's namespace: verb get for reads (GET routes), update for what
//     acts on the session (POST: runs, interrupts). The RoleBindings that
//     kube-reconciler creates from a project's group_access grant it. The
//     project's namespace is the one namespace labelled with the project's
//     lower-cased id by the control plane (ambient-code.io/project-id and
//     ambient-code.io/managed-by=ambient-control-plane), found by a label
//     selector, so it does not depend on how namespaces are named, and of
//     this installation (KubeConfig.Instance, CONTROL_PLANE_INSTANCE): one
//     labelled ambient-code.io/instance with it, or without that label, by
//     kube-reconciler's own ownership rule; another installation's namespace
//     of a project with the same id is never asked about. None or more than
//     one is a denial. The project id comes from the session's
//     routing record (KV ambient-runners, written only by runner-manager).
//
// Decisions, allowed or denied, are cached for a short TTL in a bounded LRU
// keyed by session and a digest of who asks (the credential in api mode,
// user and groups in kube mode) and what (the verb, in kube mode); errors
// are never cached. [Authorizer.Forget] drops a session's decisions when
// its routing record goes away. A revoked grant therefore still works for
// at most the TTL; a granted one starts working after at most the TTL.
//
// Every decision is counted (agui_proxy_authz_decisions_total{mode,result,
// cached}) and timed (agui_proxy_authz_latency_seconds{mode}). Credentials
// are never logged or kept: the cache holds SHA-256 digests.
package authz
