"""Files an admin edits cannot hang or exhaust rulekit: alias bombs, recursive aliases, deep
nesting, huge values and oversize files are refused with the file and line, in rules, config
and test-suite files alike (all YAML goes through rulekit.yamlsource)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from rulekit import sources, yamlsource
from rulekit.config import MAX_CONFIG_BYTES
from rulekit.rules.files import MAX_FILE_BYTES

BOMB_LINES = [
    'x: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *(
        f"{key}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]"
        for key, name, prev in zip("bcdefgh", "bcdefgh", "abcdefg", strict=True)
    ),
]
"""A "billion laughs": under 600 bytes, 9**8 (43 million) strings once expanded."""
BOMB = "\n".join(BOMB_LINES) + "\n"
RULE = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: hello}
"""


def bomb_rules() -> str:
    """Rules whose first rule carries the bomb (as an unknown key, which validation reads)."""
    inner = "\n".join("  " + line for line in BOMB_LINES)
    return f"- name: Bomb\n{inner}\n  on: {{channel: online-chat, event: created}}\n" + (
        "  do:\n    - autoreply: {text: *h}\n"
    )


def rulekit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (the timeout only guards the test run against a hang)."""
    return subprocess.run(
        [sys.executable, "-m", "rulekit.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_bomb_is_small():
    assert len(BOMB) < 600
    assert len(bomb_rules()) < 700


def test_an_alias_bomb_is_refused_with_its_line():
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load(BOMB)
    assert "aliases repeat too much" in caught.value.message
    assert caught.value.line is not None and 1 < caught.value.line <= len(BOMB_LINES)


def test_aliases_within_the_limit_are_fine():
    text = "base: &base {channel: online-chat, event: created}\n" + "".join(
        f"r{n}: *base\n" for n in range(1000)
    )
    data = yamlsource.load(text)
    assert data["r999"] == {"channel": "online-chat", "event": "created"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("&a [*a]", "contains it"),
        ("a: &a {b: *a}", "contains it"),
        ("[" * (yamlsource.MAX_DEPTH + 1) + "]" * (yamlsource.MAX_DEPTH + 1), "nest"),
        ("[" * 10_000 + "]" * 10_000, "nest"),
        ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), "nest"),
        ("n: " + "9" * 10_000, "cannot read this value"),
        ("a: 1\n---\nb: 2\n", "single document"),
        ("---\n" * 100_000, "single document"),
        # merge keys are aliases too (a chain of them expands like a bomb): refused outright
        ("a: &a {x: 1}\nb:\n  <<: *a\n", "merge keys ('<<') are not supported"),
        ("a: &a {x: 1}\nb: {<<: [*a, *a]}\n", "merge keys"),
        # a list or mapping as a key, written or through an alias, is no crash
        ("? [1, 2]\n: x\n", "a key must be a plain value"),
        ("a: &a {x: 1}\nb: {? *a : 1}\n", "a key must be a plain value"),
        # a long text repeated by aliases is counted by its characters, not as one value
        ("t: &t " + "x" * 20_000 + "\nall: [" + ", ".join(["*t"] * 60) + "]\n", "characters"),
    ],
)
def test_hostile_shapes_are_refused_with_a_yaml_error(text, message):
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load(text)
    assert message in caught.value.message


def test_a_huge_scalar_within_the_size_cap_loads():
    text = "text: " + "x" * (MAX_FILE_BYTES - 100)
    assert len(yamlsource.load(text)["text"]) == MAX_FILE_BYTES - 100


@pytest.mark.parametrize("kind", ["rules", "config", "suite"])
def test_rulekit_check_and_test_refuse_a_bomb_with_file_and_line(tmp_path, kind):
    (tmp_path / "rules.yaml").write_text(bomb_rules() if kind == "rules" else RULE)
    config = "channels: {online-chat: {provider: chatra}}\n"
    if kind == "config":
        config = "\n".join(BOMB_LINES) + "\n" + config
    (tmp_path / "rulekit.yaml").write_text(config)
    if kind == "suite":
        (tmp_path / "suite.yaml").write_text(
            "\n".join(BOMB_LINES) + "\ntests: [{name: c, channel: online-chat, inputs: *h}]\n"
        )
        result = rulekit(
            "test", "suite.yaml", "--rules", "rules.yaml", "--config", "rulekit.yaml", cwd=tmp_path
        )
        assert result.returncode in (1, 2), result
        assert "suite.yaml" in result.stdout + result.stderr
    else:
        result = rulekit("check", "rules.yaml", "--config", "rulekit.yaml", cwd=tmp_path)
        assert result.returncode == 1, result
        file = "rules.yaml" if kind == "rules" else "rulekit.yaml"
        assert f"{file}:" in result.stderr + result.stdout
    output = result.stdout + result.stderr
    assert "aliases repeat too much" in output
    assert "Traceback" not in output


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as file:
        file.truncate(size)
    return path


def test_an_oversize_rules_or_config_file_is_refused_without_reading_it(tmp_path):
    """The size is checked before reading: a 300 MB file costs no memory."""
    from rulekit.config import load_config
    from rulekit.errors import RulekitError, ValidationErrors
    from rulekit.plugins import load_plugins
    from rulekit.rules.loader import RuleLoader

    rules = sparse(tmp_path / "rules.yaml", 300 * 1024 * 1024)
    config = sparse(tmp_path / "rulekit.yaml", 300 * 1024 * 1024)
    plugins = load_plugins()
    loader = RuleLoader(plugins, load_config(None, plugins))
    tracemalloc.start()
    try:
        with pytest.raises(ValidationErrors) as rules_error:
            loader.load(rules)
        with pytest.raises(RulekitError) as config_error:
            load_config(config, plugins)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024
    assert f"over {MAX_FILE_BYTES} bytes" in str(rules_error.value)
    assert f"over {MAX_CONFIG_BYTES} bytes" in str(config_error.value)


def test_read_file_returns_at_most_the_cap(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"a" * 10)
    with pytest.raises(sources.FileTooLarge):
        sources.read_file(path, 5)
    assert sources.read_file(path, 10) == b"a" * 10


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_as_config_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "rulekit.yaml")
    (tmp_path / "rules.yaml").write_text(RULE)
    result = rulekit("check", "rules.yaml", "--config", "rulekit.yaml", cwd=tmp_path)
    assert result.returncode == 1, result
    assert "not a regular file" in result.stderr + result.stdout


def test_a_named_pipe_as_the_rules_is_an_error_not_a_traceback(tmp_path):
    """A path that is neither a file nor a directory was listed as a directory: a
    NotADirectoryError traceback, where a precise error is due."""
    os.mkfifo(tmp_path / "rules.yaml")
    result = rulekit("check", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        "error: rules.yaml: cannot read the file: not a regular file",
        "1 error(s)",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"channel": "online-chat", "event": "created", "n": ' + b"9" * 10_000 + b"}", "digits"),
        (b'{"channel": "online-chat", "event": "created", "n": NaN}', "NaN"),
    ],
)
def test_hostile_json_event_files_are_clear_errors(tmp_path, content, message):
    (tmp_path / "event.json").write_bytes(content)
    (tmp_path / "rules.yaml").write_text(RULE)
    (tmp_path / "rulekit.yaml").write_text("channels: {online-chat: {provider: chatra}}\n")
    result = rulekit(
        "test", "event.json", "--rules", "rules.yaml", "--config", "rulekit.yaml", cwd=tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode in (1, 2), output
    assert "event.json: invalid JSON: " in output and message in output
    assert "Traceback" not in output


NESTED = {
    "a sum": lambda n: " + ".join(["1"] * (n + 1)),
    "filters": lambda n: "client.name" + "|trim" * n,
    "attributes": lambda n: "client" + ".name" * n,
    "negations": lambda n: "not " * n + "true",
    "calls": lambda n: "range(" * n + "1" + ")" * n,
    "lists": lambda n: "[" * n + "1" + "]" * n,
    "mappings": lambda n: "{'a': " * n + "1" + "}" * n,
    "conditionals": lambda n: "1 if true else " * n + "2",
}


def nested_rules(shape: str, depth: int, where: str) -> tuple[str, int]:
    """Rules with one expression of ``shape`` nested ``depth`` deep; and its line."""
    expression = NESTED[shape](depth)
    text = "hi" if where == "condition" else "{{ " + expression + " }}"
    if where == "jinja template":
        text = "{% if true %}" + text + "{% endif %}"
    condition = f"  if: {expression!r}\n" if where == "condition" else ""
    rules = (
        "- name: r\n  on: {channel: online-chat}\n"
        f"{condition}  do:\n    - autoreply: {{text: {text!r}}}\n"
    )
    return rules, 3 if where == "condition" else 4


@pytest.mark.parametrize("where", ["template", "jinja template", "condition"])
@pytest.mark.parametrize("shape", list(NESTED))
def test_expressions_nested_too_deeply_are_refused_with_their_line(build_engine, where, shape):
    """Code is generated from each expression: a tree deeper than the compiler (or the
    recursion limit) takes is a clear error at its line, never a crash of check or the start."""
    from rulekit.errors import ValidationErrors
    from rulekit.expr.parse import MAX_NESTING

    rules, line = nested_rules(shape, MAX_NESTING * 3, where)
    with pytest.raises(ValidationErrors) as caught:
        build_engine(rules)
    message = str(caught.value)
    assert f"rules.yaml:{line}:" in message, message
    assert "nest" in message or "recursion" in message, message
    # at the limit itself: the expression loads, or is refused as clearly (Jinja2's own
    # parser recurses more than rulekit's for some shapes)
    rules, line = nested_rules(shape, MAX_NESTING - 5, where)
    try:
        engine = build_engine(rules)
    except ValidationErrors as exc:
        assert f"rules.yaml:{line}:" in str(exc) and "nests too deeply" in str(exc), str(exc)
    else:
        assert [rule.name for rule in engine.rules] == ["r"]


@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        ("{% for i in [1] %}", "{% endfor %}"),
        ("{% macro m() %}", "{% endmacro %}"),
        ("{% filter upper %}", "{% endfilter %}"),
        ("{% set x %}", "{% endset %}"),
    ],
)
def test_statements_nested_too_deeply_say_so_at_their_line(build_engine, opening, closing):
    """Jinja2's parser and compiler recurse with the nesting of statements: the recursion
    limit was reported as "syntax error: maximum recursion depth exceeded"."""
    from rulekit.errors import ValidationErrors

    template = opening * 400 + "x" + closing * 400
    rules = "- name: r\n  on: {channel: online-chat}\n  do:\n"
    rules += f"    - autoreply: {{text: '{template}'}}\n"
    with pytest.raises(ValidationErrors) as caught:
        build_engine(rules)
    assert [str(error).split("rules.yaml:")[1] for error in caught.value.errors] == [
        "4: [0].do[0].autoreply.text: template: the template nests too deeply (split it with "
        "macros or {% set %})"
    ]


def test_rulekit_check_reports_a_deep_expression_without_a_traceback(tmp_path):
    chain = " + ".join(["1"] * 300)
    (tmp_path / "rules.yaml").write_text(
        f"- name: r\n  on: {{channel: online-chat}}\n  if: '{chain} > 1'\n"
        "  do:\n    - autoreply: {text: '{{ client.name" + "|trim" * 400 + " }}'}\n"
    )
    result = rulekit("check", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 1, result
    assert "rules.yaml:3:" in result.stderr and "rules.yaml:5:" in result.stderr, result
    assert "Traceback" not in result.stdout + result.stderr


def test_values_quoted_in_errors_are_elided_to_a_readable_line(tmp_path):
    """A rule's name of 900,000 characters was quoted whole in each of its errors, an
    expression of 17,000 in its own: every line of `rulekit check` stays under about a
    thousand characters, keeping the file, the line and the reason."""
    alternatives = "|".join(f"w{i}" for i in range(3000))
    (tmp_path / "rules.yaml").write_text(
        f"- name: {'x' * 900_000}\n"
        "  on: {channel: online-chat}\n"
        "- name: long\n"
        "  on: {channel: online-chat}\n"
        f"  if: \"message.text is search('{alternatives}')\"\n"
        "  do: [{autoreply: {text: hi}}]\n"
    )
    (tmp_path / "rulekit.yaml").write_text("channels: {online-chat: {provider: chatra}}\n")
    result = rulekit("check", "rules.yaml", "--config", "rulekit.yaml", cwd=tmp_path)
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert [line.split(": ", 2)[1] for line in errors] == ["rules.yaml:1", "rules.yaml:5"]
    assert "missing required field 'do'" in errors[0]
    assert "is over 4000 characters" in errors[1]
    assert all(len(line) < 1_100 for line in errors), [len(line) for line in errors]


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("if", "message.text|length > 1e309"),
        ("if", "-1E400 < 0"),
        ("if", "message.text in ['a', 1e999]"),
        ("unless", "{'a': 2e308}.a"),
        ("text", "{{ 1e309|int }}"),
        ("text", "{% set x = [1, 9e999] %}{{ x|first }}"),
        ("text", "{{ message.text|round(1e400) }}"),
        ("if", "message.text|length < 0x" + "f" * 3400),  # 4,094 digits
        ("text", "{{ [1, 0b" + "1" * 13300 + "]|first }}"),  # 4,004 digits
        ("text", "{{ 1" + "0" * 4000 + " }}"),
    ],
)
def test_a_number_written_too_large_is_refused_with_its_line(build_engine, where, source):
    """A float literal over 1.8e308 is infinity, which the generated code cannot name (the
    rule loaded and failed every event with a NameError); an integer of more than 4,000 digits
    is more than a template may compute (past 4,300 the load itself crashed). Each is refused
    where it is written."""
    from rulekit.errors import ValidationErrors

    rule = {"name": "r", "on": {"event": "message"}, "do": [{"slack": {"text": "x"}}]}
    rule["do"][0]["slack"]["channel"] = "#a"
    if where == "text":
        rule["do"][0]["slack"]["text"] = source
    else:
        rule[where] = source
        if where == "unless":
            rule["after"] = "5m"
    with pytest.raises(ValidationErrors) as caught:
        build_engine(json.dumps([rule]))
    message = str(caught.value)
    assert "rules.yaml:1:" in message, message
    assert "a number is too large" in message, message
    assert "NameError" not in message
    within = build_engine(json.dumps([_replaced(rule)]))
    assert [r.name for r in within.rules] == ["r"]


def _replaced(rule: dict) -> dict:
    """``rule`` with its number as large as a number may be written."""
    text = json.dumps(rule)
    for big in ("1e309", "1E400", "1e999", "2e308", "9e999", "1e400"):
        text = text.replace(big, "1.7e308")
    text = text.replace("0x" + "f" * 3400, "0x" + "f" * 3300)  # 3,974 digits
    text = text.replace("0b" + "1" * 13300, "0b" + "1" * 13200)
    return json.loads(text.replace("1" + "0" * 4000, "9" * 4000))
