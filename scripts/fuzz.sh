#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets in fuzz/ for a given time each.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60
#   TARGET...           default: every target (`cargo fuzz list`)
#
# Builds with cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# flags; no sanitizer, since Rust code needs none to catch what matters here: panics and, with
# the fuzz profile's overflow checks and debug assertions, arithmetic overflow). Each target
# runs in one process (one core), grows fuzz/corpus/TARGET/ with the new inputs it finds, and
# writes any crash to fuzz/artifacts/TARGET/. Exits non-zero when a target crashed; copy each
# crash to fuzz/artifacts-regressions/TARGET/ once fixed, so the test suite replays it.
# Environment: FUZZ_ARGS adds libFuzzer options (e.g. FUZZ_ARGS="-max_len=65536").
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
flags=(--sanitizer none --release --debug-assertions)
cd fuzz
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build "${flags[@]}"

crashed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "=== $t: ${secs}s" >&2
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of options
  if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 ${FUZZ_ARGS:-} 2>&1 | tee "artifacts/$t/last-run.log" >&2; then
    crashed+=("$t")
  fi
  # tee hides the fuzzer's status; a crash leaves its input in artifacts/
  if ls "artifacts/$t" | grep -qE '^(crash|oom|timeout|leak)-'; then
    crashed+=("$t")
  fi
done

if [ "${#crashed[@]}" -gt 0 ]; then
  echo "crashes in: $(printf '%s\n' "${crashed[@]}" | sort -u | tr '\n' ' ')(see fuzz/artifacts/)" >&2
  exit 1
fi
echo "no crashes in ${#targets[@]} targets (${secs}s each)" >&2
