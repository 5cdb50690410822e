#!/usr/bin/env bash
# The packet path at scale (#16 point 5), in one lab boot: new-connection
# latency (p50, p99), connections per second and echo throughput to one
# ClusterIP with 10 Services programmed and with 10,000, for the iptables-nft
# and iptables-legacy backends, as ratios from the same boot
# (benches/packet_path.rs says how).
#
#   scripts/bench-packets.sh [--kernel K] [--services N]
#
# Prints a markdown table; a copy goes to target/bench-packets.md (or
# target/bench-packets-K.md for --kernel K).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=target/bench-packets.md
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) export KUBE_IPVS_LAB_KERNEL=${2:?--kernel needs stock, a line like 6.12, or a version}
              out=target/bench-packets-$2.md; shift 2 ;;
    --services) export KUBE_IPVS_BENCH_SERVICES=${2:?--services needs a count}; shift 2 ;;
    *) echo "bench-packets.sh: unknown argument '$1' (usage: bench-packets.sh [--kernel K] [--services N])" >&2; exit 2 ;;
  esac
done
# The bench binary's path, from cargo's own report of what it built.
bin=$(cargo bench --locked --bench packet_path --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "packet_path" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "bench-packets.sh: building benches/packet_path.rs failed (cargo bench --bench packet_path --no-run)" >&2; exit 1; }
mkdir -p target
{
  echo "# packet path at scale ($(date -u +%Y-%m-%d), 2 vCPUs under qemu TCG)"
  echo
  scripts/kernel-lab.sh --memory 3G --timeout 3600 -- \
    bash -c 'echo "kernel $(uname -r)"; echo; KUBE_IPVS_KERNEL_TESTS=1 "$0"' "$bin"
} | tee "$out"
exit "${PIPESTATUS[0]}"
