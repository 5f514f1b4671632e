"""A real SMTP server (aiosmtpd) for the tests, on a free port in the test's own event loop.

It records what it receives (messages, the names clients greet with, when each connection
came) and can misbehave on request: reply with an error at any stage (CONNECT, MAIL, RCPT,
DATA), judge the argument of EHLO/HELO, MAIL or RCPT by a rule of the test's own, refuse single
recipients, take only so many recipients per transaction, stall before answering (all clients,
or only those that greeted with a given name), or drop the connection.

It is as strict as strict real servers about line length: a message with a line longer than
998 octets (RFC 5322 2.1.1) is refused with 500, so every test that sends mail checks that.
(aiosmtpd alone allows 999 and more, for dot-stuffing; bare CR or LF cannot be checked here,
since aiosmtplib turns them into CRLF before sending.)
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_string, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

_MESSAGE_ID = re.compile(rb"^Message-ID: *(<[^>]+>)", re.IGNORECASE | re.MULTILINE)
MAX_LINE = 998


def malformed(data: bytes) -> str | None:
    """The reply of a strict server to a message with too long a line, or None."""
    if max(map(len, data.split(b"\r\n"))) > MAX_LINE:
        return "500 5.5.2 Line too long (RFC 5322 2.1.1 allows 998 octets)"
    return None


# RFC 2047 6.2: whitespace between two adjacent encoded words is not part of the text. Python's
# address parser keeps it as a space (fixed upstream by python/cpython#130749, gh-128110).
_BETWEEN_ENCODED_WORDS = re.compile(r"(?<=\?=)\s+(?==\?)")


def mailboxes(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    """(display name, address) of each mailbox in the header `name`, decoded as RFC 2047 says:
    from the raw header with the whitespace between encoded words taken out. (Only encoded
    words hold "?= =?" in what we write: plain text holding "=?" is always encoded.)"""
    [raw] = [value for key, value in message.raw_items() if key == name]
    unfolded = raw.replace("\r\n", "")
    header = policy.default.header_factory(name, _BETWEEN_ENCODED_WORDS.sub("", unfolded))
    return [(a.display_name, a.addr_spec) for a in header.addresses]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)  # e.g. SMTPUTF8
    at: float = field(default_factory=time.time)
    client: str | None = None  # the name the client greeted with (EHLO/HELO)

    @property
    def message(self) -> EmailMessage:
        # SMTPUTF8 messages carry raw UTF-8 headers; everything else is ASCII.
        text = self.data.decode("utf-8")
        parsed: EmailMessage = message_from_string(text, policy=policy.default)
        return parsed

    @property
    def message_id(self) -> str:
        # a regex, not a full parse: tests count the copies of thousands of messages
        found = _MESSAGE_ID.search(self.data)
        assert found is not None, "no Message-ID header"
        return found.group(1).decode()


@dataclass
class Behaviour:
    """How the server answers. Empty means: accept everything at once."""

    replies: dict[str, str] = field(default_factory=dict)  # stage -> reply, e.g. "451 later"
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    # stage -> seconds to wait before answering; "DATA" waits before keeping the message,
    # "AFTER_DATA" keeps it and then waits (a reply that never comes after the final ".")
    stalls: dict[str, float] = field(default_factory=dict)
    # client name (as it greeted) -> stalls for that client alone, over `stalls`
    client_stalls: dict[str, dict[str, float]] = field(default_factory=dict)
    drop_at: str | None = None  # stage at which the connection is closed without a reply
    max_recipients: int | None = None  # per transaction; more get "452 too many recipients"
    # stage ("HELO" covers EHLO too, "MAIL", "RCPT") -> rule on the command's argument (the
    # client's name, the address): a reply refuses it, None lets it through
    rules: dict[str, Callable[[str], str | None]] = field(default_factory=dict)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.behaviour = Behaviour()
        self.helo_names: list[str] = []  # as each client greeted, refused or not
        self.rcpt_seen: list[str] = []  # every RCPT TO address, taken or refused

    async def handle_EHLO(  # the 5-argument form: aiosmtpd sends what it returns
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.helo_names.append(hostname)
        if reply := self._judge("HELO", hostname):
            return [reply]
        session.host_name = hostname
        return responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self.helo_names.append(hostname)
        if reply := self._judge("HELO", hostname):
            return reply
        session.host_name = hostname
        return f"250 {server.hostname}"

    def _judge(self, stage: str, argument: str) -> str | None:
        rule = self.behaviour.rules.get(stage)
        return rule(argument) if rule else None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := await self._misbehave(server, session, "MAIL") or self._judge("MAIL", address):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.rcpt_seen.append(address)
        if reply := await self._misbehave(server, session, "RCPT") or self._judge("RCPT", address):
            return reply
        if address in self.behaviour.refuse:
            return self.behaviour.refuse[address]
        limit = self.behaviour.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if reply := await self._misbehave(server, session, "DATA"):
            return reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        if reply := malformed(envelope.content):
            return reply
        received = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.content,
            mail_options=list(envelope.mail_options),
            client=session.host_name,
        )
        self.messages.append(received)
        if delay := self._stall(session, "AFTER_DATA"):
            await asyncio.sleep(delay)
        return "250 Message accepted for delivery"

    def _stall(self, session: Session, stage: str) -> float | None:
        own = self.behaviour.client_stalls.get(session.host_name or "", {})
        return own.get(stage, self.behaviour.stalls.get(stage))

    async def _misbehave(self, server: SMTP, session: Session, stage: str) -> str | None:
        if delay := self._stall(session, stage):
            await asyncio.sleep(delay)
        if self.behaviour.drop_at == stage:
            assert server.transport is not None
            server.transport.close()
            return "421 closing"  # never reaches the client
        return self.behaviour.replies.get(stage)


class _Greeter(asyncio.Protocol):
    """Answers the connection with an error reply and hangs up (a server that refuses work)."""

    def __init__(self, reply: str) -> None:
        self._reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"{self._reply}\r\n".encode())
        transport.close()


class SmtpServer:
    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        starttls: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.recorder = Recorder()
        self._tls = tls
        self._starttls = starttls
        self.credentials = credentials
        self._server: asyncio.Server | None = None
        self.port = 0
        self.auth_attempts: list[str] = []
        self.connected_at: list[float] = []  # monotonic time of each connection (and handshake)

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def behaviour(self) -> Behaviour:
        return self.recorder.behaviour

    def copies(self) -> Counter[str]:
        """How often each Message-ID arrived."""
        return Counter(m.message_id for m in self.messages)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts.append(mechanism)
        login, password = data.login.decode(), data.password.decode()
        return AuthResult(success=(login, password) == self.credentials, handled=False)

    def _protocol(self) -> asyncio.Protocol:
        # asyncio builds the protocol before the TLS handshake: one entry per handshake too
        self.connected_at.append(time.monotonic())
        if reply := self.behaviour.replies.get("CONNECT"):
            return _Greeter(reply)
        protocol: asyncio.Protocol = SMTP(
            self.recorder,
            hostname="smtp.test",
            enable_SMTPUTF8=True,
            tls_context=self._starttls,
            require_starttls=self._starttls is not None,
            authenticator=self._authenticate if self.credentials else None,
            # AUTH is offered (and checked) on any connection; the client logs in because it
            # has a username. Requiring it is left to the TLS tests' own servers.
            auth_require_tls=False,
            loop=asyncio.get_running_loop(),
        )
        return protocol

    async def start(self, port: int = 0) -> SmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host="127.0.0.1", port=port or self.port, ssl=self._tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
