"""The official Python SDK's `Webhooks` against a mailroom server, with a real receiver (an
HTTP server on 127.0.0.1 started here); signatures checked with the SDK's own `verify`.
Usage: RESEND_API_URL=http://127.0.0.1:PORT KEY=re_... python3 python_webhooks.py"""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import resend
from checks import check

resend.api_key = os.environ["KEY"]
resend.api_url = os.environ["RESEND_API_URL"]
received = []




class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        received.append((dict((k.lower(), v) for k, v in self.headers.items()), body))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
endpoint = f"http://127.0.0.1:{server.server_address[1]}/in"


def wait_for(pred, seconds=20):
    end = time.time() + seconds
    while time.time() < end:
        found = [r for r in list(received) if pred(r)]
        if found:
            return found
        time.sleep(0.05)
    return []


created = resend.Webhooks.create({"endpoint": endpoint, "events": ["email.sent", "email.delivered"]})
check("Webhooks.create", created["signing_secret"].startswith("whsec_"), created)
wid, secret = created["id"], created["signing_secret"]
got = resend.Webhooks.get(wid)
check("Webhooks.get", got["endpoint"] == endpoint and got["status"] == "enabled", got)
listed = resend.Webhooks.list()
check("Webhooks.list", any(w["id"] == wid for w in listed["data"]), listed)
upd = resend.Webhooks.update({"webhook_id": wid, "events": ["email.sent", "email.delivered", "email.complained"]})
check("Webhooks.update (webhook_id in the body)", upd["id"] == wid, upd)

sent = resend.Emails.send({"from": "Acme <hello@acme.test>", "to": "complained+py@resend.dev", "subject": "Hi", "html": "<p>hi</p>"})
hits = wait_for(lambda r: json.loads(r[1])["type"] == "email.complained")
check("email.complained arrives", len(hits) == 1, [json.loads(b)["type"] for _, b in received])
headers, body = hits[0]
event = resend.Webhooks.verify({
    "payload": body,
    "headers": {"id": headers["svix-id"], "timestamp": headers["svix-timestamp"], "signature": headers["svix-signature"]},
    "webhook_secret": secret,
})
check("Webhooks.verify", event["data"]["email_id"] == sent["id"], event)
try:
    resend.Webhooks.verify({
        "payload": body.replace("complained", "delivered"),
        "headers": {"id": headers["svix-id"], "timestamp": headers["svix-timestamp"], "signature": headers["svix-signature"]},
        "webhook_secret": secret,
    })
    check("a tampered body fails Webhooks.verify", False, "accepted")
except ValueError:
    check("a tampered body fails Webhooks.verify", True)

events = resend.Webhooks.list_events(wid, {"limit": 10})
check("Webhooks.list_events", len(events["data"]) >= 3 and all(e["id"].startswith("msg_") for e in events["data"]), events)
# The receiver has the request a moment before the server has recorded its answer.
for _ in range(100):
    one = resend.Webhooks.get_event(wid, headers["svix-id"])
    if one["status"] != "pending":
        break
    time.sleep(0.05)
check("Webhooks.get_event", one["payload"]["type"] == "email.complained" and one["status"] == "success", one)
attempts = resend.Webhooks.list_event_attempts(wid, headers["svix-id"])
check("Webhooks.list_event_attempts", attempts["data"][0]["http_status_code"] == 200, attempts)
replayed = resend.Webhooks.replay_event(wid, headers["svix-id"])
check("Webhooks.replay_event", replayed["id"] == headers["svix-id"], replayed)
rot = resend.Webhooks.rotate_signing_secret(wid)
check("Webhooks.rotate_signing_secret", rot["signing_secret"] != secret, rot)
removed = resend.Webhooks.remove(wid)
check("Webhooks.remove", removed["deleted"] is True, removed)
server.shutdown()
