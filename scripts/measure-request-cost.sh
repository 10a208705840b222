#!/usr/bin/env bash
# Where a single send's CPU goes, measured on `mailroom serve` as users run it (a fresh redb
# file, request logs and rate limits on, the worker relaying to postfix's `smtp-sink`): `wrk`
# drives each request below from 64 connections for SECONDS, and the server's own CPU time
# (utime + stime from /proc, so the client's share is not counted) is divided by the requests
# it answered: during the run, and until the server is idle again (the worker has relayed
# every email the step accepted; a batch run accepts faster than one process delivers).
# Each request adds work to the HTTP exchange (the second's store read is its own; the POSTs
# do not read the store before they write):
#   - health:       GET /health (no key, no body, no store): the HTTP exchange;
#   - unknown_id:   GET /emails/<an id never given> with a key: authentication, the request
#                   log, one store read, a 404;
#   - invalid_from: POST /emails of the 2 KB email with a bad `from`: the body read, logged
#                   (redacted) and parsed, the email validated, a 422;
#   - single:       POST /emails of the 2 KB email: accepted (one write, a group commit),
#                   then rendered and relayed by the worker;
#   - batch:        POST /emails/batch of 100 such emails from 4 connections, per email.
# Prints one JSON line. Needs wrk and smtp-sink (/usr/sbin).
# Usage: ./scripts/measure-request-cost.sh [SECONDS]   (default 5)
# MAILROOM_BIN=path runs that build of the binary instead (to compare two builds alternately).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
bin="${MAILROOM_BIN:-target/release/mailroom}"
[ -n "${MAILROOM_BIN:-}" ] || cargo build --release --quiet --bin mailroom
dir="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
api="$(free_port)"
sink="$(free_port)"
/usr/sbin/smtp-sink -u "$(id -un)" -c "127.0.0.1:$sink" 1000 >/dev/null &
pids+=($!)
key="re_measure_request_cost_key"
cat >"$dir/serve.toml" <<EOF
[server]
listen = "127.0.0.1:$api"
[database]
path = "$dir/db.redb"
[[api_keys]]
name = "measure"
token = "$key"
permission = "full_access"
[delivery]
relay = "smtp://127.0.0.1:$sink"
[rate_limits]
per_key = 1000000
per_account = 1000000
unauthenticated_per_ip = 1000000
EOF

python3 - "$dir" <<'EOF'
import json, sys
d = sys.argv[1]
html = "<p>" + "Hello there, this is a benchmark email body. " * 44 + "</p>"
email = {"from": "bench@acme.test", "to": ["a@example.com"], "subject": "hi", "html": html}
json.dump(email, open(f"{d}/single.json", "w"))
json.dump(dict(email, **{"from": "not an address"}), open(f"{d}/invalid.json", "w"))
json.dump([email] * 100, open(f"{d}/batch.json", "w"))
EOF
lua() { # name method path [body file]
  {
    echo "wrk.method = \"$2\""
    echo "wrk.path = \"$3\""
    echo "wrk.headers[\"Authorization\"] = \"Bearer $key\""
    echo "wrk.headers[\"Content-Type\"] = \"application/json\""
    if [ -n "${4:-}" ]; then echo "local f = io.open(\"$4\"); wrk.body = f:read(\"*a\"); f:close()"; fi
  } >"$dir/$1.lua"
}
lua health GET /health
lua unknown_id GET /emails/0192d0c0-0000-7000-8000-000000000000
lua invalid_from POST /emails "$dir/invalid.json"
lua single POST /emails "$dir/single.json"
lua batch POST /emails/batch "$dir/batch.json"

"$bin" serve --config "$dir/serve.toml" >"$dir/serve.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$api/health" && break
  sleep 0.1
done
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
hz="$(getconf CLK_TCK)"
# Until the server is idle (the worker has relayed what the step accepted).
settle() {
  for _ in $(seq 120); do
    local a b
    a="$(ticks)"
    sleep 0.5
    b="$(ticks)"
    [ $((b - a)) -le 2 ] && return
  done
}
results=()
for name in health unknown_id invalid_from single batch; do
  conns=64
  per=1
  if [ "$name" = batch ]; then conns=4; per=100; fi
  before="$(ticks)"
  requests="$(wrk -t2 -c"$conns" -d"${secs}s" -s "$dir/$name.lua" "http://127.0.0.1:$api" | awk '/requests in/ {print $1}')"
  during="$(ticks)"
  # What its emails still cost after the run (the worker relaying the backlog) is the step's too.
  settle
  after="$(ticks)"
  results+=("$name $requests $((during - before)) $((after - before)) $per")
done
python3 - "$hz" "$secs" "${results[@]}" <<'EOF'
import json, sys
hz, secs = int(sys.argv[1]), float(sys.argv[2])
out = {"store": "redb (durable)", "seconds": secs}
for row in sys.argv[3:]:
    name, requests, during, until_idle, per = row.split()
    requests, during, until_idle, per = int(requests), int(during), int(until_idle), int(per)
    unit = "email" if per > 1 else "request"
    us = lambda ticks: round(ticks / hz * 1e6 / max(requests * per, 1), 1)
    out[name] = {f"{unit}s_per_second": round(requests * per / secs),
                 f"server_cpu_us_per_{unit}_during_run": us(during),
                 f"server_cpu_us_per_{unit}_until_idle": us(until_idle)}
print(json.dumps(out))
EOF
