#!/usr/bin/env bash
# kube-ipvs against upstream kube-proxy v1.37.2 in `ipvs` and `nftables` mode
# (issue #15 point 4), in one lab boot, on N Services × 10 endpoints created
# through the real apiserver:
#
#   scripts/bench-upstream.sh [--sizes 1000,5000,10000] [--changes 100] [--change-budget 1200]
#                             [--first-sync-limit 3600] [--idle 300] [--proxies kube-ipvs,ipvs,nftables]
#
# Measures per proxy: the first full sync (from the process start to its first
# IPv4 sync), the latency of one endpoint change p50/p99 and of adding one
# Service (each proxy's own kubeproxy_network_programming_duration_seconds,
# from the slice's trigger time), CPU seconds over --idle seconds with nothing
# changing (periodic resyncs included) and peak RSS. Prints a markdown table
# with each upstream figure's ratio to kube-ipvs's (target/bench-upstream.md,
# the raw rows in target/bench-upstream.json, a plot in
# target/bench-upstream.svg). A proxy stops its changes when --change-budget
# seconds are spent (the table gives n then), and is not measured further
# without a first sync within --first-sync-limit seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = "--in-lab" ]; then
  shift
  echo "# kube-ipvs vs kube-proxy v1.37.2 ($(uname -r), $(nproc) vCPU under qemu TCG, $(date -u +%Y-%m-%d))"
  echo
  exec target/release/examples/bench_upstream "$@"
fi

scripts/k8s-fixtures.sh >/dev/null
cargo build --release --locked --bin kube-ipvs --example bench_upstream
KUBE_IPVS_CP_KUBE_PROXY="$(scripts/k8s-fixtures.sh --print-dir)/kube-proxy"
KUBE_IPVS_BIN=$PWD/target/release/kube-ipvs
export KUBE_IPVS_CP_KUBE_PROXY KUBE_IPVS_BIN
was_up=0
scripts/control-plane.sh status && was_up=1
eval "$(scripts/control-plane.sh up)"
[ "$was_up" = 1 ] || trap 'scripts/control-plane.sh down' EXIT
export KUBE_IPVS_CP_KUBECONFIG=$KUBECONFIG_KUBE_IPVS_GUEST KUBE_IPVS_CP_ADMIN_KUBECONFIG=$KUBECONFIG_ADMIN_GUEST
mkdir -p target
status=0
scripts/kernel-lab.sh --net --memory 4G --timeout "${KUBE_IPVS_LAB_TIMEOUT:-14400}" -- \
  scripts/bench-upstream.sh --in-lab "$@" | tee target/bench-upstream.md || status=$?
sed -n 's/^results: //p' target/bench-upstream.md | tail -1 >target/bench-upstream.json
if [ -s target/bench-upstream.json ]; then
  target/release/examples/bench_upstream --plot target/bench-upstream.json >target/bench-upstream.svg
else
  echo "bench-upstream.sh: no results came back" >&2; status=1
fi
exit "$status"
