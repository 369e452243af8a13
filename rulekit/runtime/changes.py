"""Changes of the conversation made as the event that planned them is recorded.

A ``tag`` or ``set`` (an action that is
:attr:`~rulekit.actions.base.Action.applied_when_recorded`) changes nothing but the stored
conversation. It is made in the transaction that records the event whose plan calls for it,
in plan order, so that the conversation's next event is evaluated against it, however long
the actions before it in the conversation's lane take (a reply being retried), as ``rulekit
test`` evaluates it. What it did, its ``updated`` event included, is noted in its job
(:meth:`~rulekit.store.outbox.Outbox.note_applied_change`); the job runs at once, in the
conversation's lane of changes, and hands the events over: they are evaluated and recorded
with its outcome, like the events of any action. A daemon that dies between the record and
the outcome leaves the job pending with its note: the daemon that takes it over hands over the
same events, once.

A change the config refuses (a templated tag outside ``tags:``, a 51st tag) is noted as such:
its job fails for good when it runs, and the later changes of the plan are made all the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from rulekit.actions.base import Action, call_key, failure_note
from rulekit.errors import PermanentActionError
from rulekit.event import Event
from rulekit.store.base import JournaledState
from rulekit.store.cached import CachedState
from rulekit.store.records import JobSpec

if TYPE_CHECKING:
    from rulekit.config import Config
    from rulekit.engine.engine import Engine


@dataclass(frozen=True)
class Changes:
    """The actions and the config of the rules that planned the events being recorded: what
    makes their changes (:meth:`make`)."""

    actions: Mapping[str, Action]
    config: Config

    @classmethod
    def of(cls, engine: Engine) -> Changes:
        """The changes of the plans ``engine`` makes."""
        return cls(engine.actions, engine.config)

    def make(self, state: JournaledState, event: Event, jobs: Sequence[JobSpec]) -> None:
        """Make the changes of ``event``'s plan (its ``jobs``, recorded in ``state``'s open
        transaction), in plan order, each on the conversation as the ones before it left it,
        and note in each job what it did."""
        places = [place for place, job in enumerate(jobs) if self._made_when_recorded(job)]
        if not places:
            return
        ids = state.job_ids(event.id)
        if len(ids) != len(jobs):  # a store that keeps no jobs: each job makes its own
            return
        # the conversation is held from its read to the commit: a change another daemon or
        # the console commits meanwhile is waited for, never written over
        held = CachedState(state, hold=True)
        for place in places:
            job = jobs[place]
            action = self.actions[job.action]
            try:
                params = action.Params.model_validate(job.params)
            except ValidationError:
                continue  # its job says why, when it runs
            try:
                change = action.change_state(params, event, held, self.config, call=call_key(place))
            except PermanentActionError as exc:
                state.note_applied_change(ids[place], failure_note(str(exc)))
                continue
            state.note_applied_change(ids[place], change.note())
        held.flush()

    def _made_when_recorded(self, job: JobSpec) -> bool:
        action = self.actions.get(job.action)
        return action is not None and action.applied_when_recorded
