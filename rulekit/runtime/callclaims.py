"""The claims of the calls under way: kept while a call lasts, checked before one leaves.

A part of :class:`rulekit.runtime.dispatcher.Dispatcher` (through
:class:`~rulekit.runtime.calls.JobCalls`), which sets what is declared here. A job's claim is
a lease (:mod:`rulekit.runtime.fence`): renewed for every call under way, all of them in one
store call, every third of the lease (:meth:`CallClaims._renew_claims`); and asked of the store
before a call leaves when the daemon may have been held up past it
(:meth:`CallClaims._still_held`), so that a job another daemon took over is not called twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rulekit.errors import StoreUnavailable
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.fence import Hold, lease_clock
from rulekit.runtime.logs import log
from rulekit.runtime.sharedpace import retry_store
from rulekit.store.records import Job

logger = logging.getLogger("rulekit.dispatcher")


def _job_ids(calls: list[tuple[int, Hold]]) -> str:
    """The job ids of ``calls``, for the log."""
    return ", ".join(str(job_id) for job_id, _ in calls)


class CallClaims:
    """Keeping the claims of the jobs whose calls are under way."""

    commit: GroupCommit
    owner: str
    lease: float
    _calling: dict[int, Hold]
    _renewer: asyncio.Task[None] | None
    _stopping: bool

    def _stopped(self) -> bool:
        return self._stopping

    async def _renew_claims(self) -> None:
        """Renew the claims of the jobs whose calls are under way, all of them in one store
        call, every third of the lease, until cancelled (the dispatcher stopped). A call may
        last longer than the lease (an action's timeout may be longer: a webhook target's, an
        email's SMTP steps), and a claim that ran out meanwhile would be taken by another
        daemon, which would make the call again although nobody crashed. A call started since
        the last renewal is renewed within a third of the lease of its start, so its claim
        never runs out while it is under way. A store that cannot be reached here only lets
        the claims run out (docs/operations.md: the database unreachable for longer than the
        lease); the renewals go on after it."""
        owner = self.owner
        while True:
            lease = self.lease
            await asyncio.sleep(lease / 3)
            calls = list(self._calling.items())
            if not calls:
                continue
            since = lease_clock()

            def renew(
                state: Any, calls: list[tuple[int, Hold]] = calls, lease: float = lease
            ) -> list[Hold]:
                # a job recorded meanwhile, or taken over, is not renewed (nothing to keep)
                return [
                    hold for job_id, hold in calls if state.renew_call(job_id, owner, lease=lease)
                ]

            try:
                renewed = await self.commit.run(renew)
            except StoreUnavailable as exc:
                log(
                    logger,
                    logging.WARNING,
                    f"claim not renewed: jobs {_job_ids(calls)}",
                    failure=exc,
                )
                continue
            except Exception:  # a bug: the calls go on, their claims may run out
                log(
                    logger,
                    logging.ERROR,
                    f"claim not renewed: jobs {_job_ids(calls)}",
                    exc_info=True,
                )
                continue
            for hold in renewed:
                hold.renewed(since)

    async def _still_held(self, job: Job, hold: Hold) -> bool:
        """Whether this daemon still holds the claim of ``job``, whose call is about to
        leave (:mod:`rulekit.runtime.fence`): asked of the store (and the claim renewed) only
        when more of the lease passed since it was taken or renewed than a call's start
        takes, i.e. when the daemon was held up (a long pause of the process or the machine)
        and another daemon may have taken the job over meanwhile and made the call. A store
        that cannot be reached delays the call, as before its start."""
        if not hold.doubtful():
            return True
        owner, lease, since = self.owner, self.lease, lease_clock()
        held = await retry_store(
            self.commit,
            lambda state: state.renew_call(job.id, owner, lease=lease),
            f"check the claim of job {job.id}",
            stopping=self._stopped,
        )
        if held:
            hold.renewed(since)
        return bool(held)
