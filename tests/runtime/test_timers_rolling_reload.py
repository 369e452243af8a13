"""A rule set reloaded on one daemon before another, on one PostgreSQL database: a timer set by a
rule only the newer set has is not ended by a daemon still on the older set, which does not know
the rule; it is left to a daemon that does.

Runs when ``RULEKIT_TEST_POSTGRES`` names a reachable server; skipped otherwise.
"""

from __future__ import annotations

import httpx
import pytest
from daemons import wait_for, write_setup
from test_clock_skew_postgres import database_now, on_postgres, stored_timers
from test_timers_daemon import replies, rules, started_now

OLDER = """\
- name: Closed
  on: {channel: online-chat, event: closed}
  do:
    - autoreply: {text: "Bye"}
"""
"""The older rule set: no timed rule."""


@pytest.mark.slow
def test_a_timer_of_a_rule_another_daemon_has_not_loaded_yet_waits_for_one_that_has(
    tmp_path, processes, chatra, postgres_url
):
    """The daemon on the newer set sets the timer and stops; the daemon on the older set meets
    the timer when due. It ended it as ``gone`` ("the rule is no longer a timed rule"): the
    client was never answered, although the rule was there. Now it leaves it to the others,
    and the daemon on the newer set fires it once it is back."""
    (tmp_path / "newer").mkdir()
    (tmp_path / "older").mkdir()
    # long enough that the daemon that set it has stopped before it is due, however busy
    newer = write_setup(tmp_path / "newer", rules(after="5s"), chatra=chatra)
    older = write_setup(tmp_path / "older", OLDER, chatra=chatra)
    for config in (newer, older):
        on_postgres(config, postgres_url)
    reloaded = processes(newer).wait_ready()
    behind = processes(older).wait_ready()
    assert httpx.post(reloaded.webhook_url, content=started_now(1)).status_code == 200
    (timer,) = wait_for(lambda: stored_timers(postgres_url), timeout=10)
    assert reloaded.terminate() == 0
    # the daemon on the older set meets the timer when due (it claims it, and says so)
    wait_for(lambda: f"timer {timer.id} " in behind.output(), timeout=30)
    assert database_now(postgres_url) >= timer.due
    assert [t.status for t in stored_timers(postgres_url)] == ["pending"]
    processes(newer).wait_ready()
    wait_for(lambda: replies(chatra), timeout=30)
    (fired,) = stored_timers(postgres_url)
    assert fired.status == "fired"
    assert replies(chatra) == ["client00000001"]
