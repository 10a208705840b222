"""A small SMTP peer for mailroom-smtp's tests (aiosmtpd), whose answers depend on the recipient.

Run:  python3 smtpd.py HOST PORT [--tls CERT KEY | --implicit-tls CERT KEY] [--auth USER:PASSWORD] [--save DIR]
The recipient's local part decides: hard* -> 550 5.1.1, full* -> 452 4.2.2, defer* -> 451 4.3.0,
block* -> 554 5.7.1; anything else is accepted. A body line `X-Test-Reject: data` gets 554 5.6.0
at DATA. With --tls the server offers STARTTLS (and requires it before AUTH); with --auth it
requires AUTH PLAIN/LOGIN with those credentials before MAIL. SIGTERM stops it; it then prints
`connections=N accepted=M resets=R` (sessions opened, messages accepted, RSETs received).
"""
import argparse, json, logging, os, signal, ssl
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

RULES = [("hard", "550 5.1.1 <{a}>: Recipient address rejected: User unknown"),
         ("full", "452 4.2.2 <{a}>: Mailbox full"),
         ("defer", "451 4.3.0 <{a}>: Temporary local problem, try again later"),
         ("block", "554 5.7.1 <{a}>: Relay access denied")]


class Handler:
    def __init__(self, save=None, pipelining=False):
        self.pipelining = pipelining
        self.accepted = 0
        self.connections = 0
        self.resets = 0
        self.save = save

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if not getattr(session, "counted", False):
            session.counted = True
            self.connections += 1
        session.host_name = hostname
        if self.pipelining:
            # aiosmtpd reads commands line by line from a buffer, so pipelined input works;
            # it just does not say so.
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RSET(self, server, session, envelope):
        self.resets += 1
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        for prefix, reply in RULES:
            if local.startswith(prefix):
                return reply.format(a=address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if b"\nX-Test-Reject: data" in envelope.original_content:
            return "554 5.6.0 Message content rejected"
        self.accepted += 1
        if self.save:
            with open(os.path.join(self.save, f"{self.accepted}.eml"), "wb") as f:
                f.write(envelope.original_content)
            with open(os.path.join(self.save, f"{self.accepted}.json"), "w") as f:
                json.dump({"mail_from": envelope.mail_from, "mail_options": envelope.mail_options,
                           "rcpt_tos": envelope.rcpt_tos, "helo": getattr(session, "host_name", None),
                           "peer": session.peer[0]}, f)
        return "250 2.0.0 OK queued"


def main():
    if os.environ.get("SMTPD_DEBUG"):
        logging.basicConfig(level=logging.DEBUG)
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"), help="TLS from the first byte (smtps)")
    p.add_argument("--auth")
    p.add_argument("--save", help="write each accepted message to SAVE/N.eml")
    p.add_argument("--no-smtputf8", action="store_true", help="do not offer SMTPUTF8 (RFC 6531)")
    p.add_argument("--pipelining", action="store_true", help="offer PIPELINING (RFC 2920)")
    a = p.parse_args()
    kwargs = {}
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        kwargs.update(tls_context=ctx, require_starttls=True)
    if a.implicit_tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.implicit_tls[0], a.implicit_tls[1])
        kwargs.update(ssl_context=ctx)
    if a.auth:
        user, password = a.auth.split(":", 1)

        def check(server, session, envelope, mechanism, data):
            ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
            # handled=False: aiosmtpd then answers a failure with 535 itself.
            return AuthResult(success=ok, handled=False)

        # aiosmtpd only recognises TLS started with STARTTLS for auth_require_tls; with
        # implicit TLS the whole session is encrypted anyway.
        kwargs.update(authenticator=check, auth_required=True, auth_require_tls=bool(a.tls))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    h = Handler(a.save, a.pipelining)
    # A long ready_timeout: start() checks the server with a connection of its own (a TLS
    # handshake with --implicit-tls) and exits if that takes longer, as it can on a busy machine.
    c = Controller(h, hostname=a.host, port=a.port, enable_SMTPUTF8=not a.no_smtputf8, ready_timeout=60, **kwargs)
    c.start()
    print(f"listening on {a.host}:{a.port}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    c.stop()
    print(f"connections={h.connections} accepted={h.accepted} resets={h.resets}", flush=True)


if __name__ == "__main__":
    main()
