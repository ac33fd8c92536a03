module github.com/ambient-code/control-plane/services/informer

go 1.26.0
