#!/usr/bin/env bash
# Builds every fuzz target and runs each for a few seconds on its seeds, so that a target
# that no longer builds, or an invariant that a new change breaks, fails CI.
# Usage: ./scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# -s none: no sanitizer, so stable Rust builds the targets.
cargo fuzz build -s none
for target in $(cargo fuzz list); do
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  mkdir -p "fuzz/corpus/$target"
  echo "fuzz smoke: $target (${seconds}s)"
  cargo fuzz run -s none "$target" "fuzz/corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -print_final_stats=0 2>&1 | tail -n 2
done
