"""Drives a mailroom server with the official Python SDK (PyPI `resend` 2.x), changing only
the base URL. Usage: RESEND_API_URL=http://127.0.0.1:PORT KEY=re_... python3 python_sdk.py
Prints one line per check; exits 1 on the first failure."""
import os, time
import resend
from checks import check

resend.api_key = os.environ["KEY"]
resend.api_url = os.environ["RESEND_API_URL"]




def email(to, **extra):
    return {"from": "Acme <hello@acme.test>", "to": to, "subject": "Hi", "html": "<p>hi</p>", **extra}


sent = resend.Emails.send(email("delivered@resend.dev"))
check("Emails.send", len(sent["id"]) == 36, sent)
got = resend.Emails.get(sent["id"])
check("Emails.get", got["object"] == "email" and got["id"] == sent["id"], got)
page = resend.Emails.list({"limit": 5})
check("Emails.list", page["object"] == "list" and isinstance(page["data"], list), page)

try:
    resend.Batch.send([email("a@example.com"), email("not-an-address")])
    check("Batch.send strict refuses all", False)
except resend.exceptions.ResendError as e:
    check("Batch.send strict refuses all", e.error_type == "validation_error", e)
perm = resend.Batch.send([email("a@example.com"), email("nope"), email("b@example.com")], {"batch_validation": "permissive"})
check("Batch.send permissive", len(perm["data"]) == 2 and perm["errors"][0]["index"] == 1, perm)
p1 = resend.Emails.list({"limit": 1})
p2 = resend.Emails.list({"limit": 1, "after": p1["data"][0]["id"]})
check("Emails.list pagination", p1["has_more"] and len(p2["data"]) == 1 and p2["data"][0]["id"] != p1["data"][0]["id"], (p1, p2))

key = f"py/{time.time()}"
first = resend.Emails.send(email("a@example.com"), {"idempotency_key": key})
again = resend.Emails.send(email("a@example.com"), {"idempotency_key": key})
check("idempotent replay", first["id"] == again["id"], (first, again))
try:
    resend.Emails.send(email("b@example.com"), {"idempotency_key": key})
    check("idempotent conflict", False)
except resend.exceptions.ResendError as e:
    check("idempotent conflict", e.error_type == "invalid_idempotent_request", e)

scheduled = resend.Emails.send(email("a@example.com", scheduled_at="in 1 hour"))
updated = resend.Emails.update({"id": scheduled["id"], "scheduled_at": "Friday at 3pm ET"})
check("Emails.update", updated["id"] == scheduled["id"], updated)
canceled = resend.Emails.cancel(scheduled["id"])
check("Emails.cancel", canceled["id"] == scheduled["id"], canceled)
check("canceled last_event", resend.Emails.get(scheduled["id"])["last_event"] == "canceled")

try:
    resend.Emails.send({"from": "Acme <hello@acme.test>", "subject": "x", "html": "x"})
    check("validation error", False)
except resend.exceptions.ResendError as e:
    check("validation error", e.error_type == "missing_required_field", e)
try:
    resend.Emails.get("00000000-0000-7000-8000-000000000000")
    check("unknown id", False)
except resend.exceptions.ResendError as e:
    check("unknown id", e.error_type == "not_found", e)
resend.api_key = "re_wrong"
try:
    resend.Emails.send(email("a@example.com"))
    check("wrong key", False)
except resend.exceptions.ResendError as e:
    check("wrong key", e.error_type == "invalid_api_key", e)
resend.api_key = None
try:
    resend.Emails.send(email("a@example.com"))
    check("missing key", False)
except resend.exceptions.ResendError as e:
    # With no key the SDK sends "Bearer None": an unknown key.
    check("missing key", e.error_type in ("missing_api_key", "invalid_api_key"), e)
resend.api_key = os.environ["KEY"]

outcomes = {"delivered+py@resend.dev": "delivered", "bounced+py@resend.dev": "bounced",
            "complained+py@resend.dev": "complained", "suppressed+py@resend.dev": "suppressed"}
ids = {to: resend.Emails.send(email(to))["id"] for to in outcomes}
for to, want in outcomes.items():
    last = None
    for _ in range(100):
        last = resend.Emails.get(ids[to])["last_event"]
        if last == want:
            break
        time.sleep(0.1)
    check(f"test address {to}", last == want, last)
