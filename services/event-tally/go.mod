module github.com/ambient-code/control-plane/services/event-tally

go 1.26.0
