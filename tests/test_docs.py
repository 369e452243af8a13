"""Docs stay honest: every hook is documented, every built-in action is in the reference."""

from __future__ import annotations

import inspect

import pytest
from scaffold import REPO

from rulekit import hookspecs
from rulekit.plugins import load_plugins

HOOKS = sorted(
    name
    for name, function in vars(hookspecs).items()
    if name.startswith("rulekit_") and inspect.isfunction(function)
)
BUILT_IN_ACTIONS = sorted(
    entry.name
    for entry in load_plugins(entry_points=False).actions.entries.values()
    if entry.plugin.startswith("rulekit.")
)


def _doc(name: str) -> str:
    path = REPO / "docs" / name
    if not path.exists():
        pytest.skip(f"docs/{name} does not exist yet (being written)")
    return path.read_text(encoding="utf-8")


def test_there_are_hooks_and_actions_to_check() -> None:
    assert "rulekit_register_actions" in HOOKS
    assert len(HOOKS) >= 4
    assert {"autoreply", "assign", "play_sound", "slack", "telegram"} <= set(BUILT_IN_ACTIONS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_spec_has_a_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc) > 40, (
        f"{hook} needs a docstring saying when it fires and what it returns"
    )
    assert "Returns" in doc or "return" in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_in_plugins_md(hook: str) -> None:
    assert hook in _doc("plugins.md"), f"docs/plugins.md does not mention {hook}"


@pytest.mark.parametrize("action", BUILT_IN_ACTIONS)
def test_every_built_in_action_is_documented_in_rules_md(action: str) -> None:
    text = _doc("rules.md")
    assert f"`{action}`" in text or f"{action}:" in text, (
        f"docs/rules.md does not document {action}"
    )


def _escaping_section() -> str:
    text = _doc("rules.md")
    start = text.index("**Escaping follows the target.**")
    return text[start : text.index("**The sandbox.**", start)]


def test_the_escaping_example_in_rules_md_does_what_it_says(build_engine) -> None:
    from scaffold import make_event

    section = _escaping_section()
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = "- name: doc\n  on: {channel: online-chat}\n  do:\n    " + example.strip()
    plan = build_engine(rules).evaluate(
        make_event(client={"name": "<script>"}, message={"text": "a & b", "author": "client"})
    )
    assert plan[0].params["text"] == "<b>&lt;script&gt;</b>: a &amp; b"
    assert "A client named `<script>` arrives as `&lt;script&gt;` inside your `<b>`" in section


def test_rules_md_lists_exactly_the_characters_and_schemes_escaping_uses() -> None:
    from rulekit.actions import slack_markup, telegram_markup

    section = _escaping_section()
    listed = section.split("`\\` before each of `` ", 1)[1].split(" ``", 1)[0]
    specials = set(listed.replace("\\|", "|").split(" "))
    escaped = {chr(i) for i in range(128) if telegram_markup.escape_markdown_v2(chr(i)) != chr(i)}
    assert specials == escaped
    assert {"http", "https", "tg"} == telegram_markup.LINK_SCHEMES
    assert {"http", "https", "mailto"} == slack_markup.LINK_SCHEMES
    assert "`http:` or `https:` (or `tg:` in Telegram, `mailto:` in\nSlack)" in section
    for key in ("url", "image_url", "title_link", "author_link"):
        assert key in slack_markup.URL_KEYS and f"`{key}`" in section
    for key in slack_markup.ATTACHMENT_TEXT:
        assert f"`{key}`" in section


# -- webhook and email: every example of their sections runs -----------------------------------


def _blocks(text: str, kind: str, after: str, before: str) -> list[str]:
    start = text.index(after)
    section = text[start : text.index(before, start)]
    return [block.split("```", 1)[0] for block in section.split(f"```{kind}\n")[1:]]


