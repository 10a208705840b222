"""The official Python SDK's `Emails.Receiving` against a mailroom server that received two
messages by SMTP for sdk-node.test: list (cursor pages), get (cid), attachments list and get.
Usage: RESEND_API_URL=… KEY=… python3 python_receiving.py"""
import os
import urllib.request

import resend
from checks import check

resend.api_key = os.environ["KEY"]
resend.api_url = os.environ["RESEND_API_URL"]

everything = resend.Emails.Receiving.list()
data = everything["data"]
check("Receiving.list", len(data) == 2 and data[0]["subject"] == "Plain note", everything)
page = resend.Emails.Receiving.list({"limit": 1, "after": data[0]["id"]})
check("a page after the newest", page["data"][0]["id"] == data[1]["id"] and not page["has_more"], page)
invoice = data[1]["id"]
got = resend.Emails.Receiving.get(invoice, {"html_format": "cid"})
check("Receiving.get with cid", got["html_format"] == "cid" and "cid:logo@sdk" in got["html"], got)
check("the bare From and the envelope recipient", got["from"] == "ann@sender.test" and got["received_for"] == ["billing@sdk-node.test"], got)
atts = resend.Emails.Receiving.Attachments.list(invoice)
check("Attachments.list", len(atts["data"]) == 2, atts)
pdf = next(a for a in atts["data"] if a["filename"] == "invoice.pdf")
one = resend.Emails.Receiving.Attachments.get(invoice, pdf["id"])
check("Attachments.get", one["object"] == "attachment" and one["content_type"] == "application/pdf", one)
body = urllib.request.urlopen(one["download_url"]).read()
check("the download needs no key", body.startswith(b"%PDF-1.4") and len(body) == one["size"], len(body))
raw = urllib.request.urlopen(got["raw"]["download_url"]).read()
check("the raw message downloads", b"Subject: Invoice" in raw and raw.startswith(b"Received: "), raw[:80])
