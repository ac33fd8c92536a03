// Package layout holds the repository's structural rules as tests; it has no
// code of its own. Each rule that a review would otherwise have to remember
// is a test here, so `go test ./...` (and `make test`) fails when one is
// broken:
//
//   - no service module requires or replaces another service module
//     (services share code through libs, never through each other).
package layout
