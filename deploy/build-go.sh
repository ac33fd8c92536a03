#!/bin/sh
# build-go.sh MODULE CMD...: builds MODULE/cmd/CMD for each CMD into
# ${OUT:-/out}/CMD as a static, trimmed binary stamped with main.version.
# Used by deploy/Dockerfile; the deploy tests check that every MODULE/cmd/CMD
# it names exists and resolves.
set -eu
if [ "$#" -lt 2 ]; then
	echo "usage: build-go.sh MODULE CMD..." >&2
	exit 2
fi
module="$1"
shift
out="${OUT:-/out}"
mkdir -p "$out"
for cmd in "$@"; do
	(
		cd "$module"
		CGO_ENABLED=0 GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-amd64}" \
			go build -trimpath -buildvcs=false \
			-ldflags "-s -w -X main.version=${VERSION:-dev}" \
			-o "$out/$cmd" "./cmd/$cmd"
	)
done
