"""Work a daemon leaves to the others sharing its store, while a change reaches them one after
another.

A reload of the rules, or an upgrade that brings a new action or a newer version of one, reaches
the daemons of a shared database (:attr:`~rulekit.store.base.JournaledStore.shared`) one after
another. Meanwhile a daemon may claim work only the changed daemons can do: a timer of a rule
its rules do not have (:mod:`rulekit.runtime.timers`), a job of an action it has not installed,
or whose data its version of the action does not take (:mod:`rulekit.runtime.calls`). Ending
that work (``gone``, ``dead``) would lose it for good although another daemon could do it; the
daemon hands it back instead, and nobody claims it again for :data:`HAND_BACK` seconds. Work
still unknown :data:`LEFT_TO_OTHERS` seconds on (past a timer's due time, since a job's event
was recorded) is ended as before: the change that would make it known is not coming.
"""

from __future__ import annotations

LEFT_TO_OTHERS = 300.0
"""Seconds that work no daemon claiming it knows is left to the others before it is ended."""
HAND_BACK = 2.0
"""Seconds work handed back waits before any daemon claims it again."""
