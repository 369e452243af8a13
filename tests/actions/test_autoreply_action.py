"""autoreply: through the conversation's provider, with a timeout and error classification."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from action_helpers import make_context, make_event

from rulekit.actions.autoreply import Autoreply, AutoreplyParams
from rulekit.channels.base import ChannelContext, ChannelSettings, Provider, Reply
from rulekit.directory import Directory
from rulekit.errors import PermanentActionError, RetryableActionError
from rulekit.event import Event
from rulekit.testing.clock import run_virtual
from rulekit.testing.fakehttp import FakeService, Response


class LoopbackProvider(Provider):
    """A provider that replies by POSTing to a fake service (and ignores its timeout when
    ``obedient`` is false, to show the action's own backstop)."""

    name = "loopback"
    can_reply = True
    base_url = ""
    obedient = True

    async def send_reply(self, reply: Reply, *, timeout: float) -> dict:
        async with httpx.AsyncClient(timeout=timeout if self.obedient else 60) as client:
            try:
                response = await client.post(
                    f"{self.base_url}/messages",
                    json={
                        "to": reply.client.id,
                        "text": reply.text,
                        "as": reply.conversation.assignee,
                    },
                )
            except httpx.TimeoutException:
                raise RetryableActionError("loopback timed out") from None
        if response.status_code >= 400:
            raise PermanentActionError(f"loopback said {response.status_code}")
        return {"message_id": response.json()["id"]}


def provider(base_url: str, obedient: bool = True) -> LoopbackProvider:
    instance = LoopbackProvider(ChannelContext("online-chat", ChannelSettings(), Directory([], [])))
    instance.base_url, instance.obedient = base_url, obedient
    return instance


def reply(action: Autoreply, context) -> dict:
    return asyncio.run(action.execute(AutoreplyParams(text="Hi Mia!"), context))


def test_the_reply_goes_through_the_provider_as_the_conversation_it_is_handed():
    # the dispatcher hands an action that ``sees_conversation`` the conversation as stored when
    # its turn comes: after an ``assign`` of the same plan, with the new assignee
    assert Autoreply.sees_conversation
    with FakeService(lambda request: Response(200, {"id": "msg-1"})) as service:
        event = Event(
            channel="online-chat",
            event="created",
            conversation={"id": "conv-1", "assignee": "ann@example.com"},
            client={"id": "client-1"},
        )
        context = make_context(event, provider=provider(service.base_url))
        assert reply(Autoreply(), context) == {"message_id": "msg-1"}
        [request] = service.requests
    assert request.json == {"to": "client-1", "text": "Hi Mia!", "as": "ann@example.com"}


def test_a_provider_ignoring_the_timeout_is_cut_off_as_retryable():
    with FakeService(lambda request: Response(200, {"id": "late"}, delay=3600)) as service:
        context = make_context(provider=provider(service.base_url, obedient=False))

        async def scenario() -> float:
            action = Autoreply(timeout=0.3)
            with pytest.raises(
                RetryableActionError, match=r"loopback did not answer within 0\.3 s"
            ):
                await action.execute(AutoreplyParams(text="Hi Mia!"), context)
            return asyncio.get_running_loop().time()

        # on virtual time: cut off at the action's timeout exactly, not the client's 60 s
        assert run_virtual(scenario(), io_grace=0.2) == pytest.approx(0.3)


def test_providers_that_cannot_reply_or_no_provider_are_permanent():
    class Mute(Provider):
        name = "mute"

    mute = Mute(ChannelContext("online-chat", ChannelSettings(), Directory([], [])))
    with pytest.raises(PermanentActionError, match="the mute provider cannot write to clients"):
        reply(Autoreply(), make_context(provider=mute))
    with pytest.raises(PermanentActionError, match="channel 'web' is not configured"):
        reply(Autoreply(), make_context(make_event(channel="web")))


def test_the_default_timeout_is_ten_seconds_not_the_sdks_thirty():
    assert Autoreply().timeout == 10.0
    assert Autoreply(timeout=2).timeout == 2 and Autoreply.timeout == 10.0
