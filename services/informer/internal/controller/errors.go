package controller

// FatalError marks an error that must stop the informer at once (the test
// hook's simulated crash between publish and KV write), as opposed to a
// failed publish, which is retried.
type FatalError struct{ Err error }

func (e FatalError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e FatalError) Unwrap() error { return e.Err }
