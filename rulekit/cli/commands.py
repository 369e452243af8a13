"""What the CLI commands do, apart from argument parsing (see :mod:`rulekit.cli.main`)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from rulekit.errors import ValidationErrors
from rulekit.loading import open_engine
from rulekit.plugins import Plugins, load_plugins
from rulekit.registry import model_schema
from rulekit.rules.files import RULE_SUFFIXES, is_suite
from rulekit.safetext import echo, echo_json, escape_controls

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _expand(inputs: tuple[str, ...], rule_files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split inputs into suites and plain inputs; folders contribute their files in name order
    (except the rules files themselves, so `rulekit test rules.d/` runs the suites there, and
    hidden files: what macOS, editors and deploy tools leave beside the files, see
    :func:`~rulekit.rules.files.is_rules_file_name`)."""
    skip = {p.resolve() for p in rule_files}
    from rulekit import yamlsource
    from rulekit.audit.dryrun import InputError, read_bytes

    suites: list[Path] = []
    plain: list[Path] = []
    for item in inputs:
        path = Path(item)
        folder = os.path.isdir(path)  # (False on any error: reading the input then says why)
        try:
            files = (
                sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
                if folder
                else [path]
            )
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read the folder {escape_controls(item)!r}: {exc.strerror}",
                param_hint="INPUTS",
            ) from None
        for file in files:
            if folder and file.resolve() in skip:
                continue
            if file.suffix in RULE_SUFFIXES and os.path.isfile(file):
                try:
                    if is_suite(yamlsource.load(read_bytes(file))):
                        suites.append(file)
                        continue
                except (yamlsource.YamlSyntaxError, InputError):
                    pass  # reported as a malformed input below
            if folder and file.suffix not in (*RULE_SUFFIXES, ".json"):
                continue
            plain.append(file)
    return suites, plain


def run_test(
    rules_path: str | None,
    config_path: str | None,
    channel: str | None,
    now: datetime | None,
    output_format: str,
    inputs: tuple[str, ...],
    *,
    until: timedelta | None = None,
    online: frozenset[str] | None = None,
) -> int:
    from rulekit.audit.dryrun import as_json, as_text, run_input, run_until
    from rulekit.audit.suites import report, run_suite
    from rulekit.runtime.pipeline import Pipeline
    from rulekit.store.memory import MemoryStore

    engine = open_engine(rules_path, config_path)
    for warning in [*engine.ruleset.warnings, *engine.config.unset_variables]:
        echo(f"warning: {warning}", err=True)
    if channel is not None and channel not in engine.config.channels:
        known = ", ".join(sorted(engine.config.channels)) or "none"
        raise click.UsageError(f"channel {channel!r} is not configured (configured: {known})")
    suites, plain = _expand(inputs, engine.ruleset.files)
    pipeline = Pipeline(engine, MemoryStore())
    pipeline.online = online
    results = [run_input(pipeline, path, channel, now) for path in plain]
    if until is not None and plain:
        results.append(run_until(pipeline, until))
    suite_results = [run_suite(engine, path, until) for path in suites]
    text, _, failed = report(suite_results) if suite_results else ("", 0, 0)
    if output_format == "json":
        document: dict[str, Any] = as_json(pipeline, results)
        if suite_results:
            document["suites"] = [
                {
                    "path": s.path,
                    "error": s.error,
                    "tests": [
                        {
                            "name": t.name,
                            "passed": t.passed,
                            "failures": t.failures,
                            # what was planned (the text report lists it under a failure)
                            "actual": [_actual(a) for a in t.actual],
                        }
                        for t in s.tests
                    ],
                }
                for s in suite_results
            ]
        echo_json(document)
    else:
        if results:
            echo(as_text(pipeline, results), nl=False)
        if suite_results:
            echo(text, nl=False)
    for result in results:
        if result.error:
            echo(f"error: {result.error}", err=True)
    if any(r.error for r in results):
        return EXIT_USAGE
    return EXIT_FAILED if failed else EXIT_OK


