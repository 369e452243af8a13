"""The rules as the daemon's main process knows them: validated in a short-lived process.

The main process never evaluates a condition (its evaluation workers do, see
:mod:`rulekit.runtime.evaluator`), but it must refuse invalid rules with every error, file and
line, warn about what will not work, and know each rule's name, location, channels, events,
timing and actions. Compiling 10,000 rules briefly needs several times what knowing them keeps,
and the C library cannot give most of it back (what stays is scattered among what was freed),
so the main process would keep tens of MB it never uses. It has the rules loaded in a process
of the workers' fork server instead: that process compiles them exactly as a worker will (what
would fail there fails here, and the daemon refuses it), sends back the rules' outline
(:func:`rulekit.rules.spec.outline`) with the bytes it read (:mod:`rulekit.sources`), or the
errors, and exits.
"""

from __future__ import annotations

import os
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rulekit import sources
from rulekit.engine.engine import Engine
from rulekit.loading import open_config, rules_location
from rulekit.rules.loader import RuleLoader, RuleSet
from rulekit.rules.spec import outline
from rulekit.runtime.forkserver import fork_server
from rulekit.runtime.pipeline import build_providers
from rulekit.snapshot import Snapshot, release_free_memory

SENT_RULES = 256
"""Rules the validating process sends in one message (see :func:`validate`)."""


class ValidationFailed(Exception):
    """The process validating the rules died, or failed with an error it could not send."""


def load_known(config_path: str | Path | None, rules_path: str | Path | None = None) -> Snapshot:
    """The snapshot of the config and rules at these paths, its rules known but not compiled
    (``snapshot.engine.evaluates`` is False). Raises what :func:`rulekit.snapshot.load_snapshot`
    raises for invalid ones (:class:`rulekit.errors.ValidationErrors` with the same errors)."""
    config = str(config_path) if config_path else None
    rules = str(rules_path) if rules_path else None
    ruleset, files = _validated(config, rules)
    with sources.replaying(files):  # the config as the validating process read it
        plugins, loaded = open_config(config)
    engine = Engine(plugins, loaded, ruleset, RuleLoader(plugins, loaded), evaluates=False)
    snapshot = Snapshot(engine, build_providers(engine), files=files)
    snapshot.problems  # noqa: B018  (found here, in the loading thread: they ask plugins' code)
    release_free_memory()
    return snapshot


def _validated(config: str | None, rules: str | None) -> tuple[RuleSet, sources.Files]:
    context = fork_server()
    ours, theirs = context.Pipe()
    process = context.Process(
        target=validate,
        args=(theirs, config, rules, dict(os.environ), os.getcwd(), list(sys.path)),
        name="rulekit-validator",
        daemon=True,
    )
    process.start()
    theirs.close()
    try:
        answer = ours.recv()
        if not isinstance(answer, BaseException):
            ruleset, files, count = answer
            while len(ruleset.rules) < count:
                part = ours.recv()
                if isinstance(part, BaseException):
                    answer = part
                    break
                ruleset.rules.extend(part)
    except (EOFError, OSError) as exc:
        process.join(5)
        raise ValidationFailed(
            f"the process validating the rules died (exit code {process.exitcode})"
        ) from exc
    finally:
        ours.close()
    process.join()
    if isinstance(answer, BaseException):
        raise answer
    return ruleset, files


def validate(
    connection: Connection,
    config: str | None,
    rules: str | None,
    environment: dict[str, str],
    cwd: str,
    path: list[str],
) -> None:
    """The validating process: load the rules as a worker will; send their outline and the
    files read, or the error.

    The outline goes in parts: the rule set without its rules, then the rules,
    :data:`SENT_RULES` at a time. Unpickling keeps every list and tuple it made until the
    message's end (its memo), and those of one message of 10,000 rules, freed among the rules
    kept, left the daemon's main process ~10 MB it could not give back."""
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    sys.path[:] = path
    from rulekit.config import LoggingSettings
    from rulekit.runtime.logs import configure_logging

    configure_logging(LoggingSettings())  # what plugins log while loading: content hidden
    answers: list[Any]
    try:
        with sources.recording() as files:
            plugins, loaded = open_config(config)
            location = rules_location(rules, loaded)
            engine = Engine.from_path(location, loaded, plugins=plugins)
        for rule in engine.rules:
            outline(rule)
        ruleset = engine.ruleset
        outlined, ruleset.rules = ruleset.rules, []
        answers = [(ruleset, files, len(outlined))]
        answers += [outlined[at : at + SENT_RULES] for at in range(0, len(outlined), SENT_RULES)]
    except Exception as exc:
        answers = [exc]
    for answer in answers:
        try:
            connection.send(answer)
        except Exception as unsent:  # what does not pickle is sent as text, with where it was
            failure = answer if isinstance(answer, BaseException) else unsent
            text = "".join(traceback.format_exception(failure))
            connection.send(ValidationFailed(f"validating the rules failed:\n{text}"))
            break
    connection.close()
