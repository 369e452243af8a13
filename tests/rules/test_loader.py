"""Loading rules: every error of every file, located, with a reason and a suggestion."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from scaffold import make_event, write

from rulekit.config import load_config
from rulekit.engine.engine import Engine
from rulekit.errors import ValidationErrors
from rulekit.expr.sandbox import MAX_EXPRESSION
from rulekit.plugins import load_plugins
from rulekit.rules.files import MAX_FILE_BYTES, MAX_RULES_BYTES
from rulekit.rules.loader import RuleLoader

CONFIG = """
channels:
  online-chat: {provider: chatra}
groups: [support, sales]
agents:
  - {email: Anna@shop.example, groups: [support], channels: [online-chat]}
  - {email: lena@shop.example, groups: [sales], channels: []}
integrations:
  slack: {token: xoxb-test}
"""


def load(tmp_path: Path, files: dict[str, str], config: str | None = CONFIG) -> Engine:
    rules = tmp_path / "rules.d"
    for name, text in files.items():
        write(rules / name, text)
    config_path = None if config is None else write(tmp_path / "rulekit.yaml", config)
    return Engine.from_path(rules, config_path)


def errors(tmp_path: Path, files: dict[str, str], config: str | None = CONFIG) -> list[str]:
    with pytest.raises(ValidationErrors) as caught:
        load(tmp_path, files, config)
    return [str(error) for error in caught.value.errors]


def one_error(tmp_path: Path, text: str, config: str | None = CONFIG) -> str:
    found = errors(tmp_path, {"r.yaml": text}, config)
    assert len(found) == 1, found
    return found[0]


def warnings(tmp_path: Path, text: str, config: str | None = CONFIG) -> list[str]:
    return [str(w) for w in load(tmp_path, {"r.yaml": text}, config).ruleset.warnings]


ON = "on: {channel: online-chat}"
DO = "do: [{autoreply: {text: x}}]"


def rule(*lines: str, name: str = "a") -> str:
    """A one-rule file: ``- name: a`` (line 1) then ``lines`` (from line 2)."""
    return f"- name: {name}\n" + "".join(f"  {line}\n" for line in lines)


GOOD = """
- name: {name}
  on: {{channel: online-chat, event: created}}
  do: [{{autoreply: {{text: hi}}}}]
