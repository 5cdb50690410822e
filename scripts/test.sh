#!/usr/bin/env bash
# The project's one test command:
#   1. cargo fmt --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. native cargo test --workspace (kernel tests show as ignored here)
#   4. a fuzz smoke: every fuzz target for KUBE_IPVS_FUZZ_SECONDS (default 10) s (scripts/fuzz.sh)
#   5. the real control plane's selftest (scripts/control-plane.sh selftest, about 10 s
#      once scripts/k8s-fixtures.sh has built the binaries)
#   6. the kernel suite, in the lab (scripts/kernel-lab.sh), one VM boot per
#      kernel of the matrix: KUBE_IPVS_TEST_KERNELS (default "6.1 6.12", the
#      newest Debian kernel of each line; see kernel-lab.sh --kernel)
# It fails if the kernel suite did not run, failed or executed zero tests on
# any kernel of the matrix.
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

step "real control plane: scripts/control-plane.sh selftest"
# etcd, kube-apiserver and the EndpointSlice controller from upstream (built by
# scripts/k8s-fixtures.sh if not cached); fails if the controller writes no
# slice or kube-ipvs's ServiceAccount can do more or less than deploy/rbac.yaml says.
scripts/control-plane.sh selftest

step "building the kernel test binaries"
# Kernel tests live in test targets named kernel_*; collect their executables.
mapfile -t bins < <(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and t.get("kind") == ["test"] and t.get("name", "").startswith("kernel") and m.get("executable"):
        print(m["executable"])
')
[ ${#bins[@]} -gt 0 ] || { echo "test.sh: no kernel test targets (tests/kernel_*.rs) were built" >&2; exit 1; }
printf '  %s\n' "${bins[@]}"

IFS=", " read -ra kernels <<<"${KUBE_IPVS_TEST_KERNELS:-6.1 6.12}"
[ ${#kernels[@]} -gt 0 ] || { echo "test.sh: KUBE_IPVS_TEST_KERNELS names no kernel" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
summaries=(); bad=0
for k in "${kernels[@]}"; do
  step "kernel suite in the lab on kernel $k"
  t0=$(date +%s)
  set +e
  scripts/kernel-lab.sh --kernel "$k" --timeout "${KUBE_IPVS_LAB_TIMEOUT:-1800}" -- scripts/kernel-suite.sh "${bins[@]}" 2>&1 | tee "$log"
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