def _load_doc_config(tmp_path, yaml_text: str, monkeypatch):
    from rulekit.config import load_config

    for name in ("CRM_WEBHOOK_SECRET", "CRM_TOKEN", "ZAPIER_SIGNING_SECRET", "SMTP_PASSWORD"):
        monkeypatch.setenv(name, f"value-of-{name}")
    monkeypatch.setenv("ZAPIER_HOOK_URL", "https://hooks.zapier.example/catch/1/abc/")
    path = tmp_path / "rulekit.yaml"
    path.write_text(yaml_text)
    return load_config(path, load_plugins(entry_points=False))


def test_configuration_md_webhook_and_smtp_examples_load(tmp_path, monkeypatch) -> None:
    text = _doc("configuration.md")
    [webhooks] = _blocks(text, "yaml", "### `webhooks`", "### `smtp`")
    config = _load_doc_config(tmp_path, webhooks, monkeypatch)
    targets = config.integrations["webhooks"].root
    assert set(targets) == {"crm", "zapier"}
    assert targets["crm"].headers["Authorization"].get_secret_value() == "Bearer value-of-CRM_TOKEN"
    [smtp] = _blocks(text, "yaml", "### `smtp`", "### `sounds`")
    settings = _load_doc_config(tmp_path, smtp, monkeypatch).integrations["smtp"]
    assert (settings.security, settings.effective_port) == ("starttls", 587)


def test_configuration_md_default_body_lists_the_fields_sent(build_engine) -> None:
    import json

    from scaffold import make_event

    from rulekit.actions.webhook_body import event_document

    [shape] = _blocks(_doc("configuration.md"), "json", "### `webhooks`", "### `smtp`")
    documented = json.loads(shape)
    sent = event_document(make_event())
    assert set(documented) == set(sent) and documented["version"] == sent["version"]
    for part in ("conversation", "client", "message", "agent"):
        assert set(documented[part]) - {"..."} <= set(sent[part])


def test_rules_md_webhook_and_email_examples_plan_what_they_say(build_engine) -> None:
    import json

    from scaffold import make_event

    config = """
    groups: [sales]
    agents: [{email: lena@shop.example.com, groups: [sales], channels: [online-chat]}]
    integrations:
      webhooks: {crm: {url: "https://crm.example/hook", secret: s}}
      smtp: {host: smtp.example, from: support@shop.example.com}
    """
    text = _doc("rules.md")
    start = text.index("**Webhook bodies.**")
    body_example = text[start:].split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = "- name: doc\n  on: {channel: online-chat}\n  do:\n" + "".join(
        f"    {line}\n" for line in body_example.splitlines()
    )
    hostile = 'Mia "the" }{ admin'
    event = make_event(client={"name": hostile}, message={"text": "hi", "author": "client"})
    [planned] = build_engine(rules, config).evaluate(event)
    assert json.loads(json.dumps(planned.params["body"])) == {
        "type": "new_chat", "client": hostile, "text": "hi", "priority": 2,
    }  # fmt: skip
    [vip] = _blocks(text, "yaml", "**5. Email and webhook for VIP chats:**", "## Trying rules")
    vip_event = make_event(
        conversation={"id": "c1", "assignee": "anna@shop.example.com"},
        client={"name": "<Mia>", "custom": {"plan": "enterprise"}},
        message={"text": "a & b", "author": "client"},
    )
    email, webhook = build_engine(vip, config).evaluate(vip_event)
    assert email.params["subject"] == "VIP chat: <Mia>"
    assert email.params["html"] == (
        "<p><b>&lt;Mia&gt;</b> wrote:</p><blockquote>a &amp; b</blockquote>"
    )
    assert (webhook.action, webhook.params["to"]) == ("webhook", "crm")


def test_configuration_md_top_example_loads(tmp_path) -> None:
    """The config overview's concrete settings (server, processing, ...) are a valid config."""
    from datetime import timedelta

    from rulekit.config import load_config

    text = _doc("configuration.md")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    concrete = [line for line in block.splitlines() if "{...}" not in line and "[...]" not in line]
    path = tmp_path / "rulekit.yaml"
    path.write_text("\n".join(concrete) + "\n")
    config = load_config(path, load_plugins(entry_points=False))
    assert config.raw.server.stall_after == timedelta(seconds=60)
    assert config.raw.processing.event_wall == timedelta(seconds=10)
    assert config.raw.processing.worker_memory_mb == 1024
    # the sections whose values the table calls the defaults are the defaults
    from rulekit.config import RawConfig

    defaults = RawConfig()
    for section in ("server", "processing", "dispatcher", "console", "retention", "logging"):
        assert section in block
        assert getattr(config.raw, section) == getattr(defaults, section), section


