module github.com/ambient-code/control-plane/services/runner-manager

go 1.26.0
