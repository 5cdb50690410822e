#!/usr/bin/env bash
# Builds the pinned upstream control-plane binaries kube-ipvs is tested against.
#
#   scripts/k8s-fixtures.sh               build (or reuse) them, print nothing on stdout
#   scripts/k8s-fixtures.sh --print-dir   the same, then print the bin directory
#   scripts/k8s-fixtures.sh --check       exit 0 if the cache is current, 1 if not (no build)
#
# Kubernetes v1.37.2 (kube-apiserver, kube-controller-manager, kube-proxy, kubectl)
# from fixtures/k8s and etcd v3.7.3 from fixtures/etcd, two separate Go modules
# whose go.mod and go.sum are committed: the build is reproducible and fetched
# from the Go module proxy only. The binaries, the Go build cache and the module
# cache all live in $KUBE_IPVS_K8S_CACHE (default ~/.cache/kube-ipvs-k8s), as the
# kernel lab caches its kernel. A stamp (a hash of the go.mod and go.sum files, the
# Go version and this script's build flags) makes a second run do nothing and need
# no network. Go is used for these fixtures only; kube-ipvs stays pure Rust.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cache=${KUBE_IPVS_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-ipvs-k8s}
bin=$cache/bin
K8S_VERSION=v1.37.2
K8S_CMDS=(kube-apiserver kube-controller-manager kube-proxy kubectl)
# k8s.io/kubernetes v1.37.2 declares `go 1.26.0`: the machine's Go 1.26.8 builds
# it, and GOTOOLCHAIN=local forbids a silent toolchain download.
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

die() { echo "k8s-fixtures: $*" >&2; exit 1; }
say() { echo "k8s-fixtures: $*" >&2; }

mode=build
case "${1:-}" in
  '') ;;
  --print-dir) mode=print ;;
  --check) mode=check ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown option '$1' (usage: k8s-fixtures.sh [--print-dir|--check])" ;;
esac

command -v go >/dev/null 2>&1 \
  || die "go is not installed: install Go >= 1.26 (https://go.dev/dl/) and put it on PATH; it builds the control-plane test fixtures only"
gover=$(go env GOVERSION 2>/dev/null) || gover=unknown
case "$gover" in
  go1.2[6-9]*|go1.[3-9][0-9]*|go[2-9]*) ;;
  *) die "$gover is too old: k8s.io/kubernetes $K8S_VERSION needs Go >= 1.26 (from Go 1.21 on, GOTOOLCHAIN=go1.26.8 makes go fetch it from the module proxy)" ;;
esac

# What the binaries depend on. The version strings baked in with -X are the
# ones upstream's release build sets (hack/lib/version.sh), so `kubectl version`
# and the apiserver's /version report v1.37.2 rather than v0.0.0-master.
ldflags_k8s=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags_k8s+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=37 -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitTreeState=clean"
done
stamp_input() {
  go version
  echo "$GOTOOLCHAIN ${K8S_CMDS[*]} $ldflags_k8s"
  cat "$root/fixtures/k8s/go.mod" "$root/fixtures/k8s/go.sum" \
    "$root/fixtures/etcd/go.mod" "$root/fixtures/etcd/go.sum" "$root/fixtures/etcd/main.go"
}
want=$(stamp_input | sha256sum | cut -d' ' -f1)

current() {
  [ "$(cat "$cache/stamp" 2>/dev/null)" = "$want" ] || return 1
  local b
  for b in "${K8S_CMDS[@]}" etcd; do [ -x "$bin/$b" ] || return 1; done
}

if current; then
  [ "$mode" = print ] && echo "$bin"
  exit 0
fi
[ "$mode" = check ] && exit 1

mkdir -p "$bin" "$cache/go"
# Both caches inside ours, so CI caches them with the binaries; -modcacherw lets
# a plain `rm -rf` clear the module cache (Go makes it read-only otherwise).
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build
export GOFLAGS="-modcacherw -buildvcs=false -mod=readonly"
export CGO_ENABLED=0
start=$(date +%s)
say "building Kubernetes $K8S_VERSION (${K8S_CMDS[*]}) and etcd into $bin; a cold build takes minutes and about 2 GB in $cache/go"
rm -f "$cache/stamp"
log=$cache/build.log
: >"$log"
pkgs=()
for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
(cd "$root/fixtures/k8s" && go build -trimpath -ldflags "-s -w$ldflags_k8s" -o "$bin/" "${pkgs[@]}") >>"$log" 2>&1 \
  || { tail -30 "$log" >&2; die "building Kubernetes failed (full log: $log); a network error means the Go module proxy ($(go env GOPROXY)) is unreachable"; }
(cd "$root/fixtures/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .) >>"$log" 2>&1 \
  || { tail -30 "$log" >&2; die "building etcd failed (full log: $log)"; }
echo "$want" >"$cache/stamp"
say "built in $(( $(date +%s) - start )) s: $("$bin/kubectl" version --client 2>/dev/null | head -1), $("$bin/etcd" --version 2>/dev/null | head -1)"
[ "$mode" = print ] && echo "$bin"
exit 0
