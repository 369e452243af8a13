"""The email action's timeout covers the SMTP exchange only, not the wait for its pacing slot: a
message queued behind another to its domain is sent, not timed out for having waited; the wait
is bounded by the job's lease instead, and a slot that would come too late is a retry for when
it comes, with nothing sent."""

from __future__ import annotations

import asyncio

import pytest
from action_helpers import make_context, run

from rulekit.actions.email import Email, EmailParams, SmtpIntegration
from rulekit.errors import RetryableActionError

pytest.importorskip("aiosmtplib")
pytest.importorskip("aiosmtpd")
from rulekit.testing.fake_smtp import FakeSmtp

STEP = 1.0
"""Seconds per SMTP step: the action's timeout is four of them."""
SPACING = 5.0
"""One message per this many seconds to a domain: longer than the action's timeout."""


def email_action(server: FakeSmtp) -> Email:
    settings = SmtpIntegration.model_validate(
        {
            "host": "127.0.0.1",
            "port": server.port,
            "security": "none",
            "from": "Support <support@shop.example>",
            "timeout": STEP,
            "rate_limit": f"1/{SPACING:g}s",
        }
    )
    return Email(settings)


def to(address: str) -> EmailParams:
    return EmailParams.model_validate({"to": [address], "subject": "Hello", "text": "Hi"})


@pytest.mark.slow
def test_a_message_that_waited_for_its_slot_longer_than_the_timeout_is_sent() -> None:
    with FakeSmtp() as server:
        action = email_action(server)
        assert action.timeout < SPACING  # the second message waits longer than the timeout

        async def scenario() -> list[dict[str, object]]:
            first = asyncio.create_task(action.execute(to("ann@example.com"), make_context()))
            second = asyncio.create_task(action.execute(to("bob@example.com"), make_context()))
            return list(await asyncio.gather(first, second))

        results = run(action, scenario)
    assert [result["sent"] for result in results] == [True, True]
    assert sorted(m.recipients[0] for m in server.messages) == [
        "ann@example.com",
        "bob@example.com",
    ]


def test_a_slot_that_would_come_too_late_for_the_lease_is_a_retry_with_nothing_sent() -> None:
    with FakeSmtp() as server:
        action = email_action(server)
        lease = action.timeout + 1.0  # leaves one second to wait: the slot is five away

        async def scenario() -> tuple[object, object]:
            first = await action.execute(to("ann@example.com"), make_context(lease=lease))
            try:
                await action.execute(to("bob@example.com"), make_context(lease=lease))
            except RetryableActionError as exc:
                return first, exc
            return first, None

        first, late = run(action, scenario)
    assert isinstance(first, dict) and first["sent"] is True
    assert isinstance(late, RetryableActionError)
    assert "nothing was sent" in late.message
    assert late.retry_after is not None and late.retry_after > 1.0
    assert [m.recipients for m in server.messages] == [["ann@example.com"]]
