package deploytest

// configLoaders maps an image target to its service's own configuration
// loader, exposed as services/<name>/envcheck.Check (Go forbids importing
// another module's internal/config). Services not listed yet are checked by
// variable name only (declaredEnv); /work/brief/requests-H.md asks each
// owner for the package.
var configLoaders = map[string]func(lookup func(name string) (string, bool)) error{}
