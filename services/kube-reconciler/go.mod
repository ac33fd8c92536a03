module github.com/ambient-code/control-plane/services/kube-reconciler

go 1.26.0
