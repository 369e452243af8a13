"""A timer set by a console change (an ``updated`` event of origin ``console``) fires when due:
the console did not wake the timer runner, which slept on until its next look at the store (up
to 30 s later)."""

from __future__ import annotations

import pytest
from workspace_helpers import RULES, path, running, wait_for, write

pytest.importorskip("rulekit_chatra")

TIMED = """
- name: Chase assigned chats
  on: {channel: online-chat, event: updated}
  after: 1s
  do:
    - play_sound: {sound: bell, to: everyone}
"""


def test_a_timer_set_by_a_console_change_fires_when_due(tmp_path) -> None:
    with running("sqlite", tmp_path) as workspace:
        write(tmp_path / "rules.d" / "rules.yaml", RULES + TIMED)
        assert workspace.reload()
        workspace.started()
        with workspace.client("anna") as anna:
            answer = anna.post(f"{path()}/assign", json={"agent": "anna@example.com"})
            assert answer.status_code == 200, answer.text

        def statuses() -> list[str]:
            with workspace.daemon.store.reading() as state:
                return [timer.status for timer in state.timers()]

        wait_for(lambda: statuses() == ["pending"] or statuses() == ["fired"], "the timer")
        # due a second after it was set; the runner, idle until then, looks again after 30 s
        wait_for(lambda: statuses() == ["fired"], "the timer fired", timeout=15)
