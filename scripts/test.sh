#!/usr/bin/env bash
# Runs every test mailroom has, installing what the tests need first.
# Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond the Rust toolchain: real SMTP and DNS peers (Debian's postfix
# for smtp-sink, smtp-source and a loopback postfix; dnsmasq; openssl for test certificates;
# systemd-analyze for the unit in deploy/; curl for the TLS test; headless Chromium and
# chromedriver for the dashboard's browser tests and the share page's hostile-email test;
# swaks for the inbound listener; PostgreSQL for the Postgres store's tests), aiosmtpd and
# the official SDKs (PyPI resend 2.x, npm resend 6.x, at the versions their lockfiles pin),
# and cargo-fuzz for the fuzz smoke.
# Installed only when missing.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
missing=""
for tool in smtp-sink:postfix smtp-source:postfix postfix:postfix dnsmasq:dnsmasq-base openssl:openssl python3:python3 node:nodejs npm:npm systemd-analyze:systemd curl:curl chromium:chromium chromedriver:chromium-driver swaks:swaks; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || missing="$missing ${tool##*:}"
done
# PostgreSQL's programs live outside PATH on Debian: the Postgres store's tests start their own
# throw-away cluster with them.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing="$missing postgresql"
if [ -n "$missing" ]; then
  # The package must not configure or start a system-wide postfix: the tests run their own.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing python3-pip >/dev/null
fi
pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
# aiosmtpd and the official Python SDK, exactly as tests/requirements.txt pins them (hashes).
pip_install --require-hashes -r tests/requirements.txt
# The official Node SDK, exactly as tests/sdk/package-lock.json pins it.
want=$(node -p 'require("./tests/sdk/package-lock.json").packages["node_modules/resend"].version')
have=$(node -p 'try { require("./tests/sdk/node_modules/resend/package.json").version } catch { "" }')
[ "$want" = "$have" ] || npm ci --silent --no-audit --no-fund --prefix tests/sdk >/dev/null

# One build from scratch: incremental caches would only take disk (several GB) and time.
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The fuzz targets build into their own folder; what the debug build cached for later
# rebuilds is not needed by them, and the disk may be small.
rm -rf target/debug/incremental
# Every fuzz target builds and runs a few seconds without breaking its invariants.
./scripts/fuzz-smoke.sh 5
