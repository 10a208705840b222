"""The account's resources through the official Python SDK (PyPI `resend` 2.x): the
suppression list (add, list by origin with cursors, get and remove by id or address, the batch
add and remove), the request logs, the API keys, the usage.
Usage: RESEND_API_URL=http://127.0.0.1:PORT KEY=re_... python3 python_account.py"""
import os
import re

import resend
from checks import check

resend.api_key = os.environ["KEY"]
uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

added = resend.Suppressions.add({"email": "py.one@example.com"})
check("Suppressions.add", added["object"] == "suppression" and uuid.match(added["id"]), added)
got = resend.Suppressions.get("py.one@example.com")
check("Suppressions.get by address", got["id"] == added["id"] and got["origin"] == "manual" and got["source_id"] is None, got)
check("Suppressions.get by id", resend.Suppressions.get(added["id"])["email"] == "py.one@example.com")
batch = resend.Suppressions.Batch.add({"emails": ["py.b@example.com", "py.c@example.com"]})
check("Suppressions.Batch.add", len(batch["data"]) == 2, batch)
page = resend.Suppressions.list({"origin": "manual", "limit": 2})
check("Suppressions.list", page["object"] == "list" and len(page["data"]) == 2 and page["has_more"], page)
rest = resend.Suppressions.list({"origin": "manual", "limit": 2, "after": page["data"][1]["id"]})
check("Suppressions.list after a cursor", len(rest["data"]) == 1 and not rest["has_more"], rest)
removed = resend.Suppressions.remove(added["id"])
check("Suppressions.remove by id", removed["deleted"] is True and removed["id"] == added["id"], removed)
try:
    resend.Suppressions.get(added["id"])
    check("a removed entry is not found", False)
except resend.exceptions.ResendError as e:
    check("a removed entry is not found", e.error_type == "not_found", e)
gone = resend.Suppressions.Batch.remove({"emails": ["py.b@example.com", "py.c@example.com", "py.nobody@example.com"]})
check("Suppressions.Batch.remove leaves out misses", len(gone["data"]) == 2 and all(d["deleted"] for d in gone["data"]), gone)
check("the manual list is empty again", resend.Suppressions.list({"origin": "manual"})["data"] == [])

logs = resend.Logs.list({"limit": 2})
check("Logs.list", logs["object"] == "list" and len(logs["data"]) == 2 and logs["has_more"], logs)
older = resend.Logs.list({"limit": 2, "after": logs["data"][1]["id"]})
check("Logs.list after a cursor goes older",
      not {l["id"] for l in older["data"]} & {l["id"] for l in logs["data"]}, older)
one = resend.Logs.get(older["data"][0]["id"])
check("Logs.get", one["object"] == "log" and one["id"] == older["data"][0]["id"] and "response_status" in one, one)

key = resend.ApiKeys.create({"name": "py"})
check("ApiKeys.update", resend.ApiKeys.update({"id": key["id"], "name": "py (renamed)"})["id"] == key["id"])
listed = resend.ApiKeys.list()["data"]
check("ApiKeys.list shows the new name", any(k["id"] == key["id"] and k["name"] == "py (renamed)" for k in listed))
check("ApiKeys.list: a key never used has last_used_at None, the key in use a time",
      any(k["id"] == key["id"] and k["last_used_at"] is None for k in listed)
      and any(isinstance(k["last_used_at"], str) and k["last_used_at"].endswith("+00:00") for k in listed), listed)
resend.ApiKeys.remove(key["id"])

metrics = resend.Emails.metrics({"metrics": ["received", "sent", "delivery_rate"], "dimensions": ["domain"]})
check("Emails.metrics", metrics["object"] == "metrics" and metrics["metrics"] == ["received", "sent", "delivery_rate"]
      and all("domain_name" in r for r in metrics["data"]), metrics)
hourly = resend.Emails.metrics({"granularity": "hourly", "dimensions": ["period"], "metrics": ["received"],
                                "start_date": "2026-01-01T00:00:00Z", "end_date": "2026-01-01T06:00:00Z"})
check("Emails.metrics by hour", [r["period"] for r in hourly["data"]][:2] == ["2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00"]
      and len(hourly["data"]) == 6, hourly)

# Usage (`Usage.get`): one more email sent counts once today and once this month; no quota.
before = resend.Usage.get()
resend.Emails.send({"from": "onboarding@resend.dev", "to": "delivered@resend.dev", "subject": "s", "text": "t"})
after = resend.Usage.get()
daily, monthly = after["emails"]["daily"], after["emails"]["monthly"]
check("Usage.get", after["object"] == "usage" and daily["limit"] is None and monthly["limit"] >= 2**53 - 1
      and daily["used"] == daily["sent"] + daily["received"] and monthly["sent"] >= daily["sent"] >= 1
      and after["domains"]["used"] == len(resend.Domains.list()["data"])
      and after["rate_limit"]["duration"] == "1000ms", after)
check("Usage.get counts a send once", daily["sent"] == before["emails"]["daily"]["sent"] + 1
      and monthly["sent"] == before["emails"]["monthly"]["sent"] + 1, (before, after))

# A sending key limited to a domain, named by id as the SDK's `domain_id` does: it sends from
# that domain and nowhere else.
domain = resend.Domains.create({"name": "py-keys.example"})
limited = resend.ApiKeys.create({"name": "py limited", "permission": "sending_access", "domain_id": domain["id"]})
full_key, resend.api_key = resend.api_key, limited["token"]
sent = resend.Emails.send({"from": "a@py-keys.example", "to": "delivered@resend.dev", "subject": "s", "text": "t"})
check("a domain_id key sends from its domain", uuid.match(sent["id"]), sent)
try:
    resend.Emails.send({"from": "a@elsewhere.example", "to": "delivered@resend.dev", "subject": "s", "text": "t"})
    check("a domain_id key sends from no other domain", False)
except resend.exceptions.ResendError as e:
    check("a domain_id key sends from no other domain", "py-keys.example" in e.message, e)
resend.api_key = full_key
resend.ApiKeys.remove(limited["id"])
resend.Domains.remove(domain["id"])
