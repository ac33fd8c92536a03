module github.com/ambient-code/control-plane/services/informer

go 1.26.0

replace github.com/ambient-code/control-plane/services/event-tally => ../event-tally

require (
	github.com/ambient-code/control-plane/libs v0.0.0-00010101000000-000000000000
	github.com/ambient-code/control-plane/services/event-tally v0.0.0-00010101000000-000000000000
)
