#!/usr/bin/env bash
# The project's one test command:
#   1. cargo fmt --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. native cargo test --workspace (kernel tests show as ignored here)
#   4. a fuzz smoke: every fuzz target for KUBE_IPVS_FUZZ_SECONDS (default 10) s (scripts/fuzz.sh)
#   5. a real control plane (scripts/control-plane.sh up, built by
#      scripts/k8s-fixtures.sh if not cached) and its selftest; it stays up,
#      with its agent, for the kernel suite's control-plane tests, and goes
#      down at the end (unless it was up before)
#   6. the kernel suite, in the lab (scripts/kernel-lab.sh --net, so the guest
#      reaches the control plane as 10.0.2.2), one VM boot per kernel of the
#      matrix: KUBE_IPVS_TEST_KERNELS (default "6.1 6.12", the newest Debian
#      kernel of each line; see kernel-lab.sh --kernel)
# It fails if the kernel suite did not run, failed or executed zero tests on
# any kernel of the matrix; tests/kernel_control_plane.rs fails, never skips,
# without the control plane.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check   # the fuzz workspace is separate

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace (native)"
cargo test --workspace --locked

step "fuzz smoke: every target for ${KUBE_IPVS_FUZZ_SECONDS:-10} s (scripts/fuzz.sh)"
# Builds the fuzz workspace (installing cargo-fuzz if needed); fails on any crash.
scripts/fuzz.sh "${KUBE_IPVS_FUZZ_SECONDS:-10}"

step "real control plane: scripts/control-plane.sh up and selftest"
# etcd, kube-apiserver and the EndpointSlice controller from upstream; the
# selftest fails if the controller writes no slice or kube-ipvs's
# ServiceAccount can do more or less than deploy/rbac.yaml says.
log=$(mktemp)
cp_was_up=0; agent_pid=
scripts/control-plane.sh status && cp_was_up=1
finish() {
  rm -f "$log"
  [ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null || true
  [ "$cp_was_up" = 1 ] || scripts/control-plane.sh down || true
}
trap finish EXIT
eval "$(scripts/control-plane.sh up)"
scripts/control-plane.sh selftest
# The guest asks the host for control-plane outages through the agent.
scripts/control-plane.sh agent 2>"$(dirname "$KUBECONFIG_ADMIN")/logs/agent.log" &
agent_pid=$!
export KUBE_IPVS_CP_KUBECONFIG=$KUBECONFIG_KUBE_IPVS_GUEST
export KUBE_IPVS_CP_ADMIN_KUBECONFIG=$KUBECONFIG_ADMIN_GUEST
export KUBE_IPVS_CP_AGENT=10.0.2.2:${KUBE_IPVS_CP_AGENT_PORT:-16480}
# Upstream kube-proxy, for the differential tests (tests/kernel_upstream_parity.rs).
KUBE_IPVS_CP_KUBE_PROXY="$(scripts/k8s-fixtures.sh --print-dir)/kube-proxy"
export KUBE_IPVS_CP_KUBE_PROXY

step "building the kernel test binaries"
# Kernel tests live in test targets named kernel_*; collect their executables.
# Built into a file first: a build error must fail here, not shrink the list
# (a process substitution would hide cargo's exit status).
build_json=$(mktemp)
if ! cargo test --workspace --locked --no-run --message-format=json >"$build_json" 2>"$build_json.err"; then
  cat "$build_json.err" >&2
  echo "test.sh: building the test binaries failed" >&2
  exit 1
fi
mapfile -t bins < <(python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and t.get("kind") == ["test"] and t.get("name", "").startswith("kernel") and m.get("executable"):
        print(m["executable"])
' <"$build_json")
rm -f "$build_json" "$build_json.err"
[ ${#bins[@]} -gt 0 ] || { echo "test.sh: no kernel test targets (tests/kernel_*.rs) were built" >&2; exit 1; }
# Every kernel test file must have produced its binary.
for f in tests/kernel_*.rs; do
  t=$(basename "$f" .rs)
  printf '%s\n' "${bins[@]}" | grep -q "/$t-[0-9a-f]*$" || { echo "test.sh: no test binary for $f" >&2; exit 1; }
done
printf '  %s\n' "${bins[@]}"

IFS=", " read -ra kernels <<<"${KUBE_IPVS_TEST_KERNELS:-6.1 6.12}"
[ ${#kernels[@]} -gt 0 ] || { echo "test.sh: KUBE_IPVS_TEST_KERNELS names no kernel" >&2; exit 1; }
summaries=(); bad=0; ki=0
for k in "${kernels[@]}"; do
  step "kernel suite in the lab on kernel $k"
  t0=$(date +%s)
  # The differential test against upstream kube-proxy: examples/manifests and
  # two seeded cluster states per kernel, other seeds on each kernel
  # (scripts/compare-upstream.sh --seeds runs any others).
  export KUBE_IPVS_COMPARE_SEEDS=${KUBE_IPVS_TEST_SEEDS:-$((2 * ki + 1)),$((2 * ki + 2))}
  ki=$((ki + 1))
  set +e
  scripts/kernel-lab.sh --net --kernel "$k" --timeout "${KUBE_IPVS_LAB_TIMEOUT:-1800}" -- scripts/kernel-suite.sh "${bins[@]}" 2>&1 | tee "$log"
  lab_rc=${PIPESTATUS[0]}
  set -e
  secs=$(( $(date +%s) - t0 ))
  took="$((secs / 60)) min $((secs % 60)) s"
  # kernel-suite.sh names the kernel it ran on; a lab that never booted did not.
  kver=$(sed -n 's/^kernel suite on \(.*\)$/\1/p' "$log" | head -1)
  summary=$(grep -E '^kernel suite: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
  if [ -z "$summary" ]; then
    echo "test.sh: the kernel suite did not run on kernel $k (lab exit status $lab_rc): this is a failure, not a skip" >&2
    summaries+=("kernel $k: did not run (lab exit status $lab_rc, $took)"); bad=1
    continue
  fi
  executed=$(sed -E 's/kernel suite: ([0-9]+) passed, ([0-9]+) failed/\1+\2/' <<<"$summary")
  executed=$((executed))
  echo "kernel tests executed inside the lab on ${kver:-$k}: $executed"
  if [ "$lab_rc" != 0 ] || [ "$executed" = 0 ]; then
    echo "test.sh: kernel suite failed on ${kver:-$k} (lab exit status $lab_rc, $executed tests executed)" >&2
    summaries+=("kernel ${kver:-$k}: FAILED, ${summary#kernel suite: }, lab exit status $lab_rc, $took"); bad=1
  else
    summaries+=("kernel ${kver:-$k}: ${summary#kernel suite: }, $took")
  fi
done
step "kernel matrix"
printf '%s\n' "${summaries[@]}"
exit "$bad"
