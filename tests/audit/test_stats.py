"""``rulekit stats``: per rule, events matched, what became of its actions, last fired."""

from __future__ import annotations

import json

from scaffold import write


def test_stats_per_rule_in_the_rules_order(site):
    result = site.run("stats")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "rule                matched     done   failed     dead  pending  last fired",
        # Jane's refund: a 429 then done; Bob's: dead (both tries failed)
        "Refunds to Slack          2        1        2        1        0  2024-05-01 09:02",
        "Bell for new chats        1        1        0        0        0  2024-05-01 09:00",
        "Angry clients             1        0        0        0        1  2024-05-01 09:02",
    ]


def test_stats_since_lists_loaded_rules_that_matched_nothing_as_zeros(site):
    result = site.run("stats", "--format", "json", "--since", "2024-05-01T09:01:00+00:00")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["since"] == "2024-05-01T09:01:00+00:00"
    bell = document["rules"][1]
    assert bell == {
        "rule": "Bell for new chats",
        "matched": 0,
        "done": 0,
        "failed": 0,
        "dead": 0,
        "pending": 0,
        "last_fired": None,
        "loaded": True,
    }
    assert [r["matched"] for r in document["rules"]] == [2, 0, 1]


def test_a_rule_no_longer_loaded_is_still_counted_and_marked(site):
    write(
        site.root / "rules.d" / "rules.yaml",
        """
        - name: Something new
          on: {channel: online-chat, event: created}
          do: [{play_sound: {sound: bell, to: everyone}}]
        """,
    )
    lines = site.run("stats").output.splitlines()
    assert lines[1].startswith("Something new ") and lines[1].endswith("never")
    assert lines[2].startswith("Angry clients (not loaded)  ")  # then by name
    assert site.run("stats", "--since", "soon").exit_code == 2


def test_the_example_in_rules_md_is_this_sites_output(site):
    from scaffold import REPO

    text = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Statistics\n") :]
    example = section.split("```text\n", 1)[1].split("```", 1)[0]
    command, *output = example.splitlines()
    assert command == "$ rulekit stats"
    assert site.run("stats").output.splitlines() == output


def test_since_without_an_offset_is_the_configs_time_and_bad_values_are_usage_errors(site):
    site.config.write_text(site.config.read_text().replace("UTC", "Europe/Berlin"))
    result = site.run("stats", "--format", "json", "--since", "2024-05-01T11:01")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["since"] == "2024-05-01T11:01:00+02:00"  # 09:01 UTC, as the test above
    assert [r["matched"] for r in document["rules"]] == [2, 0, 1]
    for since, problem in [
        ("99999999d", "'99999999d' reaches back before the year 1"),
        ("2024-13-01", "'2024-13-01' is not an ISO 8601 time: month must be in 1..12"),
        ("1w", "'1w' is not a duration"),
        ("0d", "a duration must be positive"),
        # in Berlin's time, the first day of the year 1 begins in the year 0 in UTC
        ("0001-01-01", "'0001-01-01' is outside the years 1 to 9999 in UTC"),
        ("9999-12-31T23:00-05:00", "is outside the years 1 to 9999 in UTC"),
    ]:
        for command in ("stats", "history"):
            result = site.run(command, "--since", since)
            assert result.exit_code == 2 and problem in result.output, result.output
    assert site.run("history", "--since", " 7d ").exit_code == 0
