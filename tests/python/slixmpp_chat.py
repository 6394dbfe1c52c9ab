#!/usr/bin/env python3
"""Drive a running Aviary with slixmpp, a real third-party XMPP client.

Default mode: two clients connect to HOST:PORT (no DNS SRV), negotiate STARTTLS
(RFC 6120 §5) verifying the server certificate against the test CA for DOMAIN,
authenticate with exactly the requested SCRAM mechanism (RFC 6120 §6, RFC 5802 /
RFC 7677; PLAIN is never tried), bind a resource (§7), fetch the roster and send
initial presence like an ordinary client, then exchange one chat message each way.
Each side checks the body and that the server stamped `from` with the sender's full
JID (§8.1.2.1). Both then close their streams and check that the server closed its
own in reply (§4.4).

--expect-auth-failure: only user1 logs in, with a password that must be refused;
success is the server answering SASL with <failure><not-authorized/> (§6.5.10).

Human-readable progress goes to stdout, then a `key=value` summary that the Rust
test (tests/tests/slixmpp.rs) parses. --debug sends slixmpp's own log (every
stanza sent and received, tagged by client) to stderr.

Exit codes:
  0  everything checked out (or, with --expect-auth-failure, login refused)
  1  internal error (a bug in this script or in slixmpp: traceback on stderr)
  2  usage error
  3  the server refused authentication (SASL <failure/>)
  4  overall timeout (the summary names the step that hung)
  5  a check failed (wrong body, from, mechanism, bound JID, stream close, ...)
  6  could not connect, or TLS/certificate failure
  7  slixmpp is not installed in this Python
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import ssl
import sys
import time
import uuid

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_AUTH_REFUSED = 3
EXIT_TIMEOUT = 4
EXIT_CHECK = 5
EXIT_CONNECT = 6
EXIT_NO_SLIXMPP = 7

SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
STREAM_NS = "http://etherx.jabber.org/streams"

try:
    import slixmpp
    import slixmpp.exceptions
    from slixmpp import ClientXMPP
except ImportError as e:  # pragma: no cover - environment problem
    print(
        f"slixmpp is not importable from {sys.executable}: {e}\n"
        "run deploy/dev/python.sh install (and use .dev/venv/bin/python)",
        file=sys.stderr,
    )
    sys.exit(EXIT_NO_SLIXMPP)

# The step in progress, named in the timeout report.
_step = {"now": "start"}


def step(name: str) -> None:
    _step["now"] = name


# Which client a log line belongs to: each client's connect task (and so its
# transport callbacks) runs in a context copied after this is set.
CLIENT = contextvars.ContextVar("client", default="-")


class Failure(Exception):
    """A failed run; `code` is the exit status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Client:
    """One slixmpp session plus what we observed about its negotiation."""

    def __init__(self, tag: str, args, user: str, password: str):
        self.tag = tag
        self.args = args
        self.requested = f"{user}@{args.domain}/slix-{tag}"
        self.xmpp = ClientXMPP(self.requested, password, sasl_mech=args.mech)
        x = self.xmpp
        # Only STARTTLS on the given port: no direct TLS attempt first, never
        # plaintext, no reconnection loop hiding a failure.
        x.enable_direct_tls = False
        x.enable_starttls = True
        x.enable_plaintext = False
        x.whitespace_keepalive = False
        x.ssl_context = tls_context(args.ca)

        self.offered_mechs: list[str] = []
        self.starttls_offered = False
        self.sent_auth_mechs: list[str] = []
        self.challenges = 0
        self.tls_version: str | None = None
        self.mutual_auth = False
        self.auth_mech: str | None = None
        self.jid: str | None = None
        self.close_reason: object = None
        self.auth_failure: str | None = None
        # Set once we close (or the server refused us): a disconnection is then
        # expected, not a failure.
        self.closing = False

        loop = asyncio.get_event_loop()
        self.session = loop.create_future()
        self.failed = loop.create_future()
        self.disconnected = loop.create_future()
        self.inbox: asyncio.Queue = asyncio.Queue()

        x.add_filter("in", self._observe_in)
        x.add_filter("out_sync", self._observe_out)
        x.add_event_handler("tls_success", self._on_tls)
        x.add_event_handler("ssl_invalid_chain", self._on_bad_cert)
        x.add_event_handler("connection_failed", self._on_connection_failed)
        x.add_event_handler("auth_success", self._on_auth_success)
        x.add_event_handler("failed_auth", self._on_failed_auth)
        x.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        x.add_event_handler("stream_error", self._on_stream_error)
        x.add_event_handler("session_start", self._on_session_start)
        x.add_event_handler("message", self._on_message)
        x.add_event_handler("disconnected", self._on_disconnected)

    def say(self, text: str) -> None:
        print(f"[{self.tag}] {text}", flush=True)

    def _fail(self, code: int, message: str) -> None:
        if not self.closing and not self.failed.done():
            self.failed.set_exception(Failure(code, f"[{self.tag}] {message}"))
            # Mark it retrieved: when another client's failure ends the run
            # first, asyncio would otherwise log this one as never retrieved.
            self.failed.exception()

    # Observation of the wire (stanza objects, before handlers run).
    def _observe_in(self, stanza):
        tag = stanza.xml.tag
        if tag == f"{{{STREAM_NS}}}features":
            mechs = stanza.xml.find(f"{{{SASL_NS}}}mechanisms")
            if mechs is not None:
                self.offered_mechs = [m.text or "" for m in mechs]
            if stanza.xml.find(f"{{{TLS_NS}}}starttls") is not None:
                self.starttls_offered = True
        elif tag == f"{{{SASL_NS}}}challenge":
            self.challenges += 1
        return stanza

    def _observe_out(self, stanza):
        if stanza.xml.tag == f"{{{SASL_NS}}}auth":
            self.sent_auth_mechs.append(stanza.xml.get("mechanism", ""))
        return stanza

    # Events.
    def _on_tls(self, _event) -> None:
        # The handshake only completes if the chain and the host name verified.
        sock = self.xmpp.socket
        self.tls_version = sock.version() if sock is not None else None
        self.say(
            f"STARTTLS done: {self.tls_version}, certificate verified against "
            f"the test CA for '{self.args.domain}'"
        )

    def _on_bad_cert(self, err) -> None:
        self._fail(EXIT_CONNECT, f"TLS handshake failed: {err}")
        self.xmpp.abort()

    def _on_connection_failed(self, err) -> None:
        self._fail(
            EXIT_CONNECT, f"cannot connect to {self.args.host}:{self.args.port}: {err}"
        )

    def _on_auth_success(self, _stanza) -> None:
        mech = self.xmpp.plugin["feature_mechanisms"].mech
        self.auth_mech = mech.name
        # Set by slixmpp's SCRAM once the server signature (v=) in <success/>
        # matched: the server knows the password too (RFC 5802 §5).
        self.mutual_auth = bool(getattr(mech, "_mutual_auth", False))
        self.say(
            f"SASL {self.auth_mech} succeeded after {self.challenges} challenge(s); "
            f"server signature verified: {self.mutual_auth}"
        )

    def _on_failed_auth(self, stanza) -> None:
        condition = stanza["condition"]
        text = stanza["text"]
        self.auth_failure = condition
        self.say(f"SASL failure from server: <{condition}/> {text!r}")
        self._fail(EXIT_AUTH_REFUSED, f"authentication refused: <{condition}/>")

    def _on_failed_all_auth(self, _event) -> None:
        if self.auth_failure is None:
            # slixmpp found nothing it may use: the forced mechanism was not
            # offered (or cancelled itself), so nothing was sent.
            self._fail(
                EXIT_CHECK,
                f"{self.args.mech} not usable; server offered {self.offered_mechs}",
            )
        else:
            self._fail(
                EXIT_AUTH_REFUSED, f"authentication refused: <{self.auth_failure}/>"
            )

    def _on_stream_error(self, err) -> None:
        self.say(f"stream error from server: {err['condition']} {err['text']!r}")
        self._fail(EXIT_CHECK, f"stream error {err['condition']}")

    async def _on_session_start(self, _event) -> None:
        self.jid = str(self.xmpp.boundjid.full)
        self.say(f"bound {self.jid}")
        if not self.session.done():
            self.session.set_result(self.jid)

    def _on_message(self, msg) -> None:
        if msg["body"]:
            self.inbox.put_nowait(msg)

    def _on_disconnected(self, reason) -> None:
        self.close_reason = reason
        if not self.disconnected.done():
            self.disconnected.set_result(reason)
        self._fail(EXIT_CONNECT, f"disconnected unexpectedly: {reason}")

    # Steps.
    async def until(self, fut: asyncio.Future, what: str):
        """Waits for `fut`, or raises the first failure of this client."""
        step(f"{self.tag}: {what}")
        done, _ = await asyncio.wait(
            {fut, self.failed}, return_when=asyncio.FIRST_COMPLETED
        )
        if fut in done:
            return fut.result()
        fut.cancel()
        raise self.failed.exception()

    def connect(self) -> None:
        CLIENT.set(self.tag)
        self.say(f"connecting to {self.args.host}:{self.args.port} as {self.requested}")
        self.xmpp.connect(self.args.host, self.args.port)

    async def next_message(self):
        return await self.until(
            asyncio.ensure_future(self.inbox.get()), "waiting for a message"
        )

    async def close(self, initiate: bool = True) -> None:
        """RFC 6120 §4.4: send </stream:stream> (unless slixmpp already did) and
        expect the server's closing tag in reply."""
        step(f"{self.tag}: closing the stream")
        self.closing = True
        t0 = time.monotonic()
        if initiate and self.xmpp.transport is not None:
            await self.xmpp.disconnect(wait=5)
        await asyncio.wait_for(asyncio.shield(self.disconnected), 5)
        took = time.monotonic() - t0
        self.say(f"closed in {took * 1000:.0f} ms; slixmpp reason: {self.close_reason!r}")
        # slixmpp records "End of stream" only when it parsed the server's
        # closing tag; a timeout or a bare TCP close leaves it unset.
        if self.close_reason != "End of stream":
            raise Failure(
                EXIT_CHECK,
                f"[{self.tag}] server did not close its stream in reply to ours "
                f"(reason {self.close_reason!r})",
            )


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Trust exactly the test CA; full verification including the host name
    (the server certificate carries DNS:localhost, which is the stream's `to`
    and what slixmpp passes as server_hostname)."""
    ctx = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def check(cond: bool, message: str) -> None:
    if not cond:
        raise Failure(EXIT_CHECK, f"check failed: {message}")


def check_login(c: Client, args, summary: dict) -> None:
    """What must hold for a client that logged in."""
    summary[f"{c.tag}.tls"] = c.tls_version
    summary[f"{c.tag}.offered"] = " ".join(sorted(c.offered_mechs))
    summary[f"{c.tag}.auth_sent"] = ",".join(c.sent_auth_mechs)
    summary[f"{c.tag}.mechanism"] = c.auth_mech
    summary[f"{c.tag}.challenges"] = c.challenges
    summary[f"{c.tag}.server_signature"] = "verified" if c.mutual_auth else "unverified"
    summary[f"{c.tag}.jid"] = c.jid
    check(c.starttls_offered, "server did not offer STARTTLS")
    check(c.tls_version is not None, "session is not encrypted")
    check(args.mech in c.offered_mechs, f"{args.mech} not offered: {c.offered_mechs}")
    # Exactly one <auth/>, with the forced mechanism: no silent fallback to PLAIN.
    check(c.sent_auth_mechs == [args.mech], f"sent <auth/> for {c.sent_auth_mechs}")
    check(c.auth_mech == args.mech, f"authenticated with {c.auth_mech}")
    check(c.challenges == 1, f"expected 1 SCRAM challenge, got {c.challenges}")
    check(c.mutual_auth, "SCRAM server signature not verified")
    bare, _, resource = (c.jid or "").partition("/")
    check(bare == c.requested.split("/")[0], f"bound {c.jid}, wanted {c.requested}")
    check(bool(resource), f"bound JID {c.jid} has no resource")


async def exchange(sender: Client, receiver: Client, body: str, summary: dict) -> None:
    key = f"{sender.tag}_to_{receiver.tag}"
    sender.xmpp.send_message(mto=receiver.jid, mbody=body, mtype="chat")
    sender.say(f"sent to {receiver.jid}: {body!r}")
    summary[f"{key}.sent_body"] = body
    msg = await receiver.next_message()
    got_from, got_body, got_type = str(msg["from"]), msg["body"], msg["type"]
    receiver.say(f"received from {got_from} ({got_type}): {got_body!r}")
    summary[f"{key}.from"] = got_from
    summary[f"{key}.body"] = got_body
    check(got_body == body, f"{receiver.tag} got body {got_body!r}, sent {body!r}")
    # RFC 6120 §8.1.2.1: the server stamps the sender's full JID.
    check(
        got_from == sender.jid,
        f"{receiver.tag} got from={got_from}, sender is {sender.jid}",
    )
    check(got_type == "chat", f"type {got_type!r}, sent 'chat'")
    check(str(msg["to"]) == receiver.jid, f"to={msg['to']}, expected {receiver.jid}")


async def run_chat(args, summary: dict) -> None:
    a = Client("user1", args, args.user1, args.pass1)
    b = Client("user2", args, args.user2, args.pass2)
    clients = (a, b)
    for c in clients:
        c.connect()
    for c in clients:
        await c.until(c.session, "logging in")
        check_login(c, args, summary)
    # Like any IM client (RFC 6121 §2.2, §4.2): ask for the roster, go online.
    # Roster support is not what this run checks, so an error reply is recorded
    # (summary `userN.roster`), not fatal; no reply at all would be (RFC 6120 §8.2.3).
    for c in clients:
        step(f"{c.tag}: roster get")
        try:
            await c.xmpp.get_roster(timeout=10)
            summary[f"{c.tag}.roster"] = "result"
            c.say("roster fetched")
        except slixmpp.exceptions.IqError as e:
            condition = e.iq["error"]["condition"]
            summary[f"{c.tag}.roster"] = f"error:{condition}"
            c.say(f"NOTE: roster get answered with <{condition}/> (no RFC 6121 roster)")
        except slixmpp.exceptions.IqTimeout:
            raise Failure(
                EXIT_CHECK, f"[{c.tag}] roster get never answered (RFC 6120 §8.2.3)"
            ) from None
        c.xmpp.send_presence()
        c.say("initial presence sent")

    token = uuid.uuid4().hex[:8]
    # XML-special and non-ASCII characters check escaping on both sides.
    await exchange(a, b, f"hello user2 <&> \"'\" ünïcødé ✈ {token}", summary)
    await exchange(b, a, f"hi user1, got it ✓ {token}", summary)

    for c in clients:
        await c.close()
    summary["closed"] = "both"


async def run_bad_login(args, summary: dict) -> None:
    a = Client("user1", args, args.user1, args.pass1)
    a.connect()
    try:
        await a.until(a.session, "logging in (must be refused)")
    except Failure as f:
        if f.code != EXIT_AUTH_REFUSED:
            raise
        refused = f
    else:
        raise Failure(EXIT_CHECK, f"login with a wrong password succeeded: bound {a.jid}")
    summary["user1.tls"] = a.tls_version
    summary["user1.auth_sent"] = ",".join(a.sent_auth_mechs)
    summary["user1.challenges"] = a.challenges
    summary["user1.failure"] = a.auth_failure
    check(a.tls_version is not None, "SASL attempted without TLS")
    check(a.sent_auth_mechs == [args.mech], f"sent <auth/> for {a.sent_auth_mechs}")
    # The proof only travels in client-final, so a wrong password can only be
    # refused after exactly one challenge (server-first): RFC 5802 §5, RFC 6120 §6.4.5.
    check(a.challenges == 1, f"refused after {a.challenges} challenge(s), expected 1")
    check(
        a.auth_failure == "not-authorized",
        f"<{a.auth_failure}/>, expected <not-authorized/>",
    )
    # slixmpp gives up by itself (no other mechanism is allowed) and has already
    # sent its </stream:stream>.
    await a.close(initiate=False)
    summary["closed"] = "user1"
    raise refused


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--domain", required=True)
    p.add_argument("--ca", required=True, help="PEM file of the CA to trust")
    p.add_argument("--user1", required=True, help="localpart")
    p.add_argument("--pass1", required=True)
    p.add_argument("--user2")
    p.add_argument("--pass2")
    p.add_argument(
        "--mech",
        default="SCRAM-SHA-256",
        choices=["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-512"],
        help="the only SASL mechanism to use",
    )
    p.add_argument("--expect-auth-failure", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole run")
    p.add_argument("--debug", action="store_true", help="slixmpp's log on stderr")
    args = p.parse_args(argv)
    try:
        with open(args.ca, "rb"):
            pass
    except OSError as e:
        p.error(f"--ca {args.ca}: {e.strerror}")
    if not args.expect_auth_failure and not (args.user2 and args.pass2):
        p.error("--user2 and --pass2 are required unless --expect-auth-failure")
    return args


def shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Lets slixmpp's background tasks (its send queue) finish cancelling, so the
    log ends without "Task was destroyed but it is pending"."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        gather = asyncio.gather(*pending, return_exceptions=True)
        try:
            loop.run_until_complete(asyncio.wait_for(gather, 2))
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
    loop.close()


class _ClientTag(logging.Filter):
    def filter(self, record):
        record.client = CLIENT.get()
        return True


def main(argv) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ClientTag())
    handler.setFormatter(
        logging.Formatter(
            "%(relativeCreated)6dms [%(client)s] %(levelname)s %(name)s: %(message)s"
        )
    )
    level = logging.DEBUG if args.debug else logging.WARNING
    logging.basicConfig(level=level, handlers=[handler])

    mode = "bad-login" if args.expect_auth_failure else "chat"
    print(
        f"slixmpp {slixmpp.__version__} on Python {sys.version.split()[0]}, "
        f"OpenSSL {ssl.OPENSSL_VERSION}; mode {mode}, mechanism {args.mech}",
        flush=True,
    )
    summary: dict = {"slixmpp": slixmpp.__version__, "mode": mode}
    run = run_bad_login if args.expect_auth_failure else run_chat
    t0 = time.monotonic()
    code, message = EXIT_OK, "ok"
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(run(args, summary), args.timeout))
    except Failure as f:
        code, message = f.code, str(f)
    except asyncio.TimeoutError:
        code = EXIT_TIMEOUT
        message = f"timed out after {args.timeout:.0f}s during step: {_step['now']}"
    except Exception as e:  # noqa: BLE001 - report, never hang
        logging.exception("internal error")
        code, message = EXIT_INTERNAL, f"internal error: {type(e).__name__}: {e}"
    finally:
        shutdown(loop)
    summary["elapsed_ms"] = int((time.monotonic() - t0) * 1000)
    summary["exit"] = code
    summary["result"] = message
    print("--- summary ---")
    for k, v in summary.items():
        print(f"{k}={v}")
    if code == EXIT_OK:
        verdict = "PASS"
    elif code == EXIT_AUTH_REFUSED and args.expect_auth_failure:
        verdict = "AUTH REFUSED (as expected)"
    else:
        verdict = "FAIL"
    print(f"{verdict}: {message}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
