#!/usr/bin/env bash
# Runs every test mailroom has, installing what the tests need first.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond the Rust toolchain is installed here, as later test suites
# (real SMTP and DNS peers, the official SDKs) arrive.
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
