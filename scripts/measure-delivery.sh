#!/usr/bin/env bash
# Durable delivery against postfix's smtp-source, measured in one run on one machine:
#   - ingest N benchmark emails (2 KB html, 2 recipients) into a redb file, once;
#   - then ROUNDS times, alternating: `mailroom work --until-idle --smtp … --connections 8`
#     on a fresh copy of that file, relaying to `smtp-sink`; and `smtp-source -d -s 8` sending
#     N messages of the same size, 2 recipients each, to the same sink.
# Prints each round's rates and the ratio of the medians. Alternating rounds spread the
# machine's noise over both sides. Needs postfix's smtp-sink/smtp-source (/usr/sbin).
# Usage: ./scripts/measure-delivery.sh [EMAILS] [ROUNDS]   (default 20000 5)
set -euo pipefail
cd "$(dirname "$0")/.."
emails="${1:-20000}"
rounds="${2:-5}"
port="${PORT:-25125}"
cargo build --release --quiet --bin mailroom --example ingest
dir="$(mktemp -d)"
sink=""
trap '[ -n "$sink" ] && kill "$sink" 2>/dev/null; rm -rf "$dir"' EXIT
# Another server on the port would share its connections with this one's sink: a second
# smtp-sink on a port starts and listens beside the first (both take connections), so the
# figures would measure both.
if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$port" 2>/dev/null; then
  echo "something already listens on 127.0.0.1:$port; stop it or set PORT" >&2
  exit 1
fi
/usr/sbin/smtp-sink -u "$(id -un)" -c "127.0.0.1:$port" 1000 >/dev/null &
sink=$!

target/release/examples/ingest --db "$dir/base.redb" --emails "$emails" >"$dir/ingest.json"
# smtp-source sends messages of the size the worker hands over: one benchmark email rendered
# by the sandbox transport, which keeps a copy in the outbox folder beside the file (headers,
# the html and the text part derived from it).
target/release/examples/ingest --db "$dir/probe.redb" --emails 1 >/dev/null
target/release/mailroom work --db "$dir/probe.redb" --until-idle >/dev/null
size=$(find "$dir/probe.redb.outbox" -type f -printf '%s\n' | head -n 1)
[ -n "$size" ] || { echo "the probe rendered nothing" >&2; exit 1; }
echo "rendered size: $size bytes" >&2

seconds() { python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$@"; }
work=()
source=()
for round in $(seq "$rounds"); do
  cp "$dir/base.redb" "$dir/run.redb"
  # The copy's dirty pages must not be written back during the measured run.
  sync
  start=$(date +%s.%N)
  target/release/mailroom work --db "$dir/run.redb" --until-idle --smtp "smtp://127.0.0.1:$port" \
    --connections 8 >"$dir/work.json"
  end=$(date +%s.%N)
  handed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['handed_over'])" "$dir/work.json")
  [ "$handed" = "$emails" ] || { echo "round $round handed over $handed of $emails" >&2; exit 1; }
  work+=("$(python3 -c "print(round($emails / $(seconds "$start" "$end")))")")

  start=$(date +%s.%N)
  /usr/sbin/smtp-source -d -s 8 -l "$size" -r 2 -m "$emails" -f bench@acme.test -t a@example.com \
    "127.0.0.1:$port" >/dev/null
  end=$(date +%s.%N)
  source+=("$(python3 -c "print(round($emails / $(seconds "$start" "$end")))")")
  echo "round $round: mailroom work ${work[-1]}/s, smtp-source ${source[-1]}/s" >&2
done

python3 - "${work[*]}" "${source[*]}" "$emails" <<'EOF'
import json, statistics, sys
work = [int(x) for x in sys.argv[1].split()]
source = [int(x) for x in sys.argv[2].split()]
w, s = statistics.median(work), statistics.median(source)
print(json.dumps({"emails": int(sys.argv[3]), "store": "redb (durable)", "mailroom_work_per_second": work,
                  "smtp_source_per_second": source, "median_ratio": round(w / s, 2)}))
EOF
