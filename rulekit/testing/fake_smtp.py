"""A real SMTP server on loopback (aiosmtpd) that records what it receives.

For tests of the ``email`` action (aiosmtpd is in rulekit's ``test`` extra)::

    with FakeSmtp(username="bot", password="pw", tls=context) as smtp:   # STARTTLS offered
        ...                                     # point integrations.smtp at smtp.port
        smtp.fail("451 4.3.0 Try again later")  # the next DATA answers this
        smtp.drop()                             # the next DATA closes the connection unanswered
        smtp.lose_reply()                       # the next message is taken, its answer lost
        smtp.refuse("a@b.example", "450 4.2.0 Greylisted")  # RCPT TO that address answers this
        [m.recipients for m in smtp.messages]

``implicit_tls=True`` serves TLS from the first byte (``security: tls``); ``smtputf8=False``
offers no SMTPUTF8 (addresses outside ASCII are refused). With a username, AUTH
is required (and refused for any other password); ``logins`` counts the tries. Each received
message keeps the name the client gave in EHLO (``helo``).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    login: str | None
    helo: str | None = None
    """The name the client gave in EHLO (or HELO)."""

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Controller(Controller):
    """aiosmtpd's controller on an ephemeral port (the port is read from the bound socket)."""

    def _create_server(self) -> Any:
        async def create() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class FakeSmtp:
    """A recording SMTP server on 127.0.0.1 with scripted failures."""

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        smtputf8: bool = True,
    ) -> None:
        self.username = username
        self.password = password
        self.messages: list[ReceivedMessage] = []
        self.logins: list[str] = []
        self.attempts = 0
        """DATA commands received: messages taken, and the ones a scripted reply refused."""
        self._script: deque[str] = deque()
        self._refusals: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        options: dict[str, Any] = {}
        if username is not None:
            if tls is None:
                raise ValueError("a login needs TLS (aiosmtpd refuses AUTH in clear, and so do we)")
            options.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=True
            )
        if tls is not None and not implicit_tls:
            options["tls_context"] = tls
        self._controller = _Controller(
            self,
            hostname="127.0.0.1",
            port=0,
            ssl_context=tls if implicit_tls else None,
            server_hostname="localhost",
            enable_SMTPUTF8=smtputf8,
            **options,
        )

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeSmtp:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> FakeSmtp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._controller.port)

    # scripting -------------------------------------------------------------------------------
    def fail(self, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` messages' DATA with ``reply`` (e.g. ``451 4.3.0 Later``)."""
        with self._lock:
            self._script.extend([reply] * times)

    def drop(self, times: int = 1) -> None:
        """Close the connection, unanswered, at the next ``times`` messages' DATA."""
        self.fail("drop", times)

    def lose_reply(self, times: int = 1) -> None:
        """Take the next ``times`` messages (they are in :attr:`messages`), then close the
        connection before answering: the client cannot tell that they were taken."""
        self.fail("lose", times)

    def refuse(self, address: str, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` RCPT TO of ``address`` with ``reply``."""
        with self._lock:
            self._refusals.setdefault(address, deque()).extend([reply] * times)

    # aiosmtpd handler hooks ------------------------------------------------------------------
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            scripted = self._refusals.get(address)
            refusal = scripted.popleft() if scripted else None
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode()
        self.logins.append(login)
        ok = login == self.username and auth_data.password.decode() == self.password
        # handled=False: aiosmtpd answers the refusal itself (535)
        return AuthResult(success=True) if ok else AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.attempts += 1
            scripted = self._script.popleft() if self._script else None
        if scripted == "drop":
            server.transport.abort()
            return "421 4.4.2 dropped"
        if scripted is not None and scripted != "lose":
            return scripted
        login = self.logins[-1] if session.authenticated and self.logins else None
        self.messages.append(
            ReceivedMessage(
                sender=envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or envelope.content),
                tls=server.transport.get_extra_info("sslcontext") is not None,
                login=login,
                helo=session.host_name,
            )
        )
        if scripted == "lose":
            server.transport.abort()
            return "421 4.4.2 dropped"
        return "250 2.0.0 Message accepted"
