"""What paces a call: the destination's and the service's turns before it leaves, and what its
answer tells them after.

A part of :class:`rulekit.runtime.dispatcher.Dispatcher` (through
:class:`~rulekit.runtime.calls.JobCalls`), which sets what is declared here. Pacing is kept in
process (:class:`~rulekit.actions.pacing.Pacer`) and, when other daemons send through the same
store (:attr:`CallPacing.shares_pacing`), agreed through it (:mod:`rulekit.runtime.sharedpace`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rulekit.actions.base import ActionContext
from rulekit.actions.pacing import Pace, reply_key, service_key
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.logs import log
from rulekit.runtime.outcomes import Decision
from rulekit.runtime.sharedpace import share_pause, share_spacing
from rulekit.store.records import EventRecord, Job

if TYPE_CHECKING:
    from rulekit.channels.base import Provider

logger = logging.getLogger("rulekit.dispatcher")


class CallPacing:
    """The paces of a job's call, and what its answer does to them."""

    commit: GroupCommit
    _shares_pacing: bool
    _stopping: bool

    def _call_paces(self, action: Any, params: Any, context: ActionContext) -> list[Pace]:
        """:meth:`Action.call_pacing`; none when it fails (the call itself will say why)."""
        try:
            return list(action.call_pacing(params, context))
        except Exception:
            log(logger, logging.ERROR, f"{action.name}: call_pacing raised", exc_info=True)
            return []

    async def _paced_after(self, decision: Decision, paces: list[Pace], slot: Any) -> None:
        """What a call's answer tells its pacing: the next send counts from it, and a
        service's Retry-After pauses the destination or the service."""
        if self.shares_pacing:  # the next send counts from this answer
            await share_spacing(self.commit, paces, stopping=lambda: self._stopping)
        failure = decision.failure
        if failure is not None:
            pause = failure.retry_after
            if not pause and failure.status == 429 and failure.scope == "service":
                # the service is limiting but did not say for how long: pause it for the
                # retry's backoff, so that what else calls it (a channel's fetching) waits
                pause = decision.retry_in
            if pause and pause > 0:
                slot.pause(pause, failure.scope)
                if self.shares_pacing:
                    await share_pause(
                        self.commit, paces, failure.scope, pause, stopping=lambda: self._stopping
                    )

    def _conversation_paces(
        self, job: Job, record: EventRecord, action: Any, provider: Provider | None
    ) -> list[Pace]:
        """The paces of an action with none of its own: its lane, and for one that calls the
        channel's service (a reply, a change of client data), the service account
        (:func:`~rulekit.actions.pacing.service_key` of :attr:`Provider.service_account`): a
        service-wide Retry-After met by any such call (a Chatra 429) pauses all of them, on
        every channel with the same credentials, and those channels' own fetching
        (:meth:`~rulekit.channels.base.Inbound.service_paused`). A reply is also held to the
        channel's own rate limits (:attr:`Provider.reply_limits`), per channel: per
        conversation, and for the service (:func:`~rulekit.actions.pacing.reply_key`)."""
        limits = provider.reply_limits if provider is not None and action.client_facing else {}
        paces = [Pace(job.lane or job.destination, limits.get("conversation"))]
        if action.calls_channel_service:
            if (service := limits.get("service")) is not None:
                paces.append(Pace(reply_key(record.channel), service, scope="service"))
            account = provider.service_account if provider is not None else record.channel
            paces.append(Pace(service_key(account), scope="service"))
        elif action.client_facing:
            paces.append(
                Pace(f"{job.action}:{record.channel}", limits.get("service"), scope="service")
            )
        return paces

    @property
    def shares_pacing(self) -> bool:
        """Whether other daemons send through the same store (then pacing is agreed there)."""
        return self._shares_pacing
