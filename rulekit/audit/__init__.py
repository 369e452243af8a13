"""Audit, explain, replay, privacy: reading what the daemon recorded.

* :mod:`~rulekit.engine.trace` — the trace the daemon stores with each event (and reads back);
* :mod:`~rulekit.audit.explain` — ``rulekit why``: one event, its trace, plan and attempts;
* :mod:`~rulekit.audit.history` — ``rulekit history``: recent events, one line each;
* :mod:`~rulekit.audit.replay` — ``rulekit replay``: candidate rules over stored events;
* :mod:`~rulekit.audit.privacy` — what output hides without ``--show-content``, and ``forget``;
* :mod:`~rulekit.audit.retention` — purging what retention no longer keeps;
* :mod:`~rulekit.cli.audit` — the click commands (imported lazily by the CLI).
"""
