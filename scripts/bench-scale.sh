#!/usr/bin/env bash
# Scale benchmark of the real daemon (issue #7), in one lab boot: N services ×
# 10 endpoints from generated manifests, for N = 1,000, 5,000 and 10,000 (a size
# NxE has E endpoints per Service: --sizes 1000,50000,2000x250).
#
#   scripts/bench-scale.sh [--api] [--sizes 1000,5000,10000] [--changes 100] [--warmup 200] [--slowest 3] [--idle SECS]
#
# BENCH_SCALE_MEMORY (default 4G) is the guest's memory: 50,000 × 10 needs more (see
# the README), BENCH_SCALE_TIMEOUT (default 5400) the whole run's bound in seconds.
#
# --api reads the cluster from a real kube-apiserver instead of manifests:
# scripts/control-plane.sh up (left up if it was), the lab booted with --net,
# results in target/bench-scale-api.{md,json} and docs/bench-scale-api.png.
#
# Builds the release kube-ipvs and examples/bench_scale.rs, runs the benchmark
# inside scripts/kernel-lab.sh and prints its markdown table and goal checks
# (a copy goes to target/bench-scale.md). The lab cannot write to the host, so
# the results come back as a `results:` line of JSON: they are saved to
# target/bench-scale.json and plotted to docs/bench-scale.png here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = "--in-lab" ]; then
  shift
  echo "# kube-ipvs scale benchmark ($(uname -r), $(nproc) vCPU under qemu TCG, $(date -u +%Y-%m-%d))"
  echo
  exec target/release/examples/bench_scale "$@"
fi

cargo build --release --locked --bin kube-ipvs --example bench_scale
mkdir -p target docs
status=0
name=bench-scale; lab_args=()
if [[ " $* " == *" --api "* ]]; then
  name=bench-scale-api; lab_args=(--net)
  was_up=0
  scripts/control-plane.sh status && was_up=1
  eval "$(scripts/control-plane.sh up)"
  [ "$was_up" = 1 ] || trap 'scripts/control-plane.sh down' EXIT
  export KUBE_IPVS_CP_KUBECONFIG=$KUBECONFIG_KUBE_IPVS_GUEST KUBE_IPVS_CP_ADMIN_KUBECONFIG=$KUBECONFIG_ADMIN_GUEST
fi
scripts/kernel-lab.sh "${lab_args[@]}" --memory "${BENCH_SCALE_MEMORY:-4G}" --timeout "${BENCH_SCALE_TIMEOUT:-5400}" -- \
  scripts/bench-scale.sh --in-lab "$@" | tee "target/$name.md" || status=$?
# The last results line holds every size measured, even if a later one failed.
json=$(sed -n 's/^results: //p' "target/$name.md" | tail -1)
if [ -n "$json" ]; then
  printf '%s\n' "$json" >"target/$name.json"
  target/release/examples/bench_scale plot "target/$name.json" "docs/$name.png" >/dev/null
  echo "plot: docs/$name.png; results: target/$name.json"
else
  echo "bench-scale.sh: no results came back" >&2
  status=1
fi
exit "$status"
