"""A real SMTP server (aiosmtpd) for the tests, on a free port in the test's own event loop.

It records what it receives and can misbehave on request: reply with an error at any stage,
refuse single recipients, stall before answering, or drop the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from email import message_from_string, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        # SMTPUTF8 messages carry raw UTF-8 headers; everything else is ASCII.
        text = self.data.decode("utf-8")
        parsed: EmailMessage = message_from_string(text, policy=policy.default)
        return parsed


@dataclass
class Behaviour:
    """How the server answers. Empty means: accept everything at once."""

    replies: dict[str, str] = field(default_factory=dict)  # stage (MAIL, RCPT, DATA) -> reply
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    stall_seconds: float = 0.0  # before answering DATA
    drop_at: str | None = None  # stage at which the connection is closed without a reply


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.behaviour = Behaviour()
        self.received = asyncio.Event()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := await self._misbehave(server, "MAIL"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := await self._misbehave(server, "RCPT"):
            return reply
        if address in self.behaviour.refuse:
            return self.behaviour.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.behaviour.stall_seconds:
            await asyncio.sleep(self.behaviour.stall_seconds)
        if reply := await self._misbehave(server, "DATA"):
            return reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        self.received.set()
        return "250 Message accepted for delivery"

    async def _misbehave(self, server: SMTP, stage: str) -> str | None:
        if self.behaviour.drop_at == stage:
            assert server.transport is not None
            server.transport.close()
            return "421 closing"  # never reaches the client
        return self.behaviour.replies.get(stage)


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
        self._credentials = credentials
        self._server: asyncio.Server | None = None
        self.port = 0
        self.auth_attempts: list[str] = []

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def behaviour(self) -> Behaviour:
        return self.recorder.behaviour

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts.append(mechanism)
        login, password = data.login.decode(), data.password.decode()
        return AuthResult(success=(login, password) == self._credentials)

    def _protocol(self) -> SMTP:
        return SMTP(
            self.recorder,
            hostname="smtp.test",
            enable_SMTPUTF8=True,
            tls_context=self._starttls,
            require_starttls=self._starttls is not None,
            authenticator=self._authenticate if self._credentials else None,
            # aiosmtpd only knows about STARTTLS; over implicit TLS it must not insist on it
            auth_required=self._credentials is not None and self._tls is None,
            auth_require_tls=self._tls is None,
            loop=asyncio.get_running_loop(),
        )

    async def start(self, port: int = 0) -> SmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host="127.0.0.1", port=port, ssl=self._tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
