#!/usr/bin/env bash
# Fuzzes every parser of outside input: each cargo-fuzz target of fuzz/ runs
# for SECONDS (default 60) on its seed corpus, built with overflow checks and
# debug assertions on (fuzz/Cargo.toml's release profile, `cargo fuzz build -a`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # all targets when none is named
#
# Prints per target the executions done and whether it crashed (with the
# artifact to reproduce it: `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET ARTIFACT`),
# and exits non-zero if any target crashed, timed out, ran out of memory or did not run.
# New inputs go to fuzz/corpus-run/TARGET (not committed); the seeds in
# fuzz/corpus/TARGET are only read. Installs cargo-fuzz if it is missing.
#
# Environment: CARGO_LOCK=FILE flocks FILE around each cargo command (shared
# build machines); FUZZ_RSS_MB (default 2048) and FUZZ_TIMEOUT (seconds per
# input, default 10) are libFuzzer's -rss_limit_mb and -timeout; FUZZ_RUNS=N
# (libFuzzer's -runs) ends a target after N executions, before SECONDS if it
# gets there first (the long run: FUZZ_RUNS=10000000 scripts/fuzz.sh 7200);
# FUZZ_SANITIZER (default address) is cargo fuzz's --sanitizer: `none` keeps
# the debug assertions and overflow checks and drops AddressSanitizer, for
# targets whose path is safe Rust and runs several times faster without it
# (the manifests target: 7,500 runs/s against 900), built in fuzz/target-none.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

secs=${1:-60}
shift || true
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || {
  echo "fuzz.sh: SECONDS must be a positive integer, got '$secs'" >&2
  exit 2
}

cargo_locked() {
  if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" cargo "$@"; else cargo "$@"; fi
}

# cargo fuzz passes nightly-only flags (-Zsanitizer=address); only stable Rust
# is installed, and RUSTC_BOOTSTRAP lets it accept them.
export RUSTC_BOOTSTRAP=1
# The fuzz workspace has its own target dir (fuzz/target): its sanitizer build
# shares nothing with the main crate's.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo_locked install --locked cargo-fuzz --version 0.13.2
fi

san=${FUZZ_SANITIZER:-address}
case "$san" in
  address) tdir=target ;;
  none | memory | thread | leak) tdir=target-$san ;;
  *) echo "fuzz.sh: FUZZ_SANITIZER must be address, none, memory, thread or leak, got '$san'" >&2; exit 2 ;;
esac
echo "==> building the fuzz targets (release, debug assertions and overflow checks on, sanitizer: $san)"
start=$SECONDS
cargo_locked fuzz build -a -s "$san" --target-dir "$tdir"
echo "built in $((SECONDS - start)) s"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

bin=$tdir/x86_64-unknown-linux-gnu/release
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
summary=()
for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || { echo "fuzz.sh: no such target '$t' (cargo fuzz list)" >&2; exit 2; }
  mkdir -p "corpus-run/$t" "artifacts/$t" "corpus/$t"
  echo "==> $t: ${secs} s"
  set +e
  "$bin/$t" -max_total_time="$secs" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
    -timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} \
    -artifact_prefix="artifacts/$t/" "corpus-run/$t" "corpus/$t" >"$logs/$t" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -1)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t" | tail -1)
  if [ "$rc" = 0 ] && [ -n "$execs" ]; then
    summary+=("$(printf '%-16s %12s execs  0 crashes' "$t" "$execs")")
  else
    failed=1
    summary+=("$(printf '%-16s %12s execs  FAILED (exit %s) %s' "$t" "${execs:-?}" "$rc" "${artifact:+artifact fuzz/$artifact}")")
    # The panic or sanitizer report, then libFuzzer's summary.
    grep -E -A12 "panicked at|ERROR: (AddressSanitizer|libFuzzer)|==[0-9]+== ERROR" "$logs/$t" | head -40 || true
    tail -5 "$logs/$t"
  fi
done

echo
echo "==> fuzz summary (${secs} s per target)"
printf '%s\n' "${summary[@]}"
if [ "$failed" != 0 ]; then
  echo "fuzz.sh: a target failed; reproduce with: cd fuzz && $bin/TARGET ARTIFACT" >&2
  exit 1
fi
