#!/usr/bin/env bash
# Runs each fuzz target for a given number of seconds (default 60): `fuzz/run.sh 600`.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; where only a stable
# one exists, RUSTC_BOOTSTRAP=1 lets it accept the sanitizer flags.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
for target in frame_decoder handshake_decoder; do
  mkdir -p "corpus/$target"
  echo "== $target for ${seconds}s"
  cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
