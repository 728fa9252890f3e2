#!/usr/bin/env bash
# Runs each fuzz target for a number of seconds (default 60): `fuzz/run.sh 600`; CI runs
# `fuzz/run.sh 15`. The targets are built with libFuzzer's coverage instrumentation by plain
# cargo on the stable toolchain (no cargo-fuzz, no nightly: Rust code needs no sanitizer to
# show a panic or an out-of-bounds access, which abort the run with the input saved).
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
targets=(${FUZZ_TARGETS:-frame_decoder handshake_decoder wire_messages object_envelope arena_header})
# An explicit --target keeps the instrumentation off build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --quiet --target "$host" $(printf -- '--bin %s ' "${targets[@]}")
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "== $target for ${seconds}s"
  log="artifacts/$target/last-run.log"
  if "$CARGO_TARGET_DIR/$host/release/$target" "corpus/$target" -artifact_prefix="artifacts/$target/" \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" || tail -n 3 "$log"
  else
    cat "$log"
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
