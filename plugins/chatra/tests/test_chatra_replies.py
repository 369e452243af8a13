"""Replies to visitors through Chatra's REST API, against a fake Chatra on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from chatra_samples import CHANNEL, encode, make_provider, sample_body
from rulekit.actions.autoreply import Autoreply, AutoreplyParams
from rulekit.actions.base import ActionContext
from rulekit.channels import Reply
from rulekit.config import Config
from rulekit.errors import PermanentActionError, RetryableActionError
from rulekit.event import Client, Conversation
from rulekit.store import MemoryStore
from rulekit.testing import FakeService, Response
from rulekit.testing.clock import run_virtual

from rulekit_chatra.testing import FakeChatra

CLIENT = "oaedoecve6pr5n8i4p40mgg1w103dgdzvgpmm82i"


def reply(text="Thanks, we got your order.", assignee=None):
    conversation = Conversation(id=f"{CHANNEL}:{CLIENT}", status="open", assignee=assignee)
    return Reply(conversation, Client(id=CLIENT), text)


def chatra_provider(chatra: FakeChatra, **settings):
    settings = {"base_url": chatra.base_url, **chatra.keys, "default_agent_id": "dflt", **settings}
    return make_provider(**settings)


def send(provider, what=None, timeout=5.0):
    return asyncio.run(provider.send_reply(what or reply(), timeout=timeout))


def test_a_reply_without_assignee_is_sent_as_the_default_agent(fake_chatra):
    answer = send(chatra_provider(fake_chatra))
    (request,) = fake_chatra.requests
    assert (request.method, request.path) == ("POST", "/messages/")
    assert request.headers["authorization"] == "Chatra.Simple pubKEY123:s3cretKEY456"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "clientId": CLIENT,
        "text": "Thanks, we got your order.",
        "agentId": "dflt",
        "receivedFrom": "rulekit",
    }
    assert answer["id"].startswith("fakeMsg")
    assert (answer["clientId"], answer["receivedFrom"]) == (CLIENT, "rulekit")


def test_a_reply_in_an_assigned_conversation_is_sent_as_the_assignee(fake_chatra):
    send(chatra_provider(fake_chatra), reply(assignee="anna@shop.example.com"))
    assert fake_chatra.sent == [
        {
            "clientId": CLIENT,
            "text": "Thanks, we got your order.",
            "agentEmail": "Anna@Shop.Example.com",  # the directory's spelling
            "agentName": "Anna W.",
            "receivedFrom": "rulekit",
        }
    ]


def test_an_assignee_missing_from_the_directory_is_named_by_their_email(fake_chatra):
    send(chatra_provider(fake_chatra, received_from="helpdesk"), reply(assignee="bo@x.example"))
    (body,) = fake_chatra.sent
    assert (body["agentEmail"], body["agentName"], body["receivedFrom"]) == (
        "bo@x.example",
        "bo",
        "helpdesk",
    )
    assert "agentId" not in body


def test_the_base_url_may_have_a_path(fake_chatra):
    send(chatra_provider(fake_chatra, base_url=fake_chatra.base_url + "/api/"))
    assert fake_chatra.paths() == ["/api/messages/"]


def test_a_rate_limit_is_retryable_after_the_services_delay(fake_chatra):
    fake_chatra.rate_limit(retry_after=7)
    with pytest.raises(RetryableActionError) as caught:
        send(chatra_provider(fake_chatra))
    error = caught.value
    assert (error.status, error.retry_after, error.scope) == (429, 7.0, "service")
    assert "Too many requests" in error.message and "7s" in error.message


@pytest.mark.parametrize("status", [500, 503])
def test_chatra_down_saying_when_to_come_back_pauses_the_account_that_long(fake_chatra, status):
    fake_chatra.script(Response(status, {"message": "maintenance"}, {"Retry-After": "90"}))
    with pytest.raises(RetryableActionError) as caught:
        send(chatra_provider(fake_chatra))
    error = caught.value
    assert (error.status, error.retry_after, error.scope) == (status, 90.0, "service")
    assert "maintenance" in error.message and "90s" in error.message


def test_retry_after_may_be_an_http_date(fake_chatra):
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake_chatra.rate_limit(retry_after=format_datetime(when, usegmt=True))
    with pytest.raises(RetryableActionError) as caught:
        send(chatra_provider(fake_chatra))
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 31


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(fake_chatra, status):
    fake_chatra.fail(status, "Service unavailable")
    with pytest.raises(RetryableActionError) as caught:
        send(chatra_provider(fake_chatra))
    assert caught.value.status == status
    assert f"HTTP {status}" in caught.value.message
    assert "Service unavailable" in caught.value.message


def test_wrong_keys_are_permanent_and_keep_the_services_message(fake_chatra):
    provider = chatra_provider(fake_chatra, secret_key="wrongSECRET789")
    with pytest.raises(PermanentActionError) as caught:
        send(provider)
    error = caught.value
    assert error.status == 401 and error.retryable is False
    assert "API keys" in error.message and "Invalid API keys" in error.message
    assert "wrongSECRET789" not in error.message


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_refusals_are_permanent(fake_chatra, status):
    fake_chatra.fail(status, "No such client")
    with pytest.raises(PermanentActionError) as caught:
        send(chatra_provider(fake_chatra))
    assert caught.value.status == status
    assert "No such client" in caught.value.message


def test_the_secret_key_never_appears_even_when_the_service_echoes_it(fake_chatra):
    fake_chatra.fail(400, "bad header: Chatra.Simple pubKEY123:s3cretKEY456")
    with pytest.raises(PermanentActionError) as caught:
        send(chatra_provider(fake_chatra))
    assert "s3cretKEY456" not in str(caught.value)
    assert "pubKEY123:**********" in str(caught.value)


def test_a_hanging_service_is_a_retryable_timeout(fake_chatra):
    fake_chatra.hang(3600)  # answered only when the fake stops
    provider = chatra_provider(fake_chatra)

    async def scenario() -> tuple[RetryableActionError, float]:
        with pytest.raises(RetryableActionError) as caught:
            await provider.send_reply(reply(), timeout=0.3)
        return caught.value, asyncio.get_running_loop().time()

    # on virtual time: the call gives up at the timeout it was given, exactly
    exc, gave_up_at = run_virtual(scenario(), io_grace=0.2)
    assert "did not answer within 0.3s" in exc.message
    assert gave_up_at == pytest.approx(0.3)


def test_an_unreachable_service_is_retryable():
    with FakeService() as gone:
        url = gone.base_url
    provider = make_provider(
        base_url=url, public_key="p", secret_key="s3cret", default_agent_id="a"
    )
    with pytest.raises(RetryableActionError) as caught:
        send(provider, timeout=2)
    assert "cannot reach Chatra" in caught.value.message
    assert "s3cret" not in caught.value.message


def test_a_non_json_success_is_still_a_success():
    with FakeService(lambda request: Response(200, "queued")) as service:
        provider = make_provider(
            base_url=service.base_url, public_key="p", secret_key="s", default_agent_id="a"
        )
        assert send(provider) == {"status": 200, "response": "queued"}


def test_reply_problem_names_the_missing_keys():
    assert make_provider().reply_problem() == (
        "channel 'online-chat' needs public_key and secret_key to send replies"
    )
    assert "needs secret_key" in make_provider(public_key="p").reply_problem()
    assert make_provider(public_key="p", secret_key="s").reply_problem() is None


def test_without_keys_nothing_is_sent(fake_chatra):
    provider = make_provider(base_url=fake_chatra.base_url)
    with pytest.raises(PermanentActionError, match="needs public_key and secret_key"):
        send(provider)
    assert fake_chatra.requests == []


def test_without_an_agent_to_send_as_nothing_is_sent(fake_chatra):
    provider = make_provider(base_url=fake_chatra.base_url, **fake_chatra.keys)
    with pytest.raises(PermanentActionError, match="no default sender"):
        send(provider)
    assert fake_chatra.requests == []


def test_describe_reply_is_one_line_naming_client_agent_and_text():
    provider = make_provider(public_key="p", secret_key="s3cret", default_agent_id="dflt")
    described = provider.describe_reply(reply("Hello\nthere"))
    assert described == (
        f"Chatra POST /messages/ to client {CLIENT} as agent dflt: 'Hello\\nthere'"
    )
    assigned = provider.describe_reply(reply(assignee="anna@shop.example.com"))
    assert "as Anna@Shop.Example.com:" in assigned
    assert "no agent" in make_provider().describe_reply(reply())


def test_secrets_stay_out_of_reprs():
    provider = make_provider(public_key="p", secret_key="s3cret", webhook_secret="h00k")
    for shown in (repr(provider.settings), repr(provider.api()), repr(vars(provider))):
        assert "s3cret" not in shown and "h00k" not in shown


def test_the_autoreply_action_answers_a_parsed_event_through_chatra(fake_chatra):
    provider = chatra_provider(fake_chatra)
    store = MemoryStore()
    with store.transaction() as state:
        (event,) = provider.parse(sample_body("chat_started_anonymous.json"), state)
    context = ActionContext(event=event, config=Config(), provider=provider)
    action = Autoreply()
    params = AutoreplyParams(text="Hi! An agent will answer shortly.")
    assert action.unavailable(context) is None
    answer = asyncio.run(action.execute(params, context))
    assert fake_chatra.sent == [
        {
            "clientId": CLIENT,
            "text": "Hi! An agent will answer shortly.",
            "agentId": "dflt",
            "receivedFrom": "rulekit",
        }
    ]
    # Chatra echoes the reply in a later fragment; it yields no event.
    echo = {
        "eventName": "chatFragment",
        "messages": [answer],
        "client": {"id": CLIENT},
    }
    with store.transaction() as state:
        assert provider.parse(encode(echo), state) == []


def test_a_reply_over_chatras_limit_is_cut_to_it_not_refused_and_lost(fake_chatra):
    # a rule quoting the visitor's long message ("You wrote: {{ message.text }}") goes over
    # Chatra's 5000 characters; Chatra refuses such a message whole (400, a final failure)
    provider = chatra_provider(fake_chatra)
    store = MemoryStore()
    body = {
        "eventName": "chatFragment",
        "messages": [{"id": "longMsg", "type": "client", "text": "🫖 kettle " * 700}],
        "client": {"id": CLIENT},
    }
    with store.transaction() as state:
        (event,) = provider.parse(encode(body), state)
    context = ActionContext(event=event, config=Config(), provider=provider)
    text = f"You wrote: {event.message.text}"
    described = Autoreply().describe(AutoreplyParams(text=text), context)
    answer = send(provider, Reply(event.conversation, event.client, text))
    (sent,) = fake_chatra.sent
    assert len(sent["text"].encode("utf-16-le")) // 2 <= 5000 < len(text)
    assert text.startswith(sent["text"][:-1]) and sent["text"].endswith("…")
    assert answer["truncated"] is True and answer["text"] == sent["text"]
    assert f"(truncated to {len(sent['text'])} characters)" in described


def test_a_reply_that_fits_is_sent_as_it_is(fake_chatra):
    text = "x" * 5000
    answer = send(chatra_provider(fake_chatra), reply(text))
    assert [sent["text"] for sent in fake_chatra.sent] == [text]
    assert "truncated" not in answer


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_an_empty_reply_is_refused_with_its_reason_before_any_call(fake_chatra, text):
    # (a template of values the conversation lacks: "{{ client.name }}" of an anonymous one)
    provider = chatra_provider(fake_chatra)
    with pytest.raises(PermanentActionError, match="the reply's text is empty"):
        send(provider, reply(text))
    assert fake_chatra.requests == []
    assert "not sent, the reply's text is empty" in provider.describe_reply(reply(text))


@pytest.mark.parametrize("tag", [" helpdesk", "helpdesk\n", "  "])
def test_the_echo_of_a_reply_sent_with_a_padded_tag_is_still_ours(fake_chatra, tag):
    # a webhook's receivedFrom is read trimmed: a tag sent padded never matched its echo, and
    # every reply came back as an agent's reply (a blank one: as every agent message's)
    if not tag.strip():
        with pytest.raises(ValueError, match="must not be blank"):
            chatra_provider(fake_chatra, received_from=tag)
        return
    provider = chatra_provider(fake_chatra, received_from=tag)
    answer = send(provider)
    assert fake_chatra.sent[0]["receivedFrom"] == "helpdesk"
    echo = {"eventName": "chatFragment", "messages": [answer], "client": {"id": CLIENT}}
    with MemoryStore().transaction() as state:
        assert provider.parse(encode(echo), state) == []


@pytest.mark.parametrize("length", [3, 6000])
def test_a_reply_holding_a_lone_surrogate_is_measured_and_sent(fake_chatra, length):
    # a template's "\ud800" escape (YAML reads it so) is one UTF-16 unit, not an encoding error
    text = ("a\ud800" * length)[:length]
    answer = send(chatra_provider(fake_chatra), reply(text))
    (sent,) = fake_chatra.sent
    assert len(sent["text"]) <= 5000 and sent["text"][:2] == "a\ud800"
    assert answer.get("truncated", False) is (length > 5000)
