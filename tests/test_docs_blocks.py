"""Every code block of the README, docs/ and the plugins' READMEs is run by a test.

``BLOCKS`` names each block (its file, the heading it is under and its first line) and says how
it is run: here (a config that loads, rules that load, a suite that passes, a command line that
parses or runs, an excerpt that is in the file it names) or by the test that runs it elsewhere.
A new block no entry names fails ``test_every_block_is_run``: add it to ``BLOCKS``."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from scaffold import REPO, write

from rulekit.cli.main import cli
from rulekit.runtime.dispatcher import DEFAULT_LEASE, STOP_GRACE, TIMEOUT_GRACE
from rulekit.runtime.logs import log_id
from rulekit.store import open_store

FENCE = re.compile(r"^( *)```(.*)$")


@dataclass(frozen=True)
class Block:
    file: str  # relative to the repository
    line: int
    heading: str
    lang: str
    text: str

    @property
    def first(self) -> str:
        return self.text.strip().splitlines()[0].strip()


def doc_files() -> list[Path]:
    return [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "plugins").glob("*/README.md")),
    ]


def doc_blocks() -> list[Block]:
    found = []
    for path in doc_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        heading, index = "", 0
        while index < len(lines):
            line = lines[index]
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            opening = FENCE.match(line)
            if opening:
                indent = len(opening.group(1))
                end = index + 1
                while not FENCE.match(lines[end]):
                    end += 1
                text = "\n".join(body[indent:] for body in lines[index + 1 : end]) + "\n"
                lang = opening.group(2).split(" ")[0]
                relative = path.relative_to(REPO).as_posix()
                found.append(Block(relative, index + 1, heading, lang, text))
                index = end
            index += 1
    return found


# -- how a block is run ----------------------------------------------------------------------

CHANNELS = """
channels:
  online-chat:
    provider: chatra
    default_group: support
    default_agent: {email: support@shop.example.com, name: Shop Support}
groups: [support, sales]
agents:
  - {email: anna@shop.example.com, name: Anna, groups: [support, sales], channels: [online-chat]}
"""


def load(config_text: str, tmp_path: Path) -> Any:
    """The config as ``rulekit run`` would load it (plugins from their entry points)."""
    from rulekit.config import load_config
    from rulekit.plugins import load_plugins

    path = write(tmp_path / "config" / "rulekit.yaml", config_text)
    return load_config(path, load_plugins(), environ={})


def cli_lines(text: str) -> list[list[str]]:
    """The ``rulekit`` command lines of a block, as arguments: ``[--flag VALUE]`` is taken as
    given, ``…`` placeholders stay values, comments and ``.venv/bin/`` go."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        for part in line.split(" && "):
            words = shlex.split(part.replace("[", " ").replace("]", " "), comments=True)
            if words and words[0].split("/")[-1] == "rulekit":
                commands.append(words[1:])
    return commands


def parse(arguments: list[str]) -> click.Context:
    """Parse a command line as ``rulekit`` would, without running it: every option and
    argument must exist and take the value given."""
    import warnings

    context = cli.make_context("rulekit", list(arguments), resilient_parsing=False)
    command: click.Command = cli
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 keeps the command's name there still
            warnings.simplefilter("ignore", DeprecationWarning)
            left = [*context.protected_args, *context.args]
        name, found, rest = command.resolve_command(context, left)
        assert found is not None, f"rulekit has no command {name!r}"
        context = found.make_context(name or "", rest, parent=context)
        command = found
    return context


Runner = Callable[[Block, Path, pytest.MonkeyPatch], None]


def elsewhere(test: str) -> Runner:
    """The block is run by ``test`` (a test file that reads the block's doc)."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        source = (REPO / test).read_text(encoding="utf-8")
        assert Path(block.file).name in source or block.file in source, (
            f"{test} does not read {block.file}"
        )

    run.elsewhere = test  # type: ignore[attr-defined]
    return run


def config(before: str = "", replace: dict[str, str] | None = None) -> Runner:
    """The block is a config (with ``before`` for what it leaves to other sections)."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        text = block.text
        for old, new in (replace or {}).items():
            assert old in text, f"{block.file}:{block.line} has no {old!r} any more"
            text = text.replace(old, new)
        load(before + text, tmp_path)

    return run


