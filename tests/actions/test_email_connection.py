"""How the email action reaches its SMTP server: the name looked up by the loop's own
``getaddrinfo`` (the daemon's lookups), under uvloop too, with TLS checked against the name; the
name it gives in EHLO; and a failed call that drops what it had not yet sent, so a server that
stopped reading in the middle of a message never gets its end."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from action_helpers import SMTP_NAME, make_context, run

from rulekit.actions.email import Email, EmailParams, SmtpIntegration
from rulekit.config import load_config
from rulekit.errors import ActionError, PermanentActionError, RetryableActionError, ValidationErrors
from rulekit.plugins import load_plugins

pytest.importorskip("aiosmtplib")
pytest.importorskip("aiosmtpd")
pytest.importorskip("uvloop")
import uvloop

from rulekit.testing.fake_smtp import FakeSmtp

T = TypeVar("T")
PARAMS = EmailParams(to=["ops@shop.example"], subject="New chat", text="hello")


def settings_for(port: int, **options: Any) -> SmtpIntegration:
    return SmtpIntegration.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "from": "bot@shop.example"}
        | options
    )


def on_uvloop(action: Email, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run ``scenario`` on a uvloop loop (the daemon's, under uvicorn)."""

    async def main() -> T:
        try:
            return await scenario()
        finally:
            await action.aclose()
            await _uv_connections_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def _uv_connections_closed(patience: float = 10.0) -> None:
    """Wait until uvloop's connections are closed (a TLS close finishes a round trip later; a
    loop closed before leaks the socket into the unraisable-exception check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while loop.time() < deadline and any(
        type(o).__name__ == "TCPTransport" and "closed=False" in repr(o) for o in gc.get_objects()
    ):
        await asyncio.sleep(0.01)


def known_names(names: dict[str, str], asked: list[str]) -> Callable[..., Awaitable[Any]]:
    """A loop ``getaddrinfo`` that knows ``names`` (as the daemon's lookups would find them)
    and records what it was asked; a name it does not know never answers (an address is
    answered as it is: uvloop's ``sock_connect`` asks for one)."""

    async def getaddrinfo(host: Any, port: Any, **options: Any) -> Any:
        try:
            return socket.getaddrinfo(str(ipaddress.ip_address(host)), port, **options)
        except ValueError:
            asked.append(host)
        if host not in names:
            await asyncio.Event().wait()
        return socket.getaddrinfo(names[host], port, **options)

    return getaddrinfo


def send_by_name(action: Email, names: dict[str, str], asked: list[str]) -> Any:
    async def scenario() -> Any:
        asyncio.get_running_loop().getaddrinfo = known_names(names, asked)  # type: ignore[method-assign]
        try:
            return await action.execute(PARAMS, make_context())
        except ActionError as exc:
            return exc

    return on_uvloop(action, scenario)


@pytest.mark.parametrize(("security", "implicit"), [("starttls", False), ("tls", True)])
def test_the_servers_name_is_looked_up_by_the_loop_under_uvloop(
    server_tls, certificate, security, implicit
):
    """aiosmtplib gave the name to uvloop's create_connection, which looked it up itself, past
    the daemon's lookups (a name whose DNS never answered held a thread per attempt): the name
    is looked up through the loop's getaddrinfo, and TLS still checks the name."""
    asked: list[str] = []
    with FakeSmtp(tls=server_tls, implicit_tls=implicit) as server:
        settings = settings_for(
            server.port, host=SMTP_NAME, security=security, ca_file=str(certificate[0])
        )
        result = send_by_name(Email(settings), {SMTP_NAME: "127.0.0.1"}, asked)
    assert isinstance(result, dict) and result["sent"] is True, result
    assert SMTP_NAME in asked
    [received] = server.messages
    assert received.tls is True


def test_the_certificate_is_checked_against_the_name_not_the_address(server_tls, certificate):
    """The certificate is good for 127.0.0.1, where the name leads, but not for the name."""
    with FakeSmtp(tls=server_tls) as server:
        settings = settings_for(
            server.port,
            host="other.rulekit.test",
            security="starttls",
            ca_file=str(certificate[0]),
        )
        error = send_by_name(Email(settings), {"other.rulekit.test": "127.0.0.1"}, [])
    assert isinstance(error, PermanentActionError) and "not trusted" in error.message
    assert not server.messages


def test_a_name_that_never_answers_ends_within_the_step_timeout():
    asked: list[str] = []
    action = Email(settings_for(25, host="silent.rulekit.test", timeout=0.5))

    async def scenario() -> ActionError:
        asyncio.get_running_loop().getaddrinfo = known_names({}, asked)  # type: ignore[method-assign]
        with pytest.raises(RetryableActionError) as caught:
            await action.execute(PARAMS, make_context())
        return caught.value

    error = run(action, scenario, io_grace=0.1)
    assert asked == ["silent.rulekit.test"]
    assert error.message == (
        "SMTP silent.rulekit.test: the name was not looked up within 0.5 s: nothing was sent"
    )


def test_ehlo_gives_the_senders_domain_or_the_configured_name_never_the_machines():
    """aiosmtplib's default EHLO name is the machine's own fully qualified name (told to every
    mail server, and passed on in the headers of every message), looked up at each connection
    in a thread of the default executor."""
    with FakeSmtp() as server:
        run_action = Email(settings_for(server.port, **{"from": "Shop <bot@Shop.Example>"}))
        run(run_action, lambda: run_action.execute(PARAMS, make_context()))
        named = Email(settings_for(server.port, helo_name="mx-out.shop.example"))
        run(named, lambda: named.execute(PARAMS, make_context()))
    assert [m.helo for m in server.messages] == ["shop.example", "mx-out.shop.example"]
    assert socket.getfqdn() not in [m.helo for m in server.messages]


@pytest.mark.parametrize("name", ["mx out.example", "mx\r\nRSET", "-x.example.", "[1.2.3.4"])
def test_a_helo_name_that_is_not_a_name_is_a_config_error(tmp_path, name):
    body = {"host": "mail.example", "from": "bot@shop.example", "helo_name": name}
    path = tmp_path / "rulekit.yaml"
    path.write_text(json.dumps({"integrations": {"smtp": body}}))
    with pytest.raises(ValidationErrors) as caught:
        load_config(path, load_plugins(entry_points=False))
    assert "helo_name" in str(caught.value)


@dataclass
class StallingSmtp:
    """Answers at once until DATA's 354, then reads nothing until ``resume`` is set; then reads
    what still comes, until the connection ends."""

    resume: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    received: bytearray = field(default_factory=bytearray)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 stall.example ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-stall.example\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await self.resume.wait()
                    while chunk := await reader.read(1 << 16):
                        self.received += chunk
                    return
                else:
                    writer.write(b"250 ok\r\n")
        except ConnectionError:
            pass
        finally:
            self.ended.set()
            writer.close()


def test_a_server_that_stops_reading_mid_message_never_gets_its_end_after_the_call_failed():
    """The call fails when the server's answer to the message does not come in time; aiosmtplib
    then closed the connection gently, and a gently closed connection still sent the rest of
    the message once the server read again: its final dot too, so the server took the message
    the call said was not sent, and the retry sent it twice. The connection is reset."""
    server = StallingSmtp()
    text = ("x" * 70 + "\n") * 90_000  # 6 MB: more than the system buffers of both ends hold
    action = Email(settings_for(1, timeout=0.5))
    params = EmailParams(to=["ops@shop.example"], subject="Big", text=text)

    async def scenario() -> ActionError:
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        try:
            action.settings.port = listening.sockets[0].getsockname()[1]
            with pytest.raises(RetryableActionError) as caught:
                await action.execute(params, make_context())
            server.resume.set()
            await asyncio.wait_for(server.ended.wait(), 30)
            return caught.value
        finally:
            listening.close()

    error = run(action, scenario)
    assert "SMTP 127.0.0.1" in error.message
    assert not server.received.endswith(b"\r\n.\r\n")
    assert 0 < len(server.received) < len(text)
