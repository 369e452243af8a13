"""The email action against SMTP servers that answer slowly on purpose (a line-based server on
loopback): the call ends within the action's timeout whatever the server does; a message the
server accepted counts as sent even when its goodbye never comes (a retry would send it twice),
one it never accepted is retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from action_helpers import make_context, run

from rulekit.actions.email import Email, EmailParams, SmtpIntegration
from rulekit.errors import RetryableActionError

pytest.importorskip("aiosmtplib")

IO_GRACE = 0.1
"""Real seconds the virtual clock waits for loopback I/O before it jumps to the next timer."""


@dataclass
class SlowSmtp:
    """An SMTP server answering each command after ``delay`` seconds; ``drip``: its greeting
    one byte at a time, forever; ``quit_answers``: whether QUIT gets a reply."""

    delay: float = 0.0
    drip: bool = False
    quit_answers: bool = True
    accepted: list[bytes] = field(default_factory=list)
    connections: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _reply(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        await asyncio.sleep(self.delay)
        writer.write(line)
        await writer.drain()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        try:
            if self.drip:
                while True:
                    writer.write(b"2")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            await self._reply(writer, b"220 slow.example ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    await self._reply(writer, b"250-slow.example\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    await self._reply(writer, b"354 go on\r\n")
                    body = b""
                    while not body.endswith(b"\r\n.\r\n"):
                        chunk = await reader.readline()
                        if not chunk:
                            return
                        body += chunk
                    await self._reply(writer, b"250 queued\r\n")
                    self.accepted.append(body)
                elif verb == b"QUIT":
                    if self.quit_answers:
                        await self._reply(writer, b"221 bye\r\n")
                    else:
                        await asyncio.sleep(3600)
                    return
                else:
                    await self._reply(writer, b"250 ok\r\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def send(
    server: SlowSmtp, step_timeout: float
) -> tuple[dict[str, object] | RetryableActionError, float, Email]:
    """Send one email through ``server`` on virtual time: the result (or the retryable error),
    the seconds it took on the loop's clock, the action."""
    settings = SmtpIntegration.model_validate(
        {
            "host": "127.0.0.1",
            "port": 1,  # replaced once the server listens
            "security": "none",
            "from": "rulekit@example.com",
            "timeout": step_timeout,
        }
    )
    action = Email(settings)
    params = EmailParams(to=["ops@example.com"], subject="Hi", text="Hello")

    async def scenario() -> tuple[dict[str, object] | RetryableActionError, float]:
        loop = asyncio.get_running_loop()
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        settings.port = listening.sockets[0].getsockname()[1]
        started = loop.time()
        try:
            try:
                result: dict[str, object] | RetryableActionError = await action.execute(
                    params, make_context()
                )
            except RetryableActionError as exc:
                result = exc
            return result, loop.time() - started
        finally:
            listening.close()
            for writer in server.connections:  # the server hangs up too, at last
                writer.close()

    # the server's delays and the action's timeouts on the loop's clock: exact, however busy
    # the machine (the I/O itself happens at once on loopback, within the grace)
    result, took = run(action, scenario, io_grace=IO_GRACE)
    return result, took, action


def test_an_accepted_message_is_sent_even_when_quit_never_answers() -> None:
    # every step within its own timeout (1.2 s), the six of them within the action's (4.8 s),
    # and no goodbye: waiting for it would take the call past its timeout (and its job would
    # be sent again)
    server = SlowSmtp(delay=0.72, quit_answers=False)
    result, took, action = send(server, step_timeout=1.2)
    assert isinstance(result, dict) and result["sent"] is True and len(server.accepted) == 1
    assert 6 * 0.72 <= took <= action.timeout


def test_a_server_too_slow_to_accept_is_retried_within_the_timeout() -> None:
    server = SlowSmtp(delay=0.5)  # each step within 0.6 s; six of them are not within 2.4 s
    result, took, _ = send(server, step_timeout=0.6)
    assert isinstance(result, RetryableActionError)
    assert "not accepted within 2.4 s" in result.message
    assert server.accepted == []
    assert took == pytest.approx(2.4)


def test_a_greeting_dripped_forever_ends_within_the_timeout() -> None:
    server = SlowSmtp(drip=True)
    result, took, action = send(server, step_timeout=0.5)
    assert isinstance(result, RetryableActionError)
    assert took <= action.timeout == 2.0
