"""The slack action against a fake Web API, through slack-sdk's real AsyncWebClient."""

from __future__ import annotations

import asyncio
import logging
import traceback
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from action_helpers import make_context, received, run

from rulekit.actions.slack import Slack, SlackIntegration, SlackParams
from rulekit.errors import MAX_RETRY_AFTER, ActionError, PermanentActionError, RetryableActionError
from rulekit.escapes import escape_mrkdwn
from rulekit.testing.clock import run_virtual
from rulekit.testing.fake_slack import FakeSlack
from rulekit.testing.fakehttp import Response


def slack_action(fake: FakeSlack, **options) -> Slack:
    return Slack(SlackIntegration(token=fake.token, base_url=fake.base_url), **options)


def post(action: Slack, *params: SlackParams):
    async def scenario():
        return [await action.execute(p, make_context()) for p in params]

    return run(action, scenario)


def failure(action: Slack, params: SlackParams) -> ActionError:
    with pytest.raises(ActionError) as caught:
        post(action, params)
    return caught.value


def test_posts_the_message_and_returns_its_ts(fake_slack):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    results = post(
        slack_action(fake_slack),
        SlackParams(channel="C0SUPPORT", text="*Refund* from &lt;!channel&gt;"),
        SlackParams(channel="#sales", text="with blocks", blocks=blocks),
    )
    assert results == [
        {"ts": "1700000000.000001", "channel": "C0SUPPORT"},
        {"ts": "1700000000.000002", "channel": "#sales"},
    ]
    first, second = fake_slack.messages()
    assert first.request.path == "/api/chat.postMessage"
    assert first.request.headers["authorization"] == f"Bearer {fake_slack.token}"
    # the text arrives as rendered: escaped once by the template layer, not again here
    assert first.request.json == {"channel": "C0SUPPORT", "text": "*Refund* from &lt;!channel&gt;"}
    assert second.request.json == {"channel": "#sales", "text": "with blocks", "blocks": blocks}


