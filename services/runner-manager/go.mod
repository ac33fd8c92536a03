module github.com/ambient-code/control-plane/services/runner-manager

go 1.26.0

require (
	github.com/ambient-code/control-plane/libs v0.0.0-00010101000000-000000000000
	github.com/ambient-code/control-plane/proto v0.0.0-00010101000000-000000000000
)

replace (
	github.com/ambient-code/control-plane/libs => ../../libs
	github.com/ambient-code/control-plane/proto => ../../proto
)
