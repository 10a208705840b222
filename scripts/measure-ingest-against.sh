#!/usr/bin/env bash
# Ingest through the batch path (the `ingest` example: `Engine::send_batch` of 100-email
# batches on a durable redb file), this tree's build against another revision's, alternated
# in one run so that the machine's noise falls on both. Prints each round and the ratio of
# the medians (this tree over the other).
#   ./scripts/measure-ingest-against.sh [REV] [EMAILS] [ROUNDS]   (default 375776b 100000 3)
# 375776b is the last commit before the store's group commit and compression: the build the
# "not slower than today" goal of the durable-path issue was set against.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-375776b}"
emails="${2:-100000}"
rounds="${3:-3}"
work="$(mktemp -d)"
trap 'git worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/tree" "$rev" >/dev/null
# The other revision's build is kept under target/ (ignored by git), so a second run reuses it.
other_target="$PWD/target/against-$rev"
(cd "$work/tree" && CARGO_TARGET_DIR="$other_target" cargo build --release --quiet --example ingest)
cargo build --release --quiet --example ingest
cp target/release/examples/ingest "$work/ingest-this"
cp "$other_target/release/examples/ingest" "$work/ingest-other"
for r in $(seq "$rounds"); do
  for side in this other; do
    rm -f "$work/$side.redb"*
    sync
    rate=$("$work/ingest-$side" --db "$work/$side.redb" --emails "$emails" 2>/dev/null \
      | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["emails_per_second"])')
    bytes=$(stat -c %s "$work/$side.redb")
    echo "round $r: $side $rate emails/s, file $((bytes / emails)) B per email"
  done
done | tee "$work/rounds.txt"
python3 - "$work/rounds.txt" "$rev" <<'PY'
import re, statistics, sys
rates = {"this": [], "other": []}
for line in open(sys.argv[1]):
    m = re.match(r"round \d+: (this|other) (\d+)", line)
    if m:
        rates[m.group(1)].append(int(m.group(2)))
this, other = statistics.median(rates["this"]), statistics.median(rates["other"])
print(f"median: this tree {this:.0f} emails/s, {sys.argv[2]} {other:.0f}: {this / other:.2f} x")
PY
