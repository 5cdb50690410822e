#!/usr/bin/env bash
# Kernel benchmarks, in one lab boot: ours against the standard tools, as ratios
# measured in the same boot (TCG timings are slow and noisy; ratios and message
# and syscall counts are what carry over).
#
#   scripts/bench-kernel.sh [--sizes 1000,10000]
#
# Runs the release examples bench_ipvs, bench_ipset and bench_addr inside
# scripts/kernel-lab.sh and prints their tables; a copy goes to
# target/bench-kernel.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sizes=1000,10000
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes=${2:?--sizes needs a list like 1000,10000}; shift 2 ;;
    --in-lab) shift; break ;;
    *) echo "bench-kernel.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done

if [ "${KUBE_IPVS_LAB:-}" = "" ]; then
  benches=()
  for b in bench_ipvs bench_ipset bench_addr; do
    [ -f "examples/$b.rs" ] && benches+=("$b")
  done
  [ ${#benches[@]} -gt 0 ] || { echo "bench-kernel.sh: no benchmark examples found" >&2; exit 1; }
  cargo build --release --locked $(printf -- '--example %s ' "${benches[@]}")
  mkdir -p target
  scripts/kernel-lab.sh --memory 4G --timeout 5400 -- \
    scripts/bench-kernel.sh --in-lab "$sizes" "${benches[@]}" | tee target/bench-kernel.md
  exit "${PIPESTATUS[0]}"
fi

# Inside the lab.
sizes=$1; shift
echo "# kube-ipvs kernel benchmarks ($(uname -r), $(nproc) vCPU, TCG, $(date -u +%Y-%m-%d))"
echo
status=0
for b in "$@"; do
  target/release/examples/"$b" --sizes "$sizes" || { echo "bench-kernel.sh: $b failed" >&2; status=1; }
  echo
done
exit "$status"