def test_architecture_md_names_every_module_of_the_packages_it_lists() -> None:
    """A package the layer table lists module by module (``expr/`` (``parse``, ...)) has no
    module the table leaves out, nor names one that is gone."""
    import re

    text = _doc("architecture.md")
    table = "\n".join(line for line in text.splitlines() if line.startswith("| "))
    listed = re.findall(r"`(\w+)/` \(([^)]*)\)", table)
    assert {package for package, _ in listed} >= {"expr", "rules", "engine", "server", "cli"}
    for package, names in listed:
        folder = REPO / "rulekit" / package
        modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        modules |= {f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").exists()}
        assert set(re.findall(r"`([\w/]+)`", names)) == modules, package


def test_the_limits_the_docs_state_are_the_codes() -> None:
    """Each limit the docs give as a number is the constant the code enforces."""
    from datetime import timedelta

    import click
    from rulekit_chatra import ChatraProvider
    from rulekit_telegram import TelegramProvider

    from rulekit import yamlsource
    from rulekit.audit import retention
    from rulekit.audit.dryrun import MAX_INPUT_BYTES
    from rulekit.channels import body
    from rulekit.cli.main import cli
    from rulekit.config import MAX_CONFIG_BYTES, RawConfig, ServerSettings
    from rulekit.errors import MAX_RETRY_AFTER
    from rulekit.expr import budget
    from rulekit.models import MAX_DURATION
    from rulekit.rules.files import MAX_FILE_BYTES
    from rulekit.runtime import dispatcher, metrics, processor
    from rulekit.server.console import (
        changes,
        conversations,
        journal,
        routes,
        sessions,
        throttle,
        workspace,
    )
    from rulekit.store.postgres import (
        DEFAULT_IDLE_TIMEOUT,
        DEFAULT_LOCK_TIMEOUT,
        DEFAULT_POOL_SIZE,
        DEFAULT_POOL_TIMEOUT,
    )

    server = ServerSettings()
    raw = RawConfig()
    run = cli.get_command(click.Context(cli), "run")
    assert run is not None
    [job_lease] = [p.default for p in run.params if p.name == "job_lease"]

    def seconds(duration: timedelta) -> str:
        return f"{duration.total_seconds():g}s"

    assert MAX_CONFIG_BYTES == MAX_FILE_BYTES  # "rules and config files" share one figure
    stated = {
        "operations.md": [
            f"nested more than {body.MAX_DEPTH} levels deep",
            f"an integer of more than {body.MAX_INT_DIGITS} digits",
            f"a list of more than {body.MAX_ITEMS:,} items or an object of more than "
            f"{body.MAX_ITEMS:,} keys",
            f"longer than {body.MAX_KEY_CHARS} characters are stored as `sha256:<digest>`",
            f"a channel's first {metrics.MAX_EVENT_NAMES} event names apart, any later or longer "
            f"than {metrics.MAX_EVENT_NAME} characters",
            f"One token holds at most {sessions.MAX_SESSIONS_PER_TOKEN} sessions",
            f"(the store keeps {sessions.MAX_SESSIONS:,} sessions in all)",
            f"for at most {sessions.REVALIDATE:g} seconds before it reads the",
            f"daemon is seen within {sessions.REVALIDATE:g} seconds",
            f"revoked) ends the session on every daemon within {sessions.REVALIDATE:g} seconds",
            f"in transactions of at most {retention.BATCH} rows each",
            f"`server.max_header_bytes` (default {server.max_header_bytes // 1024} KiB",
            f"`server.max_body_bytes` (default {server.max_body_bytes // 2**20} MiB)",
            f"max_header_bytes: {server.max_header_bytes}",
            f"max_connections: {server.max_connections}",
            f"`processing.event_cpu` | `{seconds(raw.processing.event_cpu)}` |",
            f"`processing.event_wall` | `{seconds(raw.processing.event_wall)}` |",
            f"`processing.webhook_cpu` | `{seconds(raw.processing.webhook_cpu)}` |",
            f"`processing.webhook_wall` | `{seconds(raw.processing.webhook_wall)}` |",
            f"({raw.processing.webhook_cpu.total_seconds():g} s for the events of its webhook "
            "together; processing.webhook_cpu)",
            f"({raw.processing.webhook_wall.total_seconds():g} s for the events of its webhook "
            "together; processing.webhook_wall)",
            f"`processing.worker_memory_mb` | `{raw.processing.worker_memory_mb}` |",
            f"(`dispatcher.concurrency`, default {raw.dispatcher.concurrency}, calls at once)",
            f"kept for them\nup to {dispatcher.HELD_BYTES // 2**20} MiB together",
            f"in rounds of up to {processor.BATCH}, their bodies at most "
            f"{processor.ROUND_BYTES // 2**20} MiB together",
            f"`server.stall_after` (default `{seconds(raw.server.stall_after)}`",
            f"`--job-lease SECONDS` (default {job_lease:g})",
            f"(honoured up to {'an hour' if MAX_RETRY_AFTER == 3600 else MAX_RETRY_AFTER}:",
            f"| `pool_size` | {DEFAULT_POOL_SIZE} |",
            f"| `pool_timeout` | {DEFAULT_POOL_TIMEOUT:g} |",
            f"| `lock_timeout` | {DEFAULT_LOCK_TIMEOUT:g} |",
            f"| `idle_timeout` | {DEFAULT_IDLE_TIMEOUT:g} |",
            f"may hold {routes.MAX_STREAMS} at once; the {routes.MAX_STREAMS + 1}th page",
            f"up to {int(throttle.MAX_WAIT // 60)} minutes",
        ],
        "configuration.md": [
            f"(at most {'an hour' if MAX_RETRY_AFTER == 3600 else MAX_RETRY_AFTER}; see [Rate"
        ],
        "console.md": [
            f"One token\nholds at most {sessions.MAX_SESSIONS_PER_TOKEN} sessions",
            f"goes by what it read for at most {sessions.REVALIDATE:g} seconds",
            f"A write's body is a JSON object of at most {workspace.MAX_BODY // 1024} KB",
            f"(1 to {changes.MAX_TEXT:,} characters)",
            f"(Chatra {ChatraProvider.max_reply_length:,}, Telegram\n"
            f"{TelegramProvider.max_reply_length:,}, counted in UTF-16 code units",
            f"at most {changes.MAX_FIELD} characters, {changes.MAX_NOTES:,} for `notes`",
            f"cut to {conversations.MAX_THREAD_TEXT:,} characters",
            f"every text cut to {journal.MAX_LISTED_TEXT:,} characters",
        ],
        "rules.md": [
            f"| output | {budget.MAX_OUTPUT:,} characters |",
            f"| one value | {budget.MAX_VALUE:,} characters or items |",
            f"| numbers | {budget.MAX_DIGITS:,} digits |",
            f"| `range()` | {budget.MAX_RANGE:,} items |",
            f"| steps | {budget.MAX_STEPS:,} |",
            f"| built | {budget.MAX_BUILT:,} characters and items |",
            f"would hold more than {budget.MAX_BUILT} characters`",
            f"| depth | {budget.MAX_DEPTH} |",
            f"up to `{MAX_DURATION.days}d` ({MAX_DURATION.days // 365:,} years",
            f"| file size (checked before reading) | rules and config files "
            f"{MAX_FILE_BYTES // 2**20} MiB; test suites and event files "
            f"{MAX_INPUT_BYTES // 2**20} MiB |",
            f"| {yamlsource.MAX_ALIAS_VALUES:,} in one file",
            f"| {yamlsource.MAX_ALIAS_TEXT // 2**20} MiB of characters in one file",
            f"| nesting of mappings and lists | {yamlsource.MAX_DEPTH} levels |",
            f"nesting over {body.MAX_DEPTH} levels, `NaN`",
            f"a list or object of more than {body.MAX_ITEMS:,} items are errors naming the file",
            f"| an integer | {yamlsource.MAX_INT_TEXT:,} digits (Python's limit); a base-60 one "
            f"(`1:30:00`, YAML 1.1's), {yamlsource.MAX_INT_TEXT:,} characters |",
        ],
    }
    for name, phrases in stated.items():
        text = _doc(name)
        for phrase in phrases:
            assert phrase in text, f"docs/{name} does not say {phrase!r}"


def test_every_command_and_option_of_the_cli_is_in_the_docs() -> None:
    """Each ``rulekit`` command (plugins' included) is named as ``rulekit NAME`` in the README or
    docs/, and each of its long options is described where they speak of it."""
    import re

    import click

    from rulekit.cli.main import cli

    paths = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    paths += list((REPO / "plugins").glob("*/README.md"))
    docs = "".join(path.read_text(encoding="utf-8") for path in paths)
    missing: list[str] = []
    found: list[str] = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            context = click.Context(command)
            for name in command.list_commands(context):  # lazily loaded ones too
                sub = command.get_command(context, name)
                assert sub is not None, name
                walk(sub, [*path, name])
            return
        name = " ".join(path)
        found.append(name)
        # where the docs speak of the command: from each "rulekit NAME" on, a page's worth
        spans = [
            docs[m.start() : m.start() + 2500] for m in re.finditer(f"rulekit {name}\\b", docs)
        ]
        if not spans:
            missing.append(f"rulekit {name}")
        for parameter in command.params:
            if not isinstance(parameter, click.Option) or "--config" in parameter.opts:
                continue  # --config FILE: every command's, configuration.md's first lines
            names = [o for o in [*parameter.opts, *parameter.secondary_opts] if o[:2] == "--"]
            near = any(re.search(re.escape(o) + r"\b", span) for o in names for span in spans)
            if names and not near:
                missing.append(f"rulekit {name} {'/'.join(names)}")  # --watch/--no-watch: one

    walk(cli, [])
    assert len(found) > 15, found  # run, why, history, db status, telegram set-webhook, ...
    assert len(missing) == 0, f"not in the docs: {missing}"


def test_operations_md_lists_exactly_the_daemons_metrics() -> None:
    """The metrics table of operations.md names each metric /metrics serves, with its labels,
    and no other."""
    import re

    from rulekit.runtime.metrics import Metrics

    text = _doc("operations.md")
    table = text[text.index("### Metrics") : text.index("### Logs")]
    documented = {}
    for row in table.splitlines():
        if row.startswith("| `rulekit_"):
            for name, labels in re.findall(
                r"`(rulekit_\w+)(?:\{([\w,]*)\})?`", row.split(" | ")[0]
            ):
                documented[name] = tuple(labels.split(",")) if labels else ()
    served = {}
    for metric in vars(Metrics()).values():
        if hasattr(metric, "_labelnames"):
            [family] = metric.describe()
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            labels = ("version",) if family.type == "info" else metric._labelnames
            served[family.name + suffix] = tuple(labels)
    assert len(served) > 15
    assert documented == served


def test_plugins_md_describes_every_member_of_the_provider_contract() -> None:
    """Each public attribute and method of ``Provider`` is described in plugins.md."""
    from rulekit.channels.base import Provider

    text = _doc("plugins.md")
    members = [name for name in vars(Provider) if not name.startswith("_")]
    assert {"parse", "send_reply", "update_client"} <= set(members)
    shown = ("`{}", "`async {}(", "    {} = ")  # in the text, or in the contract's block
    missing = [n for n in members if not any(form.format(n) in text for form in shown)]
    assert not missing, f"docs/plugins.md does not describe Provider.{missing}"


def test_rules_md_lists_every_event_and_every_field_rules_read() -> None:
    """The events table is the engine's event names; each of conversation, client, message
    and agent lists exactly the fields of its model."""
    import re
    import typing

    from rulekit.event import EVENT_NAMES, Event

    text = _doc("rules.md")
    events = text[text.index("\n## Events\n") : text.index("\n## Names conditions")]
    assert re.findall(r"^\| `(\w+)` \|", events, re.M) == list(EVENT_NAMES)
    names = text[text.index("\n## Names conditions") : text.index("Missing data is")]
    for part in ("conversation", "client", "message", "agent"):
        [row] = [line for line in names.splitlines() if line.startswith(f"| `{part}` |")]
        listed = set(re.findall(r"(?:^|, )`(\w+)`", row.split(" | ")[1]))
        annotation = Event.model_fields[part].annotation
        [model] = [
            a for a in (annotation, *typing.get_args(annotation)) if hasattr(a, "model_fields")
        ]
        fields = set(model.model_fields)
        assert fields <= listed, f"rules.md leaves out {part}.{sorted(fields - listed)}"
        extra = listed - fields - {"low", "normal", "high", "urgent"}  # priority's values
        assert not extra, f"rules.md names {part}.{sorted(extra)}, which is not a field"


@pytest.mark.parametrize("action", BUILT_IN_ACTIONS)
def test_rules_md_lists_every_parameter_of_each_built_in_action(action: str) -> None:
    import re

    entry = next(
        e for e in load_plugins(entry_points=False).actions.entries.values() if e.name == action
    )
    params = {info.alias or name for name, info in entry.value.Params.model_fields.items()}
    [row] = [line for line in _doc("rules.md").splitlines() if line.startswith(f"| `{action}` | ")]
    listed = set(re.findall(r"`(\w+)`", row.split(" | ")[1]))
    assert params <= listed, f"rules.md leaves out {action}'s {sorted(params - listed)}"


def test_the_files_the_docs_name_exist() -> None:
    """A path of the repository the docs name (a test, a benchmark, an example, a module) is
    there: a moved or renamed file leaves no reference behind."""
    import re

    paths = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    paths += list((REPO / "plugins").glob("*/README.md"))
    pattern = re.compile(
        r"(?<![\w/.-])((?:tests|benchmarks|examples|rules\.d|plugins|rulekit|scripts)/[\w./-]*)"
    )
    made = {"examples/rulekit.sqlite3"}  # the example daemon's store, made when it runs
    missing = []
    for path in paths:
        for name in pattern.findall(path.read_text(encoding="utf-8")):
            name = name.rstrip(".,:;")
            plugin = path.parent if path.parent.parent.name == "plugins" else None
            where = [REPO / name, *([plugin / name] if plugin else [])]
            if name not in made and not any(candidate.exists() for candidate in where):
                missing.append(f"{path.relative_to(REPO)}: {name}")
    assert not missing, missing


def test_the_docs_links_reach_their_file_and_heading() -> None:
    """Each relative link of the README, docs/ and the plugins' READMEs names a file that exists
    and, after ``#``, a heading of it (as GitHub makes anchors)."""
    import re

    def anchor(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    files = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    files += list((REPO / "plugins").glob("*/README.md"))
    headings = {}
    for path in files:
        found, in_block = set(), False
        for line in path.read_text(encoding="utf-8").splitlines():
            in_block ^= line.lstrip().startswith("```")  # a fence opens or closes a block
            if not in_block and line.startswith("#"):
                found.add(anchor(line.lstrip("#")))
        headings[path.resolve()] = found
    broken = []
    for path in files:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if target.startswith(("http:", "https:", "mailto:")):
                continue
            name, _, part = target.partition("#")
            destination = (path.parent / name).resolve() if name else path.resolve()
            if not destination.exists() or (part and part not in headings.get(destination, {part})):
                broken.append(f"{path.name}: {target}")
    assert not broken, broken
