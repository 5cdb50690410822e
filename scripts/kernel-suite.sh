#!/usr/bin/env bash
# Runs the kernel test binaries given as arguments (inside the lab) and sums
# their results. Kernel tests are the #[ignore]d ones; this runs exactly those.
#
#   scripts/kernel-lab.sh -- scripts/kernel-suite.sh target/debug/deps/kernel_lab-* ...
#
# Prints "kernel suite: N passed, M failed" last; fails if any test failed,
# a binary failed to run, or no test executed at all.
set -u
export KUBE_IPVS_KERNEL_TESTS=1
threads=${KUBE_IPVS_KERNEL_TEST_THREADS:-2}
passed=0; failed=0; broken=0
echo "kernel suite on $(uname -r)"
[ $# -gt 0 ] || { echo "kernel-suite: no test binaries given" >&2; echo "kernel suite: 0 passed, 0 failed"; exit 1; }
for bin in "$@"; do
  echo "== $(basename "$bin")"
  t0=$(date +%s)
  out=$(mktemp)
  "$bin" --ignored --test-threads="$threads" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  line=$(grep -E '^test result: ' "$out" | tail -1)
  rm -f "$out"
  echo "== $(basename "$bin"): $(( $(date +%s) - t0 )) s"
  if [ -z "$line" ]; then
    echo "kernel-suite: $(basename "$bin") exited $rc without a test result" >&2
    broken=$((broken + 1)); continue
  fi
  p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")
  f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  passed=$((passed + p)); failed=$((failed + f))
  [ "$rc" = 0 ] || [ "$f" -gt 0 ] || broken=$((broken + 1))
done
echo "kernel suite: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$broken" = 0 ] && [ "$passed" -gt 0 ]
