//go:build !linux

package runner

// NonDumpable does nothing outside Linux.
func NonDumpable() error { return nil }
