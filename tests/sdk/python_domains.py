"""The official Python SDK's `Domains` against a mailroom server whose nameserver is a dnsmasq
the test starts between the two phases (the records exist only once the domain is made).
Usage: RESEND_API_URL=… KEY=… RECORDS=file python3 python_domains.py create|verify"""
import json
import os
import sys
import time

import resend
from checks import check

resend.api_key = os.environ["KEY"]
resend.api_url = os.environ["RESEND_API_URL"]
NAME = "sdk-py.test"


def error_of(f):
    try:
        f()
    except resend.exceptions.ResendError as e:
        return e
    return None


if sys.argv[1] == "create":
    e = error_of(lambda: resend.Domains.create({"name": "x.test", "region": "mars-1"}))
    check("Domains.create with a bad region", e is not None and "region" in str(e), e)
    d = resend.Domains.create({"name": NAME, "custom_return_path": "bounces"})
    check("Domains.create", d["name"] == NAME and d["status"] == "not_started" and d["region"] == "us-east-1", d)
    names = [(r["record"], r["name"]) for r in d["records"]]
    check("the return path is the custom one", names[:2] == [("SPF", "bounces"), ("SPF", "bounces")], names)
    got = resend.Domains.get(d["id"])
    check("Domains.get", got["object"] == "domain" and got["id"] == d["id"] and len(got["records"]) == 3, got)
    listed = resend.Domains.list()
    check("Domains.list", any(x["id"] == d["id"] for x in listed["data"]), listed)
    with open(os.environ["RECORDS"], "w") as f:
        json.dump({"domain": NAME, "records": d["records"]}, f)
else:
    d = next(x for x in resend.Domains.list()["data"] if x["name"] == NAME)
    v = resend.Domains.verify(d["id"])
    check("Domains.verify", v["object"] == "domain" and v["id"] == d["id"], v)
    got = None
    for _ in range(200):
        got = resend.Domains.get(d["id"])
        if got["status"] == "verified":
            break
        time.sleep(0.1)
    check("the domain verifies", got["status"] == "verified", got)
    u = resend.Domains.update({"id": d["id"], "open_tracking": True, "click_tracking": True})
    check("Domains.update (the id in the body too)", u["id"] == d["id"], u)
    check("the update took effect", resend.Domains.get(d["id"])["open_tracking"] is True)
    r = resend.Domains.remove(d["id"])
    check("Domains.remove", r["deleted"] is True and r["id"] == d["id"], r)
    e = error_of(lambda: resend.Domains.get(d["id"]))
    check("a removed domain is not found", e is not None and "not found" in str(e).lower(), e)