def test_escape_mrkdwn_defuses_mentions():
    assert escape_mrkdwn("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_one_client_and_session_per_action(fake_slack):
    action = slack_action(fake_slack)

    async def scenario():
        await action.execute(SlackParams(channel="C1", text="a"), make_context())
        client = action._client
        await action.execute(SlackParams(channel="C1", text="b"), make_context())
        assert action._client is client
        await action.aclose()
        assert action._client is None
        await action.execute(SlackParams(channel="C1", text="c"), make_context())

    run(action, scenario)
    assert [m.text for m in fake_slack.messages(accepted=True)] == ["a", "b", "c"]


def test_rate_limit_is_retryable_with_retry_after(fake_slack):
    fake_slack.rate_limit(retry_after=7, channel="C1")
    exc = failure(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)
    assert (exc.retry_after, exc.status, exc.scope) == (7.0, 429, "destination")
    assert exc.message == "Slack chat.postMessage failed: ratelimited (HTTP 429)"


def test_a_retry_after_given_as_an_http_date_is_honoured(fake_slack):
    """Retry-After may be a date (RFC 9110): the wait runs until then, counted on the action's
    clock, so the expected wait is exact."""
    action = slack_action(fake_slack)
    action.clock = lambda: 1_750_000_000.0
    fake_slack.rate_limit(
        retry_after=format_datetime(datetime.fromtimestamp(1_750_000_042, UTC), usegmt=True)
    )
    exc = failure(action, SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)
    assert (exc.retry_after, exc.status) == (42.0, 429)


@pytest.mark.parametrize("header", ["99999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_of_years_pauses_the_channel_for_an_hour_at_most(fake_slack, header):
    fake_slack.rate_limit(retry_after=header, channel="C1")
    exc = failure(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)
    assert exc.retry_after == MAX_RETRY_AFTER


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retryable(fake_slack, status):
    fake_slack.server_error(status)
    exc = failure(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError) and exc.status == status


def test_a_transient_slack_error_with_200_is_retryable(fake_slack):
    fake_slack.fail(Response(200, {"ok": False, "error": "service_unavailable"}))
    exc = failure(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)


def test_an_unknown_channel_is_permanent():
    with FakeSlack(channels=["C1"]) as fake:
        exc = failure(slack_action(fake), SlackParams(channel="C404", text="x"))
    assert isinstance(exc, PermanentActionError)
    assert exc.message == "Slack chat.postMessage failed: channel_not_found"


def test_other_client_errors_are_permanent_with_slack_details(fake_slack):
    fake_slack.fail(
        Response(
            400,
            {
                "ok": False,
                "error": "invalid_blocks",
                "response_metadata": {"messages": ["[ERROR] must be an array"]},
            },
        )
    )
    exc = failure(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, PermanentActionError) and exc.status == 400
    assert exc.message == (
        "Slack chat.postMessage failed: invalid_blocks ([ERROR] must be an array) (HTTP 400)"
    )


def test_a_bad_token_is_permanent_and_never_shown(fake_slack, caplog):
    caplog.set_level(logging.DEBUG)
    action = Slack(SlackIntegration(token="xoxb-wrong-secret-42", base_url=fake_slack.base_url))
    exc = failure(action, SlackParams(channel="C1", text="x"))
    assert isinstance(exc, PermanentActionError)
    assert exc.message == "Slack chat.postMessage failed: invalid_auth"
    assert "Sending a request" in caplog.text  # slack-sdk logged the request
    everything = caplog.text + "".join(traceback.format_exception(exc)) + repr(action)
    assert "xoxb-wrong-secret-42" not in everything


def test_the_token_never_leaks_whatever_fails(fake_slack, caplog):
    caplog.set_level(logging.DEBUG)
    action = slack_action(fake_slack, timeout=0.5)
    fake_slack.rate_limit(1)
    fake_slack.server_error()
    fake_slack.hang(3)
    seen = [repr(action), str(action.settings)]

    async def scenario():
        for _ in range(4):
            try:
                seen.append(
                    repr(await action.execute(SlackParams(channel="C1", text="x"), make_context()))
                )
            except ActionError as exc:
                seen.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    run(action, scenario)
    assert fake_slack.token not in "\n".join(seen) + caplog.text


def test_a_hanging_api_times_out_as_retryable(fake_slack):
    fake_slack.hang(3600)  # answered only when the fake stops
    action = slack_action(fake_slack, timeout=0.5)

    async def scenario() -> tuple[RetryableActionError, float]:
        try:
            with pytest.raises(RetryableActionError) as caught:
                await action.execute(SlackParams(channel="C1", text="x"), make_context())
            return caught.value, asyncio.get_running_loop().time()
        finally:
            await action.aclose()

    # on virtual time: the action gives up at its own timeout exactly, not at the SDK's
    exc, gave_up_at = run_virtual(scenario(), io_grace=0.2)
    assert "did not answer within 0.5 s" in exc.message
    assert gave_up_at == pytest.approx(0.5)
    assert received(lambda: fake_slack.messages("C1"))  # the request had reached the service


def test_a_refused_connection_is_retryable():
    with FakeSlack() as fake:
        integration = SlackIntegration(token=fake.token, base_url=fake.base_url)
    exc = failure(Slack(integration, timeout=2), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)


def test_unavailable_says_what_is_missing():
    assert Slack(None).unavailable() == "Slack is not configured"
    assert Slack(SlackIntegration(token="")).unavailable() == "the Slack token is empty"
    assert Slack(SlackIntegration()).unavailable() == "the Slack token is empty"
    assert Slack(SlackIntegration(token="xoxb-1")).unavailable() is None
    with pytest.raises(PermanentActionError, match="Slack is not configured"):
        post(Slack(None), SlackParams(channel="C1", text="x"))


def test_pacing_is_per_channel():
    action = Slack(SlackIntegration(token="xoxb-1"))
    paces = action.pacing(SlackParams(channel="C1", text="x"))
    assert [(p.key, p.limit and (p.limit.count, p.limit.period), p.scope) for p in paces] == [
        ("slack:C1", (1, 1.0), "destination"),
        ("slack", None, "service"),
    ]


def test_the_client_builds_no_debug_lines_unless_rulekit_logs_at_debug(fake_slack, caplog):
    caplog.set_level(logging.DEBUG)  # every record reaches the handler...
    caplog.set_level(logging.WARNING, logger="rulekit")  # ...but rulekit logs warnings only
    post(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert fake_slack.messages()
    assert "Sending a request" not in caplog.text  # the SDK did not format its debug line


def test_posts_what_the_sdk_api_call_would_post(fake_slack):
    from slack_sdk.version import __version__
    from slack_sdk.web.async_client import AsyncWebClient

    params = SlackParams(channel="C1", text="same", blocks=[{"type": "divider"}])
    post(slack_action(fake_slack), params)

    async def through_api_call():
        client = AsyncWebClient(token=fake_slack.token, base_url=fake_slack.base_url)
        client.headers["User-Agent"] = f"rulekit slackclient/{__version__}"  # as ours says
        await client.api_call("chat.postMessage", json=params.model_dump(exclude_none=True))

    asyncio.run(through_api_call())
    ours, sdk = (m.request for m in fake_slack.messages())
    assert (ours.method, ours.path, ours.json) == (sdk.method, sdk.path, sdk.json)
    kept = ("authorization", "content-type", "user-agent")
    assert {k: ours.headers.get(k) for k in kept} == {k: sdk.headers.get(k) for k in kept}


def test_an_answer_that_is_not_ok_is_classified_as_the_sdk_error_would_be(fake_slack):
    fake_slack.fail(Response(200, {"ok": False, "error": "ratelimited"}))
    exc = failure(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)
    assert exc.status == 429 and "ratelimited" in str(exc)


def test_an_sdk_without_the_private_sender_pieces_posts_through_api_call(fake_slack, monkeypatch):
    """The prebuilt URL and headers come from private helpers of slack-sdk: a version without
    them still posts (through the public ``api_call``) and still tells failures apart."""
    import slack_sdk.web.internal_utils as internal

    monkeypatch.delattr(internal, "_get_url")  # as if a later version renamed it
    post(slack_action(fake_slack), SlackParams(channel="C1", text="still sent"))
    (message,) = fake_slack.messages()
    assert message.request.path.endswith("/chat.postMessage")
    assert message.request.json == {"channel": "C1", "text": "still sent"}
    fake_slack.fail(Response(200, {"ok": False, "error": "channel_not_found"}))
    exc = failure(slack_action(fake_slack), SlackParams(channel="C2", text="x"))
    assert isinstance(exc, PermanentActionError) and "channel_not_found" in str(exc)


@pytest.mark.parametrize("sender", ["prebuilt", "api_call"])
def test_the_user_agent_names_rulekit_not_the_hosts_system(fake_slack, monkeypatch, sender):
    import platform

    import slack_sdk.web.internal_utils as internal
    from slack_sdk.version import __version__

    if sender == "api_call":
        monkeypatch.delattr(internal, "_get_url")  # the SDK's public call builds the headers
    post(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    [message] = fake_slack.messages()
    agent = message.request.headers["user-agent"]
    assert agent == f"rulekit slackclient/{__version__}"
    assert platform.release() not in agent and "Python/" not in agent


def test_a_retry_after_of_years_makes_no_later_limit_of_another_channel_app_wide(fake_slack):
    """A channel limited "for years" pauses for an hour (MAX_RETRY_AFTER); once that hour is
    over, another channel's 429 is that channel's own, not the whole app's (which would pause
    every channel)."""
    action = slack_action(fake_slack)
    fake_slack.rate_limit(retry_after="99999999999", channel="C1")
    fake_slack.rate_limit(retry_after=5, channel="C2")

    async def scenario() -> list[str]:
        scopes = []
        for channel in ("C1", "C2"):
            with pytest.raises(RetryableActionError) as caught:
                await action.execute(SlackParams(channel=channel, text="x"), make_context())
            scopes.append(caught.value.scope)
            await action.aclose()  # (no timer of the session's moves the virtual clock)
            await asyncio.sleep(MAX_RETRY_AFTER + 1)
        return scopes

    assert run_virtual(scenario(), io_grace=0.2) == ["destination", "destination"]


@pytest.mark.parametrize(("status", "header"), [(503, "120"), (500, "120"), (503, "date")])
def test_slack_down_saying_when_to_come_back_pauses_every_channel_that_long(
    fake_slack, status, header
):
    """A 5xx with Retry-After (Slack in maintenance) is honoured, for the whole API: retried
    on the usual backoff, the posts would spend their attempts on the outage."""
    action = slack_action(fake_slack)
    action.clock = lambda: 1_800_000_000.0
    if header == "date":
        header = format_datetime(datetime.fromtimestamp(1_800_000_120, UTC), usegmt=True)
    fake_slack.fail(
        Response(status, {"ok": False, "error": "service_unavailable"}, {"Retry-After": header})
    )
    exc = failure(action, SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)
    assert (exc.status, exc.retry_after, exc.scope) == (status, 120.0, "service")


def test_a_5xx_without_retry_after_pauses_nothing(fake_slack):
    fake_slack.server_error(503)
    exc = failure(slack_action(fake_slack), SlackParams(channel="C1", text="x"))
    assert isinstance(exc, RetryableActionError)
    assert (exc.retry_after, exc.scope) == (None, "destination")