"""


def test_errors_have_file_line_path_and_one_line_reason(tmp_path: Path) -> None:
    message = one_error(
        tmp_path,
        """
        - name: ok
          on: {channel: online-chat}
          do: [{autoreply: {text: hi}}]
        - name: typo
          on: {channel: online-chat}
          do:
            - slack: {channel: '#a', text: hi}
            - slak: {channel: '#a', text: hi}
        """,
    )
    assert message == (
        f"{tmp_path / 'rules.d' / 'r.yaml'}:8: [1].do[1].slak: "
        "unknown action 'slak' (did you mean 'slack'?)"
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    ("rule", "line", "expected"),
    [
        (
            rule("on: {channel: online-chat, evnt: created}", DO),
            2,
            "[0].on.evnt: rule 'a': unknown field 'evnt' (did you mean 'event'?)",
        ),
        (
            rule("descripton: x", ON, DO),
            2,
            "[0].descripton: rule 'a': unknown field 'descripton' (did you mean 'description'?)",
        ),
        (
            rule(ON, "if: client.emial == 'x'", DO),
            3,
            "[0].if: client has no field 'emial' (did you mean 'email'?)",
        ),
        (
            rule(ON, "if: clent.name", DO),
            3,
            "[0].if: unknown name 'clent' (did you mean 'client'?)",
        ),
        (
            rule(ON, "if: client.email|lowr", DO),
            3,
            "unknown filter 'lowr' (did you mean 'lower'?)",
        ),
        (
            rule(ON, "do:", "  - slack: {channel: '#a', text: hi, blokcs: []}"),
            4,
            "[0].do[0].slack.blokcs: unknown field 'blokcs' (did you mean 'blocks'?)",
        ),
        (
            rule(ON, "if: raw.chat", DO),
            3,
            "`raw` is the provider's payload, for auditing, not for rules",
        ),
        (
            rule(ON, "do: [{autoreply: {text: '{{ raw }}'}}]"),
            3,
            "`raw` is the provider's payload",
        ),
        (
            rule(ON, "cooldown: 5 minutes", DO),
            3,
            "is not a duration",
        ),
    ],
)
def test_located_errors_with_suggestions(
    tmp_path: Path, rule: str, line: int, expected: str
) -> None:
    message = one_error(tmp_path, rule)
    assert message.startswith(f"{tmp_path / 'rules.d' / 'r.yaml'}:{line}: ")
    assert expected in message


def test_all_errors_of_all_files_in_one_run(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        {
            "10-a.yaml": "- name: a\n  on: {channel: online-chat}\n  do: [{slak: {}}]\n"
            "- name: b\n  on: {channel: online-chat}\n  if: nope\n  do: [{autoreply: {text: x}}]\n",
            "20-b.yaml": "- name: c\n  on: {channel: online-chat}\n  do: [{autoreply: {}}]\n",
            "30-c.yaml": "- name: d\n  on: {channel: [online-chat\n",
            "40-d.yaml": "just a string\n",
        },
    )
    files = [message.split(":")[0].rsplit("/", 1)[-1] for message in found]
    assert files == ["10-a.yaml", "10-a.yaml", "20-b.yaml", "30-c.yaml", "40-d.yaml"]
    assert "missing required field 'text'" in found[2]
    assert "invalid YAML" in found[3]
    assert "expected a list of rules" in found[4]


def test_bad_shapes_of_a_rule_still_report_their_actions(tmp_path: Path) -> None:
    found = errors(tmp_path, {"r.yaml": "- name: a\n  on: {chanel: x}\n  do: [{slak: {}}]\n"})
    assert any("unknown field 'chanel'" in m for m in found)
    assert any("unknown action 'slak'" in m for m in found)


@pytest.mark.parametrize(
    "condition",
    [
        "\"client.country == 'DE' and not client.email\"",
        "[\"client.country == 'DE'\", 'not client.email']",
        "{all: [\"client.country == 'DE'\", {not: 'client.email'}]}",
        "{any: [\"client.country == 'AT'\", {all: [\"client.country == 'DE'\", "
        "{not: {any: ['client.email', 'client.phone']}}]}]}",
    ],
)
def test_condition_shapes(tmp_path: Path, condition: str) -> None:
    engine = load(
        tmp_path,
        {"r.yaml": rule(ON, f"if: {condition}", DO)},
    )
    assert len(engine.evaluate(make_event(client={"country": "DE"}))) == 1
    assert len(engine.evaluate(make_event(client={"country": "DE", "email": "a@b.c"}))) == 0
    assert len(engine.evaluate(make_event(client={"country": "FR"}))) == 0


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("{anyof: [a]}", "one of all/any/not (did you mean 'any'?)"),
        ("{all: [a], any: [b]}", "one of all/any/not"),
        ("true", "not a boolean"),
        ("[]", "an empty condition list"),
        ("{all: []}", "`all` needs a non-empty list"),
        ("{any: 'x'}", "`any` needs a non-empty list"),
        ("42", "not int"),
        ("{not: false}", "not a boolean"),
        ("[client.name: x]", "a `:` inside an expression needs quotes"),
    ],
)
def test_bad_condition_shapes(tmp_path: Path, condition: str, reason: str) -> None:
    message = one_error(
        tmp_path,
        rule(ON, f"if: {condition}", DO),
    )
    assert ":3: [0].if" in message
    assert reason in message


def test_action_parameters_are_validated_but_templates_are_not_rejected(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        {
            "r.yaml": """
            - name: a
              on: {channel: online-chat}
              do:
                - slack: {text: hi}
                - telegram: {chat_id: 1, text: hi, parse_mode: html}
                - telegram:
                    chat_id: "{{ env.CHAT }}"
                    text: "{{ message.text }}"
                    parse_mode: "{{ env.MODE }}"
                - assign: {strategy: random}
            """
        },
    )
    assert len(found) == 3, found
    assert ":4: [0].do[0].slack.channel: missing required field 'channel'" in found[0]
    assert (
        ":5: [0].do[1].telegram.parse_mode: Input should be 'none', 'HTML' or 'MarkdownV2'"
        in found[1]
    )
    assert ":10: [0].do[3].assign.strategy" in found[2]


def test_a_templated_value_is_validated_when_rendered(tmp_path: Path) -> None:
    engine = load(
        tmp_path,
        {
            "r.yaml": """
            - name: a
              on: {channel: online-chat}
              do:
                - telegram: {chat_id: 1, text: hi, parse_mode: "{{ client.notes }}"}
            """
        },
    )
    assert len(engine.evaluate(make_event(client={"notes": "HTML"}))) == 1
    plan = engine.evaluate(make_event(client={"notes": "bold"}))
    assert list(plan) == []
    assert "parse_mode" in plan.errors[0]


def test_duplicate_rule_names_across_files_name_the_first(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        {
            "10-a.yaml": GOOD.format(name="Greet"),
            "20-b.yaml": "# again\n" + GOOD.format(name="Greet"),
        },
    )
    assert len(found) == 1
    assert "20-b.yaml:3" in found[0]
    assert (
        f"rule name 'Greet' is already used at {tmp_path / 'rules.d' / '10-a.yaml'}:1" in found[0]
    )


def test_a_rules_file_may_be_a_mapping_with_rules(tmp_path: Path) -> None:
    engine = load(tmp_path, {"r.yaml": "rules:\n" + GOOD.format(name="a").replace("\n", "\n  ")})
    assert [r.name for r in engine.rules] == ["a"]
    message = one_error(tmp_path, "rulez: []\n")
    assert "unknown top-level key 'rulez' (did you mean 'rules'?)" in message


def test_files_load_in_name_order_and_suites_are_skipped(tmp_path: Path) -> None:
    engine = load(
        tmp_path,
        {
            "20-b.yaml": GOOD.format(name="b"),
            "10-a.yaml": GOOD.format(name="a"),
            "tests.yaml": "tests:\n  - {name: x, inputs: [{event: {channel: a, event: b}}]}\n",
            "notes.txt": "not yaml: [",
        },
    )
    assert [r.name for r in engine.rules] == ["a", "b"]
    assert [p.name for p in engine.ruleset.suites] == ["tests.yaml"]
    assert [p.name for p in engine.ruleset.files] == ["10-a.yaml", "20-b.yaml"]


def test_disabled_rules_are_not_loaded(tmp_path: Path) -> None:
    engine = load(
        tmp_path,
        {"r.yaml": GOOD.format(name="a") + "  enabled: false\n" + GOOD.format(name="b")},
    )
    assert [r.name for r in engine.rules] == ["b"]
    assert [a.rule for a in engine.evaluate(make_event())] == ["b"]


def test_yaml_words_in_rules_stay_strings(tmp_path: Path) -> None:
    engine = load(
        tmp_path,
        {"r.yaml": "- name: no\n  on: {channel: online-chat}\n  do: [{autoreply: {text: off}}]\n"},
    )
    plan = engine.evaluate(make_event())
    assert [(a.rule, a.params["text"]) for a in plan] == [("no", "off")]


def test_file_size_cap(tmp_path: Path) -> None:
    big = "# " + "x" * MAX_FILE_BYTES + "\n" + GOOD.format(name="a")
    message = one_error(tmp_path, big)
    assert f"over {MAX_FILE_BYTES} bytes" in message


def test_the_files_of_a_rules_directory_are_read_within_a_total(tmp_path: Path) -> None:
    """Each file is within 1 MiB, and all of them together within MAX_RULES_BYTES: nothing
    bounded how many megabytes of rules a load compiled (up to 100 MB each, in the daemon and
    in every worker). The file that goes over is named; those after it are not read."""
    files = {}
    for i in range(10):
        rule_text = GOOD.format(name=f"r{i}")
        files[f"f{i}.yaml"] = "# " + "x" * (1_000_000 - len(rule_text) - 3) + "\n" + rule_text
    assert all(len(text) == 1_000_000 for text in files.values())
    assert 8 * 1_000_000 <= MAX_RULES_BYTES < 9 * 1_000_000
    found = errors(tmp_path, files)
    assert [error.split("rules.d/")[1] for error in found] == [
        f"f8.yaml: the rules files are over {MAX_RULES_BYTES} bytes together: this file and "
        "those after it are not loaded"
    ]


def test_expression_size_cap(tmp_path: Path) -> None:
    long = " or ".join(["client.name == 'x'"] * (MAX_EXPRESSION // 10))
    message = one_error(
        tmp_path,
        rule(ON, f'if: "{long}"', DO),
    )
    assert f"over {MAX_EXPRESSION} characters" in message


def test_assign_to_an_agent_without_access_is_an_error(tmp_path: Path) -> None:
    message = one_error(
        tmp_path,
        "- name: a\n  on: {channel: online-chat}\n  do: [{assign: {agent: LENA@shop.example}}]\n",
    )
    assert "agent lena@shop.example has no access to channel 'online-chat'" in message
    assert ":3: [0].do[0].assign" in message
    # an agent with access (any case) is fine
    engine = load(
        tmp_path,
        {"r.yaml": rule(ON, "do: [{assign: {agent: anna@SHOP.example}}]")},
    )
    assert engine.rules[0].name == "a"


# -- warnings ----------------------------------------------------------------------------------


def test_warning_for_an_unconfigured_channel(tmp_path: Path) -> None:
    found = warnings(
        tmp_path,
        "- name: a\n  on: {channel: online-caht}\n  do: [{slack: {channel: x, text: y}}]\n",
    )
    assert len(found) == 1
    assert (
        "rule 'a' can never fire: channel 'online-caht' is not configured "
        "(did you mean 'online-chat'?)" in found[0]
    )


def test_warning_for_an_unknown_event(tmp_path: Path) -> None:
    found = warnings(
        tmp_path,
        "- name: a\n  on: {channel: online-chat, event: reopend}\n  do: [{autoreply: {text: y}}]\n",
    )
    assert len(found) == 1
    assert "no channel emits event 'reopend' (did you mean 'reopened'?)" in found[0]


def test_warning_for_a_rule_shadowed_by_an_unconditional_stop(tmp_path: Path) -> None:
    found = warnings(
        tmp_path,
        """
        - name: catch all
          on: {channel: online-chat}
          stop: true
          do: [{autoreply: {text: a}}]
        - name: never
          on: {channel: online-chat, event: created}
          do: [{autoreply: {text: b}}]
        """,
    )
    assert len(found) == 1
    assert "rule 'never' can never fire: rule 'catch all'" in found[0]
    assert "r.yaml:5" in found[0]


def test_each_hidden_rule_is_reported_once_by_the_first_stop_that_hides_it(
    tmp_path: Path,
) -> None:
    # each rule was checked against every earlier stop rule and reported once per stop: a
    # file of 4,000 stop rules made 8 million warnings (minutes of CPU, gigabytes of memory)
    stops = "".join(f"- {{name: s{i}, {ON}, stop: true, {DO}}}\n" for i in range(150))
    other = "- {name: other, on: {channel: email}, stop: true, " + DO + "}\n"
    later = "- {name: later, on: {channel: [online-chat, email]}, " + DO + "}\n"
    config = CONFIG.replace("channels:\n", "channels:\n  email: {provider: chatra}\n", 1)
    found = warnings(tmp_path, stops + other + later, config)
    assert len(found) == 149, found[-3:]
    assert "r.yaml:2" in found[0]
    assert "rule 's1' can never fire: rule 's0'" in found[0]
    assert "rule 's149' can never fire: rule 's0'" in found[148]
    assert "rule 'other'" not in "".join(found)  # another channel: not hidden
    assert "rule 'later'" not in "".join(found)  # no stop rule sees both channels


def test_no_shadow_warning_for_a_conditional_stop(tmp_path: Path) -> None:
    text = """
    - name: maybe
      on: {channel: online-chat}
      if: client.country_code == 'DE'
      stop: true
      do: [{autoreply: {text: a}}]
    - name: later
      on: {channel: online-chat}
      do: [{autoreply: {text: b}}]
    """
    assert warnings(tmp_path, text) == []


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("channels: {online-chat: {provider: chatra}}\n", "slack: Slack is not configured"),
        (
            "channels: {online-chat: {provider: chatra}}\nintegrations: {slack: {token: ''}}\n",
            "slack: the Slack token is empty",
        ),
    ],
)
def test_warning_for_an_unconfigured_integration(tmp_path: Path, config: str, reason: str) -> None:
    found = warnings(
        tmp_path,
        "- name: a\n  on: {channel: online-chat}\n  do: [{slack: {channel: x, text: y}}]\n",
        config,
    )
    assert len(found) == 1
    assert reason in found[0]
    assert ":3: [0].do[0].slack" in found[0]


def test_the_garbage_collector_runs_again_after_a_load_good_or_bad(tmp_path: Path) -> None:
    import gc

    from rulekit.rules.collector import collector_paused

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("- name: r\n  on: {channel: online-chat}\n  do:\n    - autoreply: {text: hi}\n")
    bad.write_text("- name: r\n  on: {channel: online-chat}\n  do: []\n")
    plugins = load_plugins()
    assert gc.isenabled()
    loader = RuleLoader(plugins, load_config(None, plugins))
    with collector_paused():
        assert not gc.isenabled()
        loader.load(good)  # a load inside another resumes nothing
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValidationErrors):
        RuleLoader(plugins, load_config(None, plugins)).load(bad)
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("condition", "country", "matches"),
    [
        ("client.country_code in ['DE', 'AT']", "AT", True),
        ("client.country_code in ['DE', 'AT']", "FR", False),
        ("client.country_code not in ('DE', 'AT')", "FR", True),
        ("client.country_code in ['DE', client.name]", "FR", True),  # not all constants
        ("client.country_code in []", "DE", False),
    ],
)
def test_membership_in_a_list_of_constants(build_engine, condition, country, matches):
    rules = (
        f"- name: r\n  on: {{channel: online-chat}}\n  if: {condition!r}\n"
        "  do:\n    - autoreply: {text: hi}\n"
        # the same list in a second rule shares its tuple; a list of 1 is not a list of True
        f"- name: s\n  on: {{channel: online-chat}}\n  if: {condition!r}\n"
        "  do:\n    - autoreply: {text: hi}\n"
        "- name: t\n  on: {channel: online-chat}\n  if: '1 in [true]'\n"
        "  do:\n    - autoreply: {text: hi}\n"
    )
    engine = build_engine(rules)
    event = make_event(client={"country_code": country, "name": "FR"})
    expected = (["r", "s"] if matches else []) + ["t"]
    assert [action.rule for action in engine.evaluate(event)] == expected


def test_the_same_step_in_several_rules_reports_its_problem_at_each(build_engine):
    step = "  do:\n    - play_sound: {sound: no-such-sound, to: everyone}\n"
    rules = "".join(f"- name: r{n}\n  on: {{channel: online-chat}}\n{step}" for n in range(3))
    with pytest.raises(ValidationErrors) as caught:
        build_engine(rules)
    message = str(caught.value)
    for line in (4, 8, 12):
        assert f"rules.yaml:{line}:" in message and "unknown sound" in message, message


def test_errors_and_warnings_beyond_the_first_200_are_counted_not_listed(tmp_path: Path) -> None:
    """A rules file of 60,000 unknown keys made 60,000 errors: 12 MB that `rulekit check`
    printed and every refused reload logged and published to the console."""
    keys = "".join(f"  k{i}: 1\n" for i in range(500))
    with pytest.raises(ValidationErrors) as caught:
        load(tmp_path / "a", {"r.yaml": rule(ON, DO) + keys})
    found = [str(error) for error in caught.value.errors]
    assert caught.value.total == 500
    assert len(found) == 201
    assert "unknown field 'k0'" in found[0] and "unknown field 'k199'" in found[199]
    assert found[200] == "300 more errors, not listed (the first 200 are)"
    assert pickle.loads(pickle.dumps(caught.value)).errors[200].message == found[200]
    rules = "".join(rule("on: {channel: nowhere}", DO, name=f"r{i}") for i in range(300))
    shown = [str(w) for w in load(tmp_path / "b", {"r.yaml": rules}).ruleset.warnings]
    assert len(shown) == 201 and "channel 'nowhere' is not configured" in shown[0]
    assert shown[200] == "100 more warnings, not listed (the first 200 are)"


def test_unknown_keys_are_answered_with_the_keys_a_file_writes(tmp_path: Path) -> None:
    """Fields with another name in Python (``if_``, ``sender``) are named as written."""
    found = errors(
        tmp_path,
        {
            "a.yaml": """
            - name: a
              on: {}
              iff: message.text
              do: [{tag: {add: [x]}}]
            - name: b
              on: {}
              when: message.text
              do: [{tag: {add: [x]}}]
            """
        },
    )
    assert any("unknown field 'iff' (did you mean 'if'?)" in line for line in found), found
    allowed = next(line for line in found if "unknown field 'when'" in line)
    assert "allowed: name, description, enabled, on, if, do," in allowed
    assert "if_" not in allowed
    with pytest.raises(ValidationErrors) as caught:
        load(tmp_path / "smtp", {}, CONFIG + "  smtp: {host: mail.example, frm: a@shop.example}\n")
    assert "unknown field 'frm' (did you mean 'from'?)" in str(caught.value)


def test_text_that_yaml_reads_as_something_else_says_to_quote_it(tmp_path: Path) -> None:
    """``text: 12:30`` is a number to YAML (base 60), ``2026-12-24`` a date: the error says
    so, without repeating the value."""
    found = errors(
        tmp_path,
        {
            "a.yaml": """
            - name: 12:30
              on: {event: message}
              do:
                - slack: {channel: '#a', text: 12:30}
                - autoreply: {text: 2026-12-24}
                - autoreply: {text: true}
                - autoreply: {text: {a: 1}}
            """
        },
    )
    quote = "Input should be a valid string (YAML reads it as {}: put it in quotes)"
    assert any(line.endswith(f"[0].name: {quote.format('a number')}") for line in found), found
    assert any(f"[0].do[0].slack.text: {quote.format('a number')}" in line for line in found)
    assert any(f"[0].do[1].autoreply.text: {quote.format('a date')}" in line for line in found)
    assert any(
        f"[0].do[2].autoreply.text: {quote.format('true or false')}" in line for line in found
    )
    assert any(
        line.endswith("[0].do[3].autoreply.text: Input should be a valid string") for line in found
    )
