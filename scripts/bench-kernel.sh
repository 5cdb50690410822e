#!/usr/bin/env bash
# Kernel benchmarks, in one lab boot: ours against the standard tools, as ratios
# measured in the same boot (TCG timings are slow and noisy; ratios and message
# and syscall counts are what carry over).
#
#   scripts/bench-kernel.sh
#
# Builds the release examples bench_ipvs (IPVS vs ipvsadm), bench_ipset (ipset
# vs `ipset restore` and one process per entry) and bench_addr (kube-ipvs0
# addresses vs `ip -batch`), runs them all inside one scripts/kernel-lab.sh
# boot, and prints their tables; a copy goes to target/bench-kernel.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" != "--in-lab" ]; then
  benches=()
  for b in bench_ipvs bench_ipset bench_addr; do
    [ -f "examples/$b.rs" ] && benches+=("$b")
  done
  [ ${#benches[@]} -gt 0 ] || { echo "bench-kernel.sh: no benchmark examples found" >&2; exit 1; }
  cargo build --release --locked $(printf -- '--example %s ' "${benches[@]}")
  mkdir -p target
  scripts/kernel-lab.sh --memory 4G --timeout 5400 -- \
    scripts/bench-kernel.sh --in-lab "${benches[@]}" | tee target/bench-kernel.md
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
