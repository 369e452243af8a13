"""The timers of timed rules in the in-memory store, with the SQL stores' behaviour."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from rulekit.store.records import Timer, utc


class MemoryTimers:
    """Timer methods, mixed into :class:`~rulekit.store.memory.MemoryState` (which holds
    ``timer_table`` and counts ids in ``last_id``)."""

    timer_table: dict[int, Timer]
    last_id: dict[str, int]

    def _pending(self, rule: str, conversation_id: str) -> Timer | None:
        for timer in self.timer_table.values():
            if (timer.rule, timer.conversation_id, timer.status) == (
                rule,
                conversation_id,
                "pending",
            ):
                return timer
        return None

    def set_timer(
        self,
        rule: str,
        conversation_id: str,
        channel: str,
        due: datetime,
        trigger_event_id: str,
        *,
        restart: bool = False,
        now: datetime | None = None,
    ) -> None:
        pending = self._pending(rule, conversation_id)
        if pending is not None:
            if restart:
                self.timer_table[pending.id] = dataclasses.replace(
                    pending,
                    due=utc(due),
                    trigger_event_id=trigger_event_id,
                    set_at=utc(now),
                    claimed_by=None,
                    claimed_until=None,
                )
            return
        self.last_id["timer"] = self.last_id.get("timer", 0) + 1
        timer_id = self.last_id["timer"]
        self.timer_table[timer_id] = Timer(
            timer_id, rule, conversation_id, channel, utc(due), trigger_event_id, "pending",
            utc(now),
        )  # fmt: skip

    def cancel_timers(
        self, rule: str, conversation_id: str, *, by_event: str, now: datetime | None = None
    ) -> int:
        pending = self._pending(rule, conversation_id)
        if pending is None:
            return 0
        self.timer_table[pending.id] = dataclasses.replace(
            pending,
            status="cancelled",
            by_event=by_event,
            finished_at=utc(now),
            claimed_by=None,
            claimed_until=None,
        )
        return 1

    def next_timer_due(self) -> datetime | None:
        dues = [t.due for t in self.timer_table.values() if t.status == "pending"]
        return min(dues, default=None)

    def claim_timers(
        self, owner: str, *, lease: float, limit: int = 20, now: datetime | None = None
    ) -> list[Timer]:
        now = utc(now)
        due = sorted(
            (
                t
                for t in self.timer_table.values()
                if t.status == "pending"
                and t.due <= now
                and (t.claimed_until is None or t.claimed_until <= now)
            ),
            key=lambda t: (t.due, t.id),
        )[:limit]
        until = now + timedelta(seconds=lease)
        claimed = []
        for timer in due:
            claimed.append(dataclasses.replace(timer, claimed_by=owner, claimed_until=until))
            self.timer_table[timer.id] = claimed[-1]
        return claimed

    def finish_timer(
        self,
        timer_id: int,
        owner: str,
        outcome: str,
        *,
        reason: str = "",
        at: datetime | None = None,
        event_id: str | None = None,
    ) -> bool:
        timer = self.timer_table.get(timer_id)
        if timer is None or timer.status != "pending" or timer.claimed_by != owner:
            return False
        self.timer_table[timer_id] = dataclasses.replace(
            timer,
            status=outcome,  # type: ignore[arg-type]
            reason=reason[:2000] or None,
            finished_at=utc(at),
            by_event=event_id,
            claimed_by=None,
            claimed_until=None,
        )
        return True

    def timers(
        self, *, event_id: str | None = None, conversation_id: str | None = None, limit: int = 100
    ) -> list[Timer]:
        out = [
            t
            for t in sorted(self.timer_table.values(), key=lambda t: -t.id)
            if (event_id is None or event_id in (t.trigger_event_id, t.by_event))
            and (conversation_id is None or t.conversation_id == conversation_id)
        ]
        return out[:limit]