def _actual(action: dict[str, Any]) -> dict[str, Any]:
    """An action a suite's test planned, for ``--format json``."""
    out = {k: action[k] for k in ("rule", "action", "params")}
    if action.get("at") is not None:
        out["at"] = action["at"].isoformat()
    if action.get("would_fail"):
        out["would_fail"] = action["would_fail"]
    return out


def run_check(path: str | None, config_path: str | None, strict: bool) -> int:
    """``rulekit check``: every error (raised, with every problem of every file), then what will
    fail at run time — the very list ``rulekit run --strict`` refuses to start on
    (:func:`rulekit.snapshot.problems_of`): errors with ``strict``, warnings otherwise."""
    from rulekit.audit.suites import suite_problems
    from rulekit.secrets import guessable_webhook_secrets, written_in_open_file
    from rulekit.snapshot import load_snapshot, problems_of, storage_errors

    snapshot = load_snapshot(config_path, path)
    ruleset = snapshot.engine.ruleset
    broken = storage_errors(snapshot.config)
    broken += [line for suite in ruleset.suites for line in suite_problems(snapshot.engine, suite)]
    # a storage URL no store can open, a suite that cannot run: errors, as a rule that cannot load
    for line in broken:
        echo(f"error: {line}", err=True)
    if broken:
        echo(f"{len(broken)} error(s)", err=True)
        return EXIT_FAILED
    problems = problems_of(snapshot)
    # (the file's mode, a secret's length: not something that fails at run time, never an error)
    for exposed in (
        written_in_open_file(snapshot.config),
        guessable_webhook_secrets(snapshot.config),
    ):
        if exposed:
            echo(f"warning: {exposed}", err=True)
    for problem in problems:
        echo(f"{'error' if strict else 'warning'}: {problem}", err=True)
    if strict and problems:
        echo(f"{len(problems)} error(s) (--strict)", err=True)
        return EXIT_FAILED
    echo(
        f"ok: {len(ruleset.rules)} rules in {len(ruleset.files)} file(s), "
        f"{len(ruleset.suites)} test suite(s), {len(problems)} warning(s)"
    )
    return EXIT_OK


def run_plugins(output_format: str) -> None:
    plugins = load_plugins()
    data = describe_plugins(plugins)
    if output_format == "json":
        echo_json(data)
        return
    for plugin in data["plugins"]:
        echo(f"{plugin['name']} ({plugin['source']})")
        for provider in plugin["providers"]:
            channel = provider["default_channel"] or "(no default channel)"
            echo(f"  provider {provider['name']}: channel {channel} — {provider['description']}")
        for action in plugin["actions"]:
            params = ", ".join(
                f"{name}{'' if name in action['required'] else '?'}"
                for name in action["parameters"]
            )
            echo(f"  action {action['name']}({params}) — {action['description']}")


def describe_plugins(plugins: Plugins) -> dict[str, Any]:
    """Installed plugins with what each registered (the ``rulekit plugins`` data)."""
    out = []
    for name in plugins.info:
        providers = [
            {
                "name": entry.name,
                "default_channel": entry.value.default_channel,
                "description": entry.value.description,
                "settings": model_schema(entry, "provider", entry.value.Settings),
            }
            for entry in plugins.providers.entries.values()
            if entry.plugin == name
        ]
        actions = []
        for entry in plugins.actions.entries.values():
            if entry.plugin != name:
                continue
            schema = model_schema(entry, "action", entry.value.Params)
            actions.append(
                {
                    "name": entry.name,
                    "description": entry.value.description,
                    "integration": entry.value.integration,
                    "parameters": schema.get("properties", {}),
                    "required": schema.get("required", []),
                }
            )
        out.append(
            {
                "name": name,
                "source": plugins.source(name),
                "providers": providers,
                "actions": actions,
            }
        )
    return {"plugins": out, "disabled": sorted(plugins.disabled)}


__all__ = ["ValidationErrors", "open_engine", "run_check", "run_plugins", "run_test"]