def rules(wrap: str = "{}", config_text: str = CHANNELS) -> Runner:
    """The block is rules (``wrap`` puts a fragment into a rules file) that load."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from rulekit.engine import Engine

        text = wrap.format(indent(block.text, wrap))
        rules_dir = write(tmp_path / "rules.d" / "rules.yaml", text).parent
        config_path = write(tmp_path / "rulekit.yaml", config_text)
        engine = Engine.from_path(rules_dir, config_path)
        names = [rule["name"] for rule in yaml.safe_load(text)]
        assert [rule.name for rule in engine.rules] == names

    return run


def indent(text: str, wrap: str) -> str:
    """``text`` indented as deep as the ``{}`` in ``wrap``."""
    line = next(line for line in wrap.splitlines() if "{}" in line)
    depth = len(line) - len(line.lstrip())
    return "\n".join(" " * depth + row if row else row for row in text.splitlines()).lstrip()


def commands(run_them: bool = False, folders: tuple[str, ...] = ()) -> Runner:
    """The block's ``rulekit`` command lines parse (and with ``run_them``, run from the
    repository's root and exit 0); ``folders`` are the placeholders they name, made in an
    empty folder they are parsed in."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        lines = cli_lines(block.text)
        assert lines, f"{block.file}:{block.line} has no rulekit command"
        monkeypatch.chdir(REPO if run_them else tmp_path)
        for folder in folders:
            (tmp_path / folder).mkdir()
        for arguments in lines:
            parse(arguments)
            if run_them:
                result = CliRunner().invoke(cli, arguments)
                assert result.exit_code == 0, result.output

    return run


def code(line: str) -> str:
    """A line of code without its comment and indentation."""
    return line.split("  #")[0].strip()


def excerpt(source: str) -> Runner:
    """Each line of the block (but ``...`` and comments) is a line of ``source``."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        lines = {code(line) for line in (REPO / source).read_text().splitlines()}
        for line in block.text.splitlines():
            line = code(line)
            if line and line != "..." and not line.startswith("#"):
                assert line in lines, f"{block.file}:{block.line}: {line!r} is not in {source}"

    return run


def api_shape(module: str, name: str) -> Runner:
    """The block shows a class of ``module``: each attribute it sets has that value there, each
    field it declares is a field there, each method it names takes the same parameters."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import ast
        import importlib
        import inspect

        real = getattr(importlib.import_module(module), name)
        [shown] = [node for node in ast.parse(block.text).body if isinstance(node, ast.ClassDef)]
        assert shown.name == name
        assert [ast.unparse(base) for base in shown.bases] == [
            base.__name__ for base in real.__bases__
        ]
        for node in shown.body:
            if isinstance(node, ast.Assign):
                [target] = node.targets
                value = getattr(real, ast.unparse(target))
                if isinstance(node.value, ast.Constant):
                    assert value == node.value.value, ast.unparse(node)
                else:
                    assert getattr(value, "__name__", None) == ast.unparse(node.value)
            elif isinstance(node, ast.AnnAssign):
                field = ast.unparse(node.target)
                assert field in real.model_fields, f"{name} has no field {field}"
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                method = getattr(real, node.name)
                parameters = [a.arg for a in [*node.args.args, *node.args.kwonlyargs]]
                assert list(inspect.signature(method).parameters) == parameters, node.name
                assert inspect.iscoroutinefunction(method) == isinstance(
                    node, ast.AsyncFunctionDef
                ), node.name

    return run


