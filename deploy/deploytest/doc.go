// Package deploytest holds the tests of everything deploy-side: the Helm
// chart, docker-compose.yaml and the Dockerfiles. It is its own module so
// that Helm, compose-go and buildkit never reach the services' go.mod files.
package deploytest
