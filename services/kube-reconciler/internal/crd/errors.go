package crd

import "errors"

// Errors of Watcher.PruneSession and Watcher.Check. All of them mean "not yet":
// the event that needed the CRD is retried, and readiness fails with the
// reason until the CRD is right.
var (
	// ErrNotSynced: the CRD has not been read yet (start-up, or the CRD cannot
	// be listed, e.g. RBAC).
	ErrNotSynced = errors.New("agenticsession crd not read yet")
	// ErrNotInstalled: no CRD agenticsessions.vteam.ambient-code exists.
	ErrNotInstalled = errors.New("crd agenticsessions.vteam.ambient-code not installed: install the session operator's CRD, or the chart with crds.install=true")
	// ErrNotEstablished: the CRD exists but the API server does not serve it yet.
	ErrNotEstablished = errors.New("crd agenticsessions.vteam.ambient-code not established")
	// ErrVersionNotServed: the CRD does not serve v1alpha1.
	ErrVersionNotServed = errors.New("crd agenticsessions.vteam.ambient-code does not serve v1alpha1")
	// ErrNoSchema: the served version has no usable structural schema.
	ErrNoSchema = errors.New("crd agenticsessions.vteam.ambient-code has no structural schema for v1alpha1")
)
