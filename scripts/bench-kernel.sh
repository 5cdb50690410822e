#!/usr/bin/env bash
# Kernel benchmarks, in one lab boot: ours against the standard tools, as ratios
# measured in the same boot (TCG timings are slow and noisy; ratios and message
# and syscall counts are what carry over).
#
#   scripts/bench-kernel.sh [--kernel K]
#
# Builds the release examples bench_ipvs (IPVS vs ipvsadm), bench_ipset (ipset
# vs `ipset restore` and one process per entry) and bench_addr (kube-ipvs0
# addresses vs `ip -batch`), runs them all inside one scripts/kernel-lab.sh
# boot, and prints their tables; a copy goes to target/bench-kernel.md, or
# target/bench-kernel-K.md for --kernel K (stock, a line such as 6.12, or a
# version: see kernel-lab.sh --kernel; KUBE_IPVS_LAB_KERNEL works too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" != "--in-lab" ]; then
  out=target/bench-kernel.md
  case "${1:-}" in
    --kernel)
      export KUBE_IPVS_LAB_KERNEL=${2:?--kernel needs stock, a line like 6.12, or a version}
      out=target/bench-kernel-$KUBE_IPVS_LAB_KERNEL.md ;;
    "") ;;
    *) echo "bench-kernel.sh: unknown argument '$1' (usage: bench-kernel.sh [--kernel K])" >&2; exit 2 ;;
  esac
  benches=()
  for b in bench_ipvs bench_ipset bench_addr; do
    [ -f "examples/$b.rs" ] && benches+=("$b")
  done
  [ ${#benches[@]} -gt 0 ] || { echo "bench-kernel.sh: no benchmark examples found" >&2; exit 1; }
  cargo build --release --locked --bin kube-ipvs $(printf -- '--example %s ' "${benches[@]}")
  mkdir -p target
  scripts/kernel-lab.sh --memory 4G --timeout 5400 -- \
    scripts/bench-kernel.sh --in-lab "${benches[@]}" | tee "$out"
  exit "${PIPESTATUS[0]}"
fi

# Inside the lab: each example uses its own defaults (the sizes the issues ask for).
shift
echo "# kube-ipvs kernel benchmarks ($(uname -r), $(nproc) vCPU under qemu TCG, $(date -u +%Y-%m-%d))"
echo
status=0
for b in "$@"; do
  target/release/examples/"$b" || { echo "bench-kernel.sh: $b failed" >&2; status=1; }
  echo
done
exit "$status"
