#!/usr/bin/env bash
# Differential parity with upstream kube-proxy in IPVS mode.
#
#   scripts/compare-upstream.sh [--seeds 1,2,3] [--kernel K] [MANIFEST...]
#
# Loads each MANIFEST (a file or a directory of YAML/JSON; default
# examples/manifests) and each seeded random cluster state
# (tests/common/gen_cluster.rs; default seeds 1,2,3,4; --seeds "" for none)
# into the real apiserver (scripts/control-plane.sh), then in one lab boot
# runs upstream kube-proxy v1.37.2 --proxy-mode=ipvs (scripts/k8s-fixtures.sh)
# and kube-ipvs on it, one after the other, each in a fresh network namespace
# with the same node name, node addresses and KubeProxyConfiguration. It
# compares ipvsadm -Sn, ipset save, iptables-save, ip6tables-save, kube-ipvs0's
# addresses and the sysctls each set, normalised, and prints every difference.
# It exits 0 only if each one is on the README's list ("Intended differences").
# Then it makes both proxies stale (the node's iptables refuse every write)
# and compares /healthz and /livez.
#
# The work is tests/kernel_upstream_parity.rs; scripts/test.sh runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "compare-upstream: $*" >&2; exit 1; }

seeds=1,2,3,4; kernel=${KUBE_IPVS_LAB_KERNEL:-6.1}; manifests=()
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) [ $# -ge 2 ] || die "--seeds needs a value (e.g. 1,2,3, or \"\" for none)"; seeds=$2; shift 2 ;;
    --seeds=*) seeds=${1#--seeds=}; shift ;;
    --kernel) [ $# -ge 2 ] || die "--kernel needs a value (6.1, 6.12, stock)"; kernel=$2; shift 2 ;;
    --kernel=*) kernel=${1#--kernel=}; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -e "$1" ] || die "$1: no such file or directory"
       manifests+=("$(realpath "$1")"); shift ;;
  esac
done
[ ${#manifests[@]} -gt 0 ] || manifests=("$PWD/examples/manifests")
[[ $seeds =~ ^[0-9,\ ]*$ ]] || die "--seeds takes numbers separated by commas, not '$seeds'"

scripts/k8s-fixtures.sh >/dev/null
kube_proxy="$(scripts/k8s-fixtures.sh --print-dir)/kube-proxy"
[ -x "$kube_proxy" ] || die "no kube-proxy at $kube_proxy (scripts/k8s-fixtures.sh)"

build_json=$(mktemp)
trap 'rm -f "$build_json"' EXIT
cargo test --locked --test kernel_upstream_parity --no-run --message-format=json >"$build_json" \
  || die "building tests/kernel_upstream_parity.rs failed"
bin=$(python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and (m.get("target") or {}).get("name") == "kernel_upstream_parity":
        print(m["executable"])
' <"$build_json")
[ -n "$bin" ] || die "cargo built no kernel_upstream_parity binary"

cp_was_up=0
scripts/control-plane.sh status && cp_was_up=1
trap 'rm -f "$build_json"; [ "$cp_was_up" = 1 ] || scripts/control-plane.sh down || true' EXIT
eval "$(scripts/control-plane.sh up)"
export KUBE_IPVS_CP_KUBECONFIG=$KUBECONFIG_KUBE_IPVS_GUEST
export KUBE_IPVS_CP_ADMIN_KUBECONFIG=$KUBECONFIG_ADMIN_GUEST
export KUBE_IPVS_CP_KUBE_PROXY=$kube_proxy
KUBE_IPVS_COMPARE_MANIFESTS=$(IFS=:; echo "${manifests[*]}")
export KUBE_IPVS_COMPARE_MANIFESTS KUBE_IPVS_COMPARE_SEEDS=$seeds
# --nocapture: every difference is printed, not only those of a failure.
scripts/kernel-lab.sh --net --kernel "$kernel" --timeout "${KUBE_IPVS_LAB_TIMEOUT:-2400}" -- \
  env KUBE_IPVS_KERNEL_TESTS=1 "$bin" --ignored --exact --nocapture --test-threads=1 \
  kube_ipvs_programs_the_node_as_upstream_kube_proxy_does health_goes_stale_as_upstream_s_does
