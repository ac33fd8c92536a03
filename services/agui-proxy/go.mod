module github.com/ambient-code/control-plane/services/agui-proxy

go 1.26.0
