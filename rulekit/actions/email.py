"""``email``: send a message through the configured SMTP server (with aiosmtplib).

``to`` items are literal (an address, ``assignee``, ``group:<name>``, ``client``), resolved when
the message is sent (an ``assign`` earlier in the plan decides ``assignee``); an email to the
client goes to the client alone and is client-facing (skips ``recovered`` events). Values in
``html`` are escaped for where they land (:func:`rulekit.actions.telegram_markup.resolve_html`,
with http, https and mailto links); subjects lose their line breaks (see
:mod:`rulekit.actions.email_message`).

Sending is paced per recipient domain. SMTP 4xx replies, timeouts and lost connections are
retried; 5xx replies (a refused login included) are final. The whole exchange has the action's
timeout, counted from when the message's pacing slot came, not from when it began to wait for
it: a message queued behind others to its domain is not cut short for having waited. The wait
itself is bounded by the job's lease (:attr:`ActionContext.lease
<rulekit.actions.base.ActionContext.lease>`): a slot that would come too late for the exchange
to end within the lease is not waited for, and the call is retried when it comes (nothing was
sent). A message the server accepted counts as sent even if its goodbye never comes; a call
that fails drops its connection at once. The server's name is looked up, and the name rulekit
gives in EHLO chosen, by :mod:`rulekit.actions.smtp_connection`. The password never appears in
a message: neither as it is nor base64-encoded as AUTH sends it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from rulekit.actions.base import Action, ActionContext
from rulekit.actions.email_message import (
    ENCODED_WORD,
    build_message,
    domain_of,
    header_text,
    message_sender,
    recipient_problem,
    recipients,
    sender_address,
    subject_line,
)
from rulekit.actions.pacing import Limit, Pace, Pacer
from rulekit.actions.rates import Rate
from rulekit.actions.smtp_connection import (
    drop_connection,
    ehlo_name,
    helo_name_problem,
    open_socket,
)
from rulekit.actions.smtp_errors import classify
from rulekit.actions.telegram_markup import resolve_html
from rulekit.addresses import mailbox
from rulekit.config import Config
from rulekit.errors import (
    PermanentActionError,
    RetryableActionError,
    did_you_mean,
    elide,
)
from rulekit.event import Event
from rulekit.expr.markup import Interpolations, map_leaves
from rulekit.hookspecs import hookimpl
from rulekit.hosts import ascii_host, host_problem, is_loopback
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.secrets import redact

if TYPE_CHECKING:
    import aiosmtplib

__all__ = ["Email", "EmailParams", "SmtpIntegration"]

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
"""Schemes a value may give a link in an email's HTML."""
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
MAX_REPLY = 300
"""Characters the audit keeps of each reply of the server (the message's, a refusal's)."""


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


