module github.com/ambient-code/control-plane/deploy/httpcheck

go 1.26.0