def tree(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block is a file tree: every file and folder it names exists."""
    root = REPO / block.first
    assert root.is_dir(), f"{block.file}: {block.first} does not exist"
    folders: list[tuple[int, Path]] = [(-1, root)]
    if True:
        for line in block.text.splitlines()[1:]:
            depth = len(line) - len(line.lstrip())
            name = line.split()[0]
            while folders and folders[-1][0] >= depth:
                folders.pop()
            parent = folders[-1][1]
            path = parent / name.rstrip("/")
            if "*" in name:
                assert list(parent.glob(name)), f"{block.file}: nothing is {parent / name}"
            else:
                assert path.exists(), f"{block.file}: {path.relative_to(REPO)} does not exist"
            if name.endswith("/"):
                folders.append((depth, path))


def from_file(source: str) -> Runner:
    """The block shows rules of ``source``: each is there, the same but for its description
    (and the rules load)."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        shown = yaml.safe_load(block.text)
        there = {rule["name"]: rule for rule in yaml.safe_load((REPO / source).read_text())}
        for rule in shown:
            assert rule["name"] in there, f"{source} has no rule {rule['name']!r}"
            kept = {key: value for key, value in there[rule["name"]].items() if key in rule}
            assert kept == rule, f"{block.file}:{block.line}: {rule['name']!r} is not {source}'s"
        rules(config_text=EXAMPLE_CONFIG)(block, tmp_path, monkeypatch)

    return run


EXAMPLE_CONFIG = (REPO / "examples" / "rulekit.yaml").read_text().replace("../rules.d", "rules.d")


def python(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block runs from the repository's root."""
    monkeypatch.chdir(REPO)
    exec(compile(block.text, block.file, "exec"), {})


def text_only(reason: str) -> Runner:
    """Not code: a URL, a header shape, an install command (``reason`` says which)."""

    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert "rulekit " not in block.text or block.text.startswith("pip install"), reason

    return run


def suite_in_examples(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block is a suite at ``rules.d/tests.yaml`` of the repository: it passes with the
    bundled rules and example config."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(REPO / "rules.d", tmp_path / "rules.d")
    suite = write(tmp_path / "rules.d" / "tests.yaml", block.text)
    config_path = str(tmp_path / "examples" / "rulekit.yaml")
    result = CliRunner().invoke(cli, ["test", "--config", config_path, str(suite)])
    assert result.exit_code == 0 and "passed" in result.output, result.output


def conditions(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``if:`` block: a rule with it loads, and it holds for an event it describes."""
    from scaffold import make_event

    from rulekit.engine import Engine

    rule = "- name: doc\n  on: {channel: online-chat}\n  do: [{tag: {add: [x]}}]\n  "
    rule += indent(block.text, "  {}")
    rules_dir = write(tmp_path / "rules.d" / "rules.yaml", rule).parent
    engine = Engine.from_path(rules_dir, write(tmp_path / "rulekit.yaml", CHANNELS))
    event = make_event(
        client={"country_code": "DE", "custom": {"plan": "basic"}},
        message={"text": "Order #12", "author": "client"},
    )
    from datetime import UTC, datetime

    plan = engine.evaluate(event, now=datetime(2026, 12, 7, 10, tzinfo=UTC))
    assert [action.rule for action in plan] == ["doc"]


def sqlite_shell(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sqlite3 FILE "SQL"`` lines run on a store rulekit made (the ``sqlite3`` shell when it
    is installed, else SQL through Python's module)."""
    from rulekit.store import open_store

    database = tmp_path / "rulekit.sqlite3"
    open_store(f"sqlite:///{database}", tmp_path).close()
    for line in block.text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "sqlite3", line
        statement = words[2].replace("/backups/rulekit-$(date +%F)", str(tmp_path / "backup"))
        if statement.startswith("."):
            if shutil.which("sqlite3") is None:
                pytest.skip("the sqlite3 shell is not installed")
            done = subprocess.run(["sqlite3", str(database), statement], capture_output=True)
            assert done.returncode == 0 and not done.stderr, done.stderr
        else:
            with sqlite3.connect(database) as connection:
                rows = connection.execute(statement).fetchall()
            if "# prints:" in line:
                assert [str(v) for row in rows for v in row] == [line.split("# prints:")[1].strip()]


def token_command(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command prints a token and its SHA-256, as the config wants it."""
    [line] = block.text.strip().splitlines()
    words = shlex.split(line)
    assert words[:2] == ["python", "-c"]
    done = subprocess.run([sys.executable, "-c", words[2]], capture_output=True, text=True)
    token, digest = done.stdout.split()
    assert hashlib.sha256(token.encode()).hexdigest() == digest and len(token) >= 32


def systemd_unit(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit's ``ExecStart`` is a rulekit command line that parses, its secrets come from
    a file and its comments stand on lines of their own, and its
    ``TimeoutStopSec`` lets a stopping daemon wait for a call under way of the default lease
    (an email's) and give the rest of the dispatcher its grace, rather than kill it mid-call."""
    lines = block.text.splitlines()
    # systemd has no comments after a value: "File=/x  # note" names the file "/x  # note"
    assert not [line for line in lines if "#" in line and not line.startswith("#")]
    # secrets come from a file, never from the unit (readable by all, as `systemctl show` is)
    assert not [line for line in lines if line.startswith("Environment=")]
    assert "UMask=0077" in lines  # what the daemon creates is its user's alone
    [start] = [line for line in lines if line.startswith("ExecStart=")]
    parse(cli_lines(start.removeprefix("ExecStart="))[0])
    [stop] = [line for line in lines if line.startswith("TimeoutStopSec=")]
    assert int(stop.removeprefix("TimeoutStopSec=")) > DEFAULT_LEASE + TIMEOUT_GRACE + STOP_GRACE


def toml_excerpt(source: str) -> Runner:
    def run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import tomllib

        shown = tomllib.loads(block.text)
        there = tomllib.loads((REPO / source).read_text())
        assert shown["project"]["entry-points"] == there["project"]["entry-points"]

    return run


def quick_start(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run by ``test_the_quick_start_runs``."""


def webhook_body(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The body, posted to a ``webhook`` channel ``web``, is the one event the text says."""
    import json

    config_path = write(tmp_path / "rulekit.yaml", "channels: {web: {provider: webhook}}\n")
    rules_dir = write(tmp_path / "rules.d" / "r.yaml", "[]\n").parent
    body = write(tmp_path / "body.json", block.text)
    arguments = ["test", "--config", str(config_path), "--rules", str(rules_dir)]
    result = CliRunner().invoke(
        cli, [*arguments, "--channel", "web", str(body), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.output)["results"]
    events = [entry["event"] for entry in outcome["events"]]
    said = [(e["event"], e["id"], e["conversation"]["id"]) for e in events]
    assert said == [("created", "web:order-7-start", "web:order-7")]
    text = (REPO / block.file).read_text(encoding="utf-8")
    assert (
        "one event, `created` with the id\n`web:order-7-start` in the conversation `web:order-7`"
        in text
    )


def the_retention_defaults(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rulekit.config import RawConfig

    loaded = load(block.text, tmp_path).raw
    assert loaded.retention == RawConfig().retention  # the comments say these are the defaults


# file -> (heading, the start of its first line, how it is run) of each block
BLOCKS: dict[str, list[tuple[str, str, Runner]]] = {
    "README.md": [
        ("Quick start", "# run: install, then start t", quick_start),
        ("Quick start", "# test: install with test de", quick_start),
        ("Quick start", "curl -X POST --data @example", quick_start),
        ("Quick start", ".venv/bin/rulekit test --con", commands(run_them=True)),
        ("A 60-second tour", "- name: Telegram when a clie", from_file("rules.d/20-reopened.yaml")),
        ("Python API", "from rulekit import Engine,", python),
    ],
    "docs/configuration.md": [
        ("Configuration", "rules: rules.d", elsewhere("tests/test_docs.py")),
        ("`chatra` (online chat)", "channels:", config("groups: [support]\n")),
        (
            "`telegram-bot` (a Telegram bot)",
            "channels:",
            elsewhere("plugins/telegram/tests/test_telegram_docs.py"),
        ),
        ("Groups and agents", "groups:", config(CHANNELS.split("groups:")[0])),
        (
            "Tags and fields",
            "tags: [vip, billing, new, sp",
            elsewhere("tests/test_docs_conversation.py"),
        ),
        ("Integrations", "integrations:", config()),
        ("`webhook` (normalized events)", '[{"event": "created", "id": "o', webhook_body),
        ("`webhooks`", "integrations:", elsewhere("tests/test_docs.py")),
        ("`webhooks`", '{"version": 1, "id": "online', elsewhere("tests/test_docs.py")),
        (
            "`webhooks`",
            "import hashlib, hmac, time",
            elsewhere("tests/actions/test_webhook_action.py"),
        ),
        ("`smtp`", "integrations:", elsewhere("tests/test_docs.py")),
    ],
    "docs/operations.md": [
        ("Running the daemon", "rulekit run --config /etc/ru", commands()),
        ("HTTP server limits", "server:", elsewhere("tests/runtime/test_http_server.py")),
        ("systemd", "# /etc/systemd/system/ruleki", systemd_unit),
        (
            "Reverse proxy",
            "# in http { }: requests with",
            elsewhere("tests/server/console/test_console_nginx.py"),
        ),
        ("Backups", "sqlite3 /var/lib/rulekit/rul", sqlite_shell),
        ("Backups", "sqlite3 /backups/rulekit-202", sqlite_shell),
        ("Looking inside", 'sqlite3 rulekit.sqlite3 "SEL', sqlite_shell),
        ("Tokens", "python -c 'import secrets,ha", token_command),
        (
            "Tokens",
            "console:",
            config(
                CHANNELS.split("agents:")[0],
                {"5c1f…": "5c1f" + "0" * 60, "9a0b…": "9a0b" + "0" * 60},
            ),
        ),
        (
            "Sign-in throttling",
            "server:",
            elsewhere("tests/server/console/test_console_throttle.py"),
        ),
        ("`rulekit why EVENT_ID`", "", commands()),
        ("`rulekit history`", "", commands()),
        ("`rulekit stats`", "rulekit stats [--since 7d] [", commands()),
        (
            "`rulekit replay`: backtesting rules",
            "rulekit replay --rules candi",
            commands(folders=("candidate.d",)),
        ),
        (
            "`rulekit forget CLIENT_ID`: erasing a client's personal data",
            "rulekit forget 5f0c2b… [--ch",
            commands(),
        ),
        ("Retention", "retention:", the_retention_defaults),
        ("`rulekit db status`, `rulekit db upgrade`", "", commands()),
        ("How to switch", "storage: postgresql://ruleki", config()),
    ],
    "docs/console.md": [
        ("Signing in", "Authorization: Bearer <token", text_only("the header's shape")),
        ("Dead letters and set-aside webhooks", "", commands()),
    ],
    "docs/plugins.md": [
        ("Walkthrough: the Chatra plugin", "plugins/chatra/", tree),
        (
            "1. The entry point",
            "# plugins/chatra/pyproject.t",
            toml_excerpt("plugins/chatra/pyproject.toml"),
        ),
        (
            "2. The hook implementation",
            "# rulekit_chatra/plugin.py",
            excerpt("plugins/chatra/rulekit_chatra/plugin.py"),
        ),
        (
            "3. The settings model",
            "# rulekit_chatra/settings.py",
            api_shape("rulekit_chatra.settings", "ChatraSettings"),
        ),
        (
            "4. The Provider contract",
            "class ChatraProvider(Provide",
            api_shape("rulekit_chatra.provider", "ChatraProvider"),
        ),
        ("4. The Provider contract", "rulekit test --channel onlin", commands()),
        (
            '6. Time: "close after N idle" and other delays',
            "- name: Close chats idle for",
            elsewhere("tests/engine/test_timers.py"),
        ),
        (
            '6. Time: "close after N idle" and other delays',
            "from rulekit.channels import",
            elsewhere("plugins/telegram/tests/test_telegram_docs.py"),
        ),
        ("Connecting Chatra", "https://<your host>/webhooks", text_only("a URL")),
        ("The telegram channel (a Telegram bot)", "plugins/telegram/", tree),
        (
            "Connecting a bot",
            "rulekit telegram set-webhook",
            elsewhere("plugins/telegram/tests/test_telegram_docs.py"),
        ),
    ],
    "docs/rules.md": [
        (
            "Rules",
            "- name: Greet new chats",
            rules(config_text=CHANNELS + "integrations:\n  sounds: {}\n"),
        ),
        ("Conditions", "if:", conditions),
        ("Templates", '- telegram: {chat_id: "-1001', elsewhere("tests/test_docs.py")),
        ("Templates", "- webhook:", elsewhere("tests/test_docs.py")),
        (
            "Regular expressions",
            "- name: Order numbers go to",
            elsewhere("tests/test_docs_examples.py"),
        ),
        ("Regular expressions", "tests:", elsewhere("tests/test_docs_examples.py")),
        ("Statistics", "$ rulekit stats", elsewhere("tests/audit/test_stats.py")),
        ("Countries", "- name: German-speaking visi", elsewhere("tests/test_docs_examples.py")),
        ("Countries", "tests:", elsewhere("tests/test_docs_examples.py")),
        (
            "Assignment that knows the team",
            "# rulekit.yaml",
            elsewhere("tests/test_docs_examples.py"),
        ),
        (
            "Assignment that knows the team",
            "- name: Returning clients ge",
            elsewhere("tests/test_docs_examples.py"),
        ),
        ("Assignment that knows the team", "tests:", elsewhere("tests/test_docs_examples.py")),
        (
            "The team in conditions and templates",
            "- name: Nobody of support on",
            elsewhere("tests/test_docs_examples.py"),
        ),
        (
            "The team in conditions and templates",
            "tests:",
            elsewhere("tests/test_docs_examples.py"),
        ),
        (
            "A plan is a sequence",
            "- name: Route VIP chats",
            elsewhere("tests/test_docs_conversation.py"),
        ),
        (
            "Tags, priority and fields",
            "- name: Enterprise chats are",
            elsewhere("tests/test_docs_conversation.py"),
        ),
        ("Validation", "error: rules.d/10-greeting.y", elsewhere("tests/cli/test_check_strict.py")),
        ("Validation", "$ rulekit check --config exa", elsewhere("tests/cli/test_check_strict.py")),
        (
            "Seed scenarios, worked",
            "- name: Greet new chats",
            from_file("rules.d/10-greeting.yaml"),
        ),
        (
            "Seed scenarios, worked",
            "- name: Refund requests go t",
            from_file("rules.d/10-greeting.yaml"),
        ),
        (
            "Seed scenarios, worked",
            "- name: Telegram when a clie",
            from_file("rules.d/20-reopened.yaml"),
        ),
        (
            "Seed scenarios, worked",
            "- name: Agents answering fro",
            rules(config_text=EXAMPLE_CONFIG),
        ),
        ("Seed scenarios, worked", "- name: VIP chats reach the", elsewhere("tests/test_docs.py")),
        ("Trying rules: `rulekit test`", "rulekit test --config exampl", commands(run_them=True)),
        ("Test suites", "# rules.d/tests.yaml", suite_in_examples),
        ("Test suites", "rulekit test --config exampl", commands(run_them=True)),
        ("Time", "timezone: Europe/Berlin", elsewhere("tests/audit/test_time_suites.py")),
        ("Time", "- name: Nobody answered a ne", elsewhere("tests/audit/test_time_suites.py")),
        ("Time", "tests:", elsewhere("tests/audit/test_time_suites.py")),
        ("Python API", "from rulekit import Engine,", python),
    ],
    "plugins/chatra/README.md": [
        ("rulekit-chatra", "pip install rulekit-chatra", text_only("installs")),
        ("rulekit-chatra", "# rulekit.yaml", config("groups: [support]\n")),
    ],
    "plugins/telegram/README.md": [
        ("rulekit-telegram", "pip install rulekit-telegram", text_only("installs")),
        ("rulekit-telegram", "# rulekit.yaml", config("groups: [support]\n")),
    ],
}

# Every http request of docs/console.md and the json answer after it are sent to a daemon and
# compared; the json of the live feed's event too.
BY_LANG = {
    ("docs/console.md", "http"): "tests/server/console/test_console_docs.py",
    ("docs/console.md", "json"): "tests/server/console/test_console_docs.py",
}


def block_id(block: Block) -> str:
    return f"{block.file}:{block.line}"


def entries(block: Block) -> list[tuple[str, str, Runner]]:
    """The entries that name ``block``: its heading and the start of its first line."""
    return [
        (heading, start, run)
        for heading, start, run in BLOCKS.get(block.file, [])
        if heading == block.heading and block.first.startswith(start)
    ]


def entry(block: Block) -> Runner | None:
    if (block.file, block.lang) in BY_LANG:
        return elsewhere(BY_LANG[(block.file, block.lang)])
    found = entries(block)
    assert len(found) <= 1, f"{block_id(block)}: two entries name it"
    return found[0][2] if found else None


def test_every_block_is_run() -> None:
    blocks = doc_blocks()
    assert len(blocks) > 50
    missing = [f"{block_id(b)} {b.heading!r} {b.first!r}" for b in blocks if entry(b) is None]
    assert not missing, "blocks no test runs (add them to BLOCKS):\n" + "\n".join(missing)
    used = [id(run) for b in blocks for _, _, run in entries(b)]
    gone = [(f, h, s) for f, rows in BLOCKS.items() for h, s, run in rows if id(run) not in used]
    assert not gone, f"entries for blocks that are gone: {gone}"


@pytest.mark.parametrize("block", doc_blocks(), ids=block_id)
def test_the_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = entry(block)
    if run is None:
        pytest.fail("no entry in BLOCKS")
    for name in ("CHATRA_PUBLIC_KEY", "CHATRA_SECRET_KEY", "SLACK_BOT_TOKEN", "TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    run(block, tmp_path, monkeypatch)


# -- the README's quick start ----------------------------------------------------------------


def readme_blocks() -> list[str]:
    return [b.text.strip() for b in doc_blocks() if b.file == "README.md" and b.lang == "sh"]


def test_the_quick_start_is_two_commands_and_the_second_is_what_ci_runs() -> None:
    run, test = [block.splitlines()[1] for block in readme_blocks()[:2]]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test in ci, "the README's test command is not the one .ci/run runs"
    assert test.endswith("&& .venv/bin/pytest")
    install = (
        "python3 -m venv .venv && .venv/bin/pip install -e . -e plugins/chatra -e plugins/telegram"
    )
    assert run == install + " && .venv/bin/rulekit run --config examples/rulekit.yaml"


@pytest.fixture
def example_daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``rulekit run --config examples/rulekit.yaml`` on a copy of the repository's examples
    and rules (the store is written next to the config), with no credentials in the
    environment, on an ephemeral port; yields its base URL and the copy's folder."""
    import os
    import time

    import httpx

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(REPO / "rules.d", tmp_path / "rules.d")
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RULEKIT_", "CHATRA_", "SLACK_", "TELEGRAM_", "SUPPORT_"))
    }
    log_path = tmp_path / "daemon.log"
    log = log_path.open("wb")
    command = [sys.executable, "-m", "rulekit.cli.main", "run"]
    command += ["--config", "examples/rulekit.yaml", "--port", "0", "--no-watch"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    port = ""

    def ready() -> bool:
        nonlocal port
        output = log_path.read_text(errors="replace")
        assert process.poll() is None, output
        listening = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", output)
        if listening is None:
            return False
        port = listening.group(1)
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_the_quick_start_runs(example_daemon: tuple[str, Path]) -> None:
    """The daemon starts on the bundled example with no credentials, says what is not
    configured, and the README's curl is answered as the README says."""
    import json

    import httpx

    base, folder = example_daemon
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    config = yaml.safe_load((REPO / "examples" / "rulekit.yaml").read_text())
    assert (config["server"]["host"], config["server"]["port"]) == ("127.0.0.1", 8080)
    assert "listens on `http://127.0.0.1:8080`" in readme
    [curl] = [block for block in readme_blocks() if block.startswith("curl ")]
    words = shlex.split(curl)
    body = (REPO / words[words.index("--data") + 1].removeprefix("@")).read_bytes()
    url = words[-1].replace("http://127.0.0.1:8080", base)
    answer = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
    documented = readme.split("It answers `", 1)[1].split("`", 1)[0]
    assert answer.status_code == 200 and answer.json() == json.loads(documented)
    assert (folder / "examples" / "rulekit.sqlite3").exists()  # "keeps its state in" it
    log = (folder / "daemon.log").read_text(errors="replace")
    problems = re.findall(r"not configured: (.*?)(?: \w+=|$)", log, re.M)
    health = httpx.get(f"{base}/healthz").json()
    assert problems and any("Slack token is empty" in problem for problem in problems), log
    assert health["warnings"] and all(
        any(warning in problem or problem in warning for problem in problems)
        for warning in health["warnings"]
    ), (health, problems)
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    row = operations.split("| `GET /healthz` | `200 ", 1)[1].split("`", 1)[0]
    assert set(re.findall(r'"(\w+)":', row)) == set(health), (row, health)  # its keys, all
    for path in ("/console", "/metrics"):
        assert httpx.get(base + path, follow_redirects=True).status_code == 200
    # "the daemon's log line `event online-chat~…` names the event: why takes that too"
    import time

    assert "log line\n  `event online-chat~…`" in readme
    deadline = time.monotonic() + 60
    while not (logged := re.search(r"event (online-chat~[0-9a-f]{12}): ", read_log(folder))):
        assert time.monotonic() < deadline, read_log(folder)
        time.sleep(0.1)
    config_path = str(folder / "examples" / "rulekit.yaml")
    why = CliRunner().invoke(cli, ["why", logged.group(1), "--config", config_path])
    assert why.exit_code == 0, why.output
    event_id = re.search(r"online-chat:msg:\S+", why.output)
    store = open_store("sqlite:///rulekit.sqlite3", folder / "examples")
    with store.transaction() as state:  # the log's hashes are keyed with the store's key
        key = state.log_key()
    store.close()
    assert key is not None and event_id is not None, why.output
    assert log_id(event_id.group(0), key=key) == logged.group(1), why.output
    assert log_id(event_id.group(0)) != logged.group(1)  # (unkeyed, it is another hash)
    history = CliRunner().invoke(cli, ["history", "--config", config_path])
    assert history.exit_code == 0 and event_id.group(0) in history.output, history.output


def read_log(folder: Path) -> str:
    return (folder / "daemon.log").read_text(errors="replace")
