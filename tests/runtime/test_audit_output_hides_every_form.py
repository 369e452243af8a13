"""``rulekit why`` and ``rulekit history`` over what a real daemon recorded: without
``--show-content`` no form of the client's content (escaped for a markup, URL- or JSON-encoded,
another case) appears in their output — not in rendered params, results, errors, trace reasons
or condition errors. Names are shown: they are how output tells clients apart. The daemon's log
follows the same rule unless ``logging.content`` allows content."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from daemons import LogLines
from privacy_scenario import NAME, PERSONAL, leftovers, record

from rulekit.cli.main import cli
from rulekit.config import LoggingSettings
from rulekit.runtime.logs import configure_logging

SHOWN = {"name"}
"""Personal values output shows without ``--show-content`` (the display name is the name)."""


def run(config, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def hidden_leftovers(output: str) -> list[tuple[str, str]]:
    return [(what, form) for what, form in leftovers(output) if what not in SHOWN]


@pytest.mark.slow
def test_why_and_history_show_no_form_of_hidden_content(tmp_path, serve):
    site, stop = record(tmp_path, serve)
    try:
        history = json.loads(run(site.config, "history", "--format", "json", "--limit", "100"))
        event_ids = [event["event_id"] for event in history["events"]]
        assert len(event_ids) >= 3
        outputs = {
            "history": run(site.config, "history", "--limit", "100"),
            "history json": json.dumps(history, ensure_ascii=False),
        }
        for event_id in event_ids:
            outputs[f"why {event_id}"] = run(site.config, "why", event_id, "--raw")
            outputs[f"why json {event_id}"] = run(
                site.config, "why", event_id, "--raw", "--format", "json"
            )
        shown = "".join(
            run(site.config, "why", event_id, "--show-content", "--format", "json")
            for event_id in event_ids
        )
    finally:
        stop()
    # the test can fail: with --show-content every value is there, escaped forms too
    assert {what for what, _ in leftovers(shown)} == set(PERSONAL)
    assert {form for _, form in leftovers(shown)} >= {"telegram html", "markdown v2"}
    for name, output in outputs.items():
        assert hidden_leftovers(output) == [], name
    why = "".join(text for name, text in outputs.items() if name.startswith("why "))
    assert "[hidden]" in why and NAME in why


@pytest.mark.slow
@pytest.mark.parametrize("content", [False, True])
def test_the_daemons_log_hides_it_too_unless_content_is_allowed(
    tmp_path, serve, log_lines: LogLines, content: bool
) -> None:
    configure_logging(LoggingSettings(content=content), log_lines)
    _, stop = record(tmp_path, serve)  # Chatra's refusal quotes the greeting, with the text
    stop()
    refused = [line for line in log_lines.text.splitlines() if "autoreply: retry" in line]
    assert len(refused) == 1, log_lines.text
    if content:  # the test can fail: the error is logged, quoting what the client wrote
        assert "first message" in {what for what, _ in leftovers(refused[0])}
    else:
        assert hidden_leftovers(log_lines.text) == [], refused[0]
        assert "[hidden]" in refused[0]
