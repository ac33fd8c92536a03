#!/usr/bin/env bash
# Builds the real Kubernetes test binaries (kube-apiserver and etcd) from Go modules
# into bin/k8s, for envtest (KUBEBUILDER_ASSETS=<repo>/bin/k8s). See
# shared/design/REAL-PARTS.md.
#
# The versions are pinned by hack/kube-tools/go.mod (kept out of go.work). The build
# is skipped when both binaries exist and bin/k8s/.stamp records the same pin (the
# Kubernetes version plus a hash of hack/kube-tools/go.mod and go.sum), so calling
# this from make and .ci/run is cheap after the first time.
#
# Cost of a cold build on 2 cores (empty module and build caches): 9-11 minutes
# (529, 660 and 672 s measured in three CI runs), ~0.6 GB module cache, ~2.8 GB
# build cache, and a link step peaking near 2.5 GB of memory. The two binaries are
# linked one after the other (never in parallel) to keep that peak.
#
# Environment:
#   KUBE_BIN_DIR  output directory (default: <repo>/bin/k8s)
#   FORCE=1       rebuild even when the stamp matches
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${repo_root}/hack/kube-tools"
out_dir="${KUBE_BIN_DIR:-${repo_root}/bin/k8s}"
kube_version="v1.37.2"
stamp_file="${out_dir}/.stamp"

mod_hash="$(cat "${tools_dir}/go.mod" "${tools_dir}/go.sum" | sha256sum | cut -c1-16)"
want_stamp="kubernetes=${kube_version} kube-tools=${mod_hash}"

if [[ "${FORCE:-0}" != "1" && -x "${out_dir}/kube-apiserver" && -x "${out_dir}/etcd" \
	&& -f "${stamp_file}" && "$(cat "${stamp_file}")" == "${want_stamp}" ]]; then
	echo "build-kube-binaries: ${out_dir} up to date (${want_stamp})"
	exit 0
fi

mkdir -p "${out_dir}"
# One build at a time per output directory: a second caller (make and a
# developer, or two test runs) waits here, then finds the stamp current.
exec 9>"${out_dir}/.lock"
flock 9
if [[ "${FORCE:-0}" != "1" && -x "${out_dir}/kube-apiserver" && -x "${out_dir}/etcd" \
	&& -f "${stamp_file}" && "$(cat "${stamp_file}")" == "${want_stamp}" ]]; then
	echo "build-kube-binaries: ${out_dir} up to date (built by a concurrent run)"
	exit 0
fi
rm -f "${stamp_file}"

# The module is outside go.work: build it on its own.
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -mod=readonly"
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=${kube_version} \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=${kube_version} \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=37 \
 -X k8s.io/client-go/pkg/version.gitTreeState=clean"

cd "${tools_dir}"
start=$(date +%s)
echo "build-kube-binaries: building etcd into ${out_dir}"
go build -trimpath -ldflags "-s -w" -o "${out_dir}/etcd.tmp.$$" go.etcd.io/etcd/server/v3
mv "${out_dir}/etcd.tmp.$$" "${out_dir}/etcd"
echo "build-kube-binaries: building kube-apiserver ${kube_version} into ${out_dir}"
go build -trimpath -ldflags "${ldflags}" -o "${out_dir}/kube-apiserver.tmp.$$" k8s.io/kubernetes/cmd/kube-apiserver
mv "${out_dir}/kube-apiserver.tmp.$$" "${out_dir}/kube-apiserver"

echo "${want_stamp}" > "${stamp_file}"
echo "build-kube-binaries: done in $(( $(date +%s) - start ))s"
