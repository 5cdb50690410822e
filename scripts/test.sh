#!/usr/bin/env bash
# The project's one test command:
#   1. cargo fmt --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. native cargo test --workspace (kernel tests show as ignored here)
#   4. a fuzz smoke: every fuzz target for KUBE_IPVS_FUZZ_SECONDS (default 10) s (scripts/fuzz.sh)
#   5. the real control plane's selftest (scripts/control-plane.sh selftest, about 10 s
#      once scripts/k8s-fixtures.sh has built the binaries)
#   6. the kernel suite, in the lab (scripts/kernel-lab.sh), in one VM boot
# It fails if the kernel suite did not run or executed zero tests.
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

step "kernel suite in the lab"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
scripts/kernel-lab.sh --timeout "${KUBE_IPVS_LAB_TIMEOUT:-1500}" -- scripts/kernel-suite.sh "${bins[@]}" 2>&1 | tee "$log"
lab_rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^kernel suite: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
if [ -z "$summary" ]; then
  echo "test.sh: the kernel suite did not run (lab exit status $lab_rc): this is a failure, not a skip" >&2
  exit 1
fi
executed=$(sed -E 's/kernel suite: ([0-9]+) passed, ([0-9]+) failed/\1+\2/' <<<"$summary")
executed=$((executed))
echo "kernel tests executed inside the lab: $executed"
if [ "$lab_rc" != 0 ] || [ "$executed" = 0 ]; then
  echo "test.sh: kernel suite failed (lab exit status $lab_rc, $executed tests executed)" >&2
  exit 1
fi
echo "${summary#kernel suite: }" | sed 's/^/kernel: /'