class SmtpIntegration(StrictModel):
    """``integrations: {smtp: ...}``: the server every ``email`` goes through."""

    host: str = Field(min_length=1, description="The SMTP server.")
    port: int | None = Field(None, ge=1, le=65535, description="Default: 587, 465 or 25.")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (required, not opportunistic), tls, or none."
    )
    username: str | None = None
    password: SecretStr | None = Field(None, description="From ${ENV}.")
    sender: str = Field(alias="from", description="The From address (Name <addr> allowed).")
    ca_file: str | None = Field(
        None, description="CA certificates to trust (PEM), if not the system's."
    )
    helo_name: str | None = Field(
        None, description="The name given in EHLO; default: the domain of `from`."
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds for each SMTP step.")
    rate_limit: Rate = Field(Limit(1, 1.0), description="Per recipient domain: 1/s, 30/m.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        problem = host_problem(value)
        if problem:
            raise ValueError(f"`host` {problem}")
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if header_text(value) != value:
            raise ValueError("`from` cannot hold line breaks or control characters")
        if ENCODED_WORD in value:  # decoded, it may hold them: write the name as it is
            raise ValueError("`from` cannot hold an encoded word (=?): write the name as it is")
        try:
            mailbox(value)  # one, as mail programs read it (they show the first of several)
        except ValueError as exc:
            raise ValueError(f"`from` {exc}") from None
        return value

    @field_validator("helo_name")
    @classmethod
    def _helo_name(cls, value: str | None) -> str | None:
        problem = helo_name_problem(value) if value is not None else None
        if problem:
            raise ValueError(f"`helo_name` {problem}")
        return value

    @model_validator(mode="after")
    def _no_clear_credentials(self) -> SmtpIntegration:
        if self.security == "none" and (self.password is not None or self.username):
            raise ValueError(
                "security: none sends credentials in clear: use starttls or tls, "
                "or remove username and password"
            )
        return self

    @property
    def ascii_host(self) -> str:
        """The server's name as looked up and as its certificate is checked (IDNA 2008)."""
        return ascii_host(self.host)

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]


def _one_or_a_list(schema: dict[str, Any]) -> None:
    """``to``'s JSON Schema: one recipient alone, or a list; never a template."""
    recipient = {"type": "string", "minLength": 1, "not": {"pattern": r"\{\{|\{%|\{#"}}
    for key in ("type", "items", "minItems"):
        schema.pop(key, None)
    schema["anyOf"] = [recipient, {"type": "array", "items": recipient, "minItems": 1}]
    schema["x-template"] = False


class EmailParams(StrictModel):
    to: list[str] = Field(
        min_length=1,
        description="Addresses, assignee, group:<name>, or client (alone).",
        # one recipient may be written alone; never a template
        json_schema_extra=lambda schema: _one_or_a_list(schema),
    )
    # (may be empty: a client value that renders empty, a client without a name, a message
    # without text, must not keep the message from being sent)
    subject: str = Field(description="The subject (line breaks become spaces).")
    text: str = Field(description="The plain-text part (always sent).")
    html: str | None = Field(None, description="An HTML alternative; values are escaped.")
    on_recovered: bool = Field(
        False, description="Email the client about messages first seen late too."
    )

    @model_validator(mode="before")
    @classmethod
    def _literal_to(cls, data: Any) -> Any:
        if isinstance(data, dict):
            to = data.get("to")
            if isinstance(to, str):
                data = {**data, "to": [to]}
                to = data["to"]
            if isinstance(to, list) and any(isinstance(i, str) and _is_template(i) for i in to):
                raise ValueError(
                    "`to` is not a template: use addresses, assignee, group:<name>, client"
                )
        return data

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        for item in value:
            problem = recipient_problem(item)
            if problem:
                raise ValueError(problem)
        if "client" in value and len(value) > 1:
            raise ValueError(
                "`client` goes alone in `to` (the client would see the other addresses): "
                "use a second email action for the others"
            )
        return value


def domain_paces(addresses: list[str], settings: SmtpIntegration) -> list[Pace]:
    """The pacing of a message to ``addresses``: each recipient domain's ``rate_limit``."""
    return [
        Pace(f"email:{d}", settings.rate_limit) for d in sorted({domain_of(a) for a in addresses})
    ]


class Email(Action):
    name = "email"
    description = "send an email through the configured SMTP server"
    Params = EmailParams
    integration = "smtp"
    Integration = SmtpIntegration
    markup = True  # values in ``html`` are escaped
    read_by_people = True
    bounds_calls = True  # the SMTP exchange has its own deadline; the pacing wait its bound

    def __init__(self, settings: Any = None, **options: Any) -> None:
        super().__init__(settings, **options)
        if isinstance(settings, SmtpIntegration) and "timeout" not in options:
            self.timeout = settings.timeout * 4  # connect, TLS, login, send
        self._pacer: Pacer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tls_context: ssl.SSLContext | None = None

    @classmethod
    def escape(cls, values: Interpolations, params: dict[str, Any]) -> dict[str, Any]:
        """``html`` read as HTML (values escaped where they land); the rest as it is."""
        out = {k: map_leaves(v, values.plain_text) for k, v in params.items() if k != "html"}
        html = params.get("html")
        if "html" in params:
            out["html"] = (
                resolve_html(values, html, LINK_SCHEMES) if isinstance(html, str) else html
            )
        return out

    @classmethod
    def check(cls, params: EmailParams, channels: list[str], config: Config) -> list[str]:  # type: ignore[override]
        groups = config.directory.groups
        problems = []
        for item in params.to:
            if item.startswith("group:"):
                group = item.removeprefix("group:").strip()
                if groups and group not in groups:
                    problems.append(f"unknown group {group!r} in `to`{did_you_mean(group, groups)}")
        return problems

    @classmethod
    def lint(cls, params: EmailParams, config: Config) -> list[str]:  # type: ignore[override]
        settings = config.integrations.get(cls.integration or "")
        if not isinstance(settings, SmtpIntegration):
            return []
        found = []
        port, security = settings.effective_port, settings.security
        if port == 465 and security != "tls":
            # the server waits for a TLS handshake, rulekit for its greeting: every call times out
            found.append(
                f"SMTP port 465 is implicit TLS, but security is {security}: every message "
                "would time out waiting for the server's greeting; use security: tls"
            )
        elif port in (25, 587) and security == "tls":
            found.append(
                f"SMTP port {port} greets in clear, but security is tls: every message would "
                "fail its TLS handshake; use security: starttls (or port 465)"
            )
        if security == "none" and not is_loopback(settings.host):
            # (a relay on this machine: nothing leaves it in clear)
            found.append(
                f"SMTP security: none to {settings.host}: every message (and what it quotes "
                "of the client) travels unencrypted; use starttls or tls"
            )
        return found

    @classmethod
    def faces_client(cls, params: EmailParams) -> bool:  # type: ignore[override]
        return "client" in params.to

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        settings = self.settings
        if not isinstance(settings, SmtpIntegration):
            return "SMTP is not configured (integrations: smtp)"
        if settings.username and not self._password():
            return "the SMTP password is empty"
        return None

    def destination(self, params: EmailParams) -> str:  # type: ignore[override]
        return "email"

    def lane(self, params: EmailParams, event: Event) -> str:  # type: ignore[override]
        """The conversation's lane when the message goes to its ``assignee`` (an ``assign``
        earlier in the plan, a job of that lane, decides who); else a lane of the
        conversation's emails: an email waiting out its retries (an SMTP server down, up to
        ``backoff_max`` between attempts) holds up none of the conversation's replies."""
        lane = super().lane(params, event)
        if "assignee" in params.to or not lane.startswith("conversation:"):
            return lane
        return "email:" + lane.removeprefix("conversation:")

    def call_pacing(self, params: EmailParams, context: ActionContext) -> list[Pace]:  # type: ignore[override]
        """Each recipient domain's ``rate_limit``: the dispatcher waits for it before the call
        takes a call slot (:meth:`execute` still paces itself, for a call made otherwise; after
        the dispatcher's wait it finds the slot free)."""
        settings = self.settings
        if not isinstance(settings, SmtpIntegration):
            return []
        found = recipients(params.to, context.event, context.emitted, context.config.directory)
        return domain_paces(found.addresses, settings)

    def describe(self, params: EmailParams, context: ActionContext) -> str:  # type: ignore[override]
        found = recipients(params.to, context.event, context.emitted, context.config.directory)
        to = ", ".join(found.addresses) or "nobody"
        skipped = f" (left out: {'; '.join(found.left_out)})" if found.left_out else ""
        html = f"; html {params.html!r}" if params.html is not None else ""
        settings = self.settings
        via = ""
        if isinstance(settings, SmtpIntegration):
            who = f", as {settings.username}" if settings.username else ""
            via = f" via {settings.host}:{settings.effective_port} ({settings.security}{who})"
            to = f"{to} from {message_sender(settings.sender)}"
        subject = subject_line(params.subject)
        return f"email to {to}{skipped}{via}: subject {subject!r}; text {params.text!r}{html}"

    # execution -----------------------------------------------------------------------------
    async def execute(self, params: EmailParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        problem = self.unavailable()
        settings = self.settings
        if problem or not isinstance(settings, SmtpIntegration):
            raise PermanentActionError(problem or "SMTP is not configured")
        found = recipients(params.to, context.event, context.emitted, context.config.directory)
        if not found.addresses:
            return {"sent": False, "reason": "; ".join(found.left_out) or "no recipients"}
        message = build_message(
            settings.sender,
            found.addresses,
            params.subject,
            params.text,
            params.html,
            delivery=context.delivery,
        )
        # recipients an earlier attempt's server took have it (the same Message-ID): the
        # message goes to the others only
        earlier = _accepted(context.progress)
        remaining = [a for a in found.addresses if a.lower() not in earlier]
        if not remaining:
            return {"sent": True, "to": [], "earlier": sorted(earlier), "reply": ""}
        paces = domain_paces(remaining, settings)
        tls = self._tls(settings, context) if settings.security != "none" else None
        try:
            async with contextlib.AsyncExitStack() as paced:
                await self._wait_for_slot(paced, paces, context.lease)
                started = asyncio.get_running_loop().time()
                refused, reply = await self._send(settings, tls, message, remaining, started)
        except Exception as exc:
            raise classify(exc, settings.host, self._clean) from None
        result: dict[str, Any] = {"sent": True, "to": remaining, "reply": self._said(reply)}
        if earlier:
            result["earlier"] = sorted(earlier)
        if refused:
            result["refused"] = {a: self._said(str(r)) for a, r in refused.items()}
        if found.left_out:
            result["left_out"] = found.left_out
        later = {a: r for a, r in refused.items() if 400 <= getattr(r, "code", 0) < 500}
        if later:
            # a server that takes some recipients and says "later" to others (greylisting):
            # the others get it on a retry, which knows who has it
            took = earlier | {a.lower() for a in remaining if a not in refused}
            said = "; ".join(f"{a}: {self._said(str(r))}" for a, r in later.items())
            raise RetryableActionError(
                self._clean(
                    f"SMTP {settings.host} took the message for {len(took)} "
                    f"recipient(s) and refused {len(later)} for now: {said}"
                ),
                status=getattr(next(iter(later.values())), "code", None),
                progress={"accepted": sorted(took)},
            )
        return result

    async def _wait_for_slot(
        self, paced: contextlib.AsyncExitStack, paces: list[Pace], lease: float | None
    ) -> None:
        """Take the pacing slot of ``paces`` (held until ``paced`` closes), waiting no longer
        than leaves the exchange its :attr:`timeout` within ``lease``; a slot that would come
        later is a retryable failure asking to be tried again when it comes."""
        pacer = self._paced()
        bound = None if lease is None else max(lease - self.timeout, 0.0)
        try:
            async with asyncio.timeout(bound):
                await paced.enter_async_context(pacer.acquire(paces))
        except TimeoutError:
            domains = ", ".join(pace.key.removeprefix("email:") for pace in paces)
            raise RetryableActionError(
                f"email to {domains}: no sending slot (rate_limit) within {bound:g} s, in time "
                f"to send within the job's lease: nothing was sent",
                retry_after=max(pacer.delay(paces), 1.0),
            ) from None

    def _client(
        self, settings: SmtpIntegration, tls: ssl.SSLContext | None, sock: socket.socket
    ) -> aiosmtplib.SMTP:
        """The SMTP client on ``sock`` (:func:`~rulekit.actions.smtp_connection.open_socket`),
        TLS checked against the configured host name."""
        import aiosmtplib

        return aiosmtplib.SMTP(
            hostname=settings.ascii_host,
            sock=sock,
            local_hostname=ehlo_name(settings.helo_name, settings.sender),
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            username=settings.username or None,
            password=self._password() or None,
            timeout=settings.timeout,
            tls_context=tls,
        )

    async def _send(
        self,
        settings: SmtpIntegration,
        tls: ssl.SSLContext | None,
        message: EmailMessage,
        addresses: list[str],
        started: float,
    ) -> tuple[dict[str, Any], str]:
        """Send ``message`` within the action's :attr:`timeout` from ``started`` (the loop's
        time its pacing slot came; every SMTP step counted, the lookup and the connection too:
        a server answering each one slowly cannot stretch the call), then say goodbye with what
        is left of it: once the server has accepted the message, nothing may fail the call (the
        dispatcher would send it again). A call that fails drops its connection at once, what
        was not yet written with it: a server that stopped reading in the middle of the message
        must never get its end later (it would take the message the call said was not sent)."""
        deadline = started + self.timeout
        sock: socket.socket | None = None
        client: aiosmtplib.SMTP | None = None
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout_at(deadline):
                sock = await open_socket(
                    settings.ascii_host, settings.effective_port, settings.timeout
                )
                client = self._client(settings, tls, sock)
                sock = None  # the client's now: its transport closes it
                await client.connect()
                transport = client.transport  # (after STARTTLS: the TLS one)
                refused, reply = await client.send_message(
                    message, sender=sender_address(settings.sender), recipients=addresses
                )
        except BaseException as exc:
            drop_connection(client, transport, sock)
            if type(exc) is TimeoutError:  # the call's deadline (a step's is aiosmtplib's own)
                raise RetryableActionError(
                    f"SMTP {settings.host}: the message was not accepted within {self.timeout:g} s"
                ) from None
            raise
        try:
            async with asyncio.timeout_at(deadline):
                await client.quit()
        except Exception:  # accepted is sent: a slow or rude QUIT changes nothing
            drop_connection(client, transport, None)
        finally:
            client.close()
        return dict(refused), reply

    def _paced(self) -> Pacer:
        loop = asyncio.get_running_loop()
        if self._pacer is None or self._loop is not loop:
            self._pacer, self._loop = Pacer(), loop
        return self._pacer

    def _tls(self, settings: SmtpIntegration, context: ActionContext) -> ssl.SSLContext:
        """The TLS context of every call of this configuration (made at the first: making one
        reads and parses the CA certificates, some 30 ms of the event loop's time a call; a
        reload makes the actions, and so it, anew)."""
        if self._tls_context is not None:
            return self._tls_context
        if settings.ca_file is None:
            self._tls_context = ssl.create_default_context()
            return self._tls_context
        path = Path(settings.ca_file)
        if not path.is_absolute():
            path = context.config.base_dir / path
        try:
            self._tls_context = ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise PermanentActionError(
                f"cannot read the SMTP ca_file {str(path)!r}: {exc}"
            ) from None
        return self._tls_context

    def _password(self) -> str:
        password = getattr(self.settings, "password", None)
        return password.get_secret_value() if password is not None else ""

    def _said(self, reply: str) -> str:
        """A server's ``reply`` as the audit keeps it: :meth:`_clean`, and cut to
        :data:`MAX_REPLY` characters (a reply may be 32 KB, one for each recipient refused)."""
        return elide(self._clean(reply), MAX_REPLY)

    def _clean(self, text: str) -> str:
        """``text`` without the password, as it is or as AUTH encodes it."""
        password = self._password()
        if not password:
            return text
        username = getattr(self.settings, "username", None) or ""
        forms = [password]
        for raw in (password, f"\0{username}\0{password}", f"{username}\0{password}"):
            forms.append(base64.b64encode(raw.encode()).decode())
        longest_first: list[str] = sorted(forms, key=len, reverse=True)
        return redact(text, longest_first)


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Email)


def _accepted(progress: Mapping[str, Any] | None) -> set[str]:
    """The recipients (lower-cased) an earlier attempt's server took the message for."""
    accepted = (progress or {}).get("accepted")
    if not isinstance(accepted, list):
        return set()
    return {a.lower() for a in accepted if isinstance(a, str)}
