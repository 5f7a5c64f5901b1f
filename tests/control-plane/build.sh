#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kubectl from the Go modules pinned in this
# folder, once per version of go.mod/go.sum, into a cache outside the
# repository. Prints the directory that holds the binaries.
#
#   tests/control-plane/build.sh            build if needed, print the bin dir
#   INTERNAL_SERVICES_CP_CACHE=/path ...     choose the cache root
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${INTERNAL_SERVICES_CP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/internal-services/control-plane}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" "$here/build.sh" | sha256sum | cut -c1-16)
bin="$cache_root/$key/bin"

if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] && [ -x "$bin/kubectl" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] && [ -x "$bin/kubectl" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required to build the test control plane" >&2; exit 1; }
tmp="$cache_root/$key.partial"
rm -rf "$tmp"
mkdir -p "$tmp"
started=$(date +%s)
echo "building etcd, kube-apiserver and kubectl (cache key $key); a cold build takes several minutes" >&2
(
  cd "$here"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
  go build -trimpath -ldflags='-s -w' -o "$tmp/etcd" ./etcd
  go build -trimpath -ldflags='-s -w' -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  go build -trimpath -ldflags='-s -w' -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
) >&2
rm -rf "$cache_root/$key"
mkdir -p "$cache_root/$key"
mv "$tmp" "$bin"
echo "built in $(( $(date +%s) - started )) s into $bin" >&2
echo "$bin"
