// Package crd reads the installed AgenticSession CRD and prunes desired
// AgenticSessions to it, so the kube-reconciler works with whichever version of
// the session operator's CRD a cluster has.
//
// Guarantees:
//   - An AgenticSession is never applied blind: until the CRD
//     agenticsessions.vteam.ambient-code is read, established and serves
//     v1alpha1 with a structural schema, PruneSession returns an error
//     (ErrNotSynced, ErrNotInstalled, ErrNotEstablished, ErrVersionNotServed
//     or ErrNoSchema) and Check, the readiness check, says which.
//   - The object sent never holds a field the installed CRD does not declare,
//     so server-side apply never fails with "field not declared in schema"
//     (the API server would refuse it, where a plain create silently lost it).
//     Pruning is the API server's own algorithm
//     (k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning) on the
//     CRD's structural schema: subtrees under x-kubernetes-preserve-unknown-fields
//     are kept, metadata (labels, annotations) is never pruned.
//   - Each dropped field path (list indexes folded: spec.repos[].name) is
//     logged once per CRD resourceVersion, not once per session.
//   - A CRD change (operator upgrade, a newer or older schema) takes effect for
//     the next AgenticSession applied, without a restart: the CRD is watched,
//     and the schema is rebuilt when its resourceVersion changes.
//
// Limits: AgenticSessions already applied are not re-applied when the CRD
// changes; each picks up newly declared fields with its session's next change.
//
// A Watcher is safe for concurrent use.
package crd
