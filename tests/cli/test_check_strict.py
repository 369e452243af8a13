"""``rulekit check --strict`` exits 0 exactly when ``rulekit run --strict`` would start: each
kind of refusal of the daemon is reported by ``check --strict`` (and as a warning by ``check``),
and a config with none of them passes both."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon, StrictRefusal

CONFIG = """\
rules: rules.d
storage: "memory://"
channels:
  online-chat:
    provider: chatra
    public_key: pub-key
    secret_key: secret-key
    webhook_secret: ${HOOK_SECRET}
    default_group: support
    default_agent: {email: bot@shop.example, name: Shop Bot}
groups: [support]
agents:
  - {email: anna@shop.example, groups: [support], channels: [online-chat]}
integrations:
  slack: {token: "${SLACK_TOKEN}"}
"""

RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hi"}
    - assign: {group: support}
    - slack: {channel: "#chats", text: "new chat"}
"""

ENV = {"HOOK_SECRET": "a-long-webhook-secret", "SLACK_TOKEN": "xoxb-1"}

PLAIN_SLACK = 'base_url: "http://slack.example.com/api/"'
PLAIN_CHATRA = "    base_url: http://chatra.example.com\n"

DEFAULT_AGENT = "    default_agent: {email: bot@shop.example, name: Shop Bot}\n"

REFUSALS = {
    # what is changed → what both say
    "an action's service without credentials": (
        lambda c, r, e: (c, r, {**e, "SLACK_TOKEN": ""}),
        "the Slack token is empty",
    ),
    "a ${VAR} unset": (
        lambda c, r, e: (c, r, {k: v for k, v in e.items() if k != "HOOK_SECRET"}),
        "${HOOK_SECRET} is unset or empty",
    ),
    "a ${VAR} whose value ends with a line break (a secret mounted from a file)": (
        lambda c, r, e: (c, r, {**e, "HOOK_SECRET": e["HOOK_SECRET"] + "\n"}),
        "${HOOK_SECRET} begins or ends with whitespace or a line break",
    ),
    "a channel without webhook_secret": (
        lambda c, r, e: (c.replace("    webhook_secret: ${HOOK_SECRET}\n", ""), r, e),
        "has no webhook_secret: every webhook to it is refused",
    ),
    "a channel that cannot reply": (
        lambda c, r, e: (c.replace("    public_key: pub-key\n", ""), r, e),
        "needs public_key to send replies",
    ),
    "no agent to send as": (
        lambda c, r, e: (c.replace(DEFAULT_AGENT, ""), r, e),
        "no agent to send as",
    ),
    "an assign whose group has no agent with access": (
        lambda c, r, e: (c.replace("channels: [online-chat]}", "channels: []}"), r, e),
        "no agent in group 'support' has access to channel 'online-chat'",
    ),
    "a rule that can never fire": (
        lambda c, r, e: (c, r + r.replace("Greet", "Phone").replace("online-chat", "phone"), e),
        "'phone'",
    ),
    "a service over plain http:// to another machine": (
        lambda c, r, e: (c.replace("${SLACK_TOKEN}\"", f"${{SLACK_TOKEN}}\", {PLAIN_SLACK}"), r, e),
        "integrations.slack.base_url is plain http:// to slack.example.com",
    ),
    "a channel's service over plain http:// to another machine": (
        lambda c, r, e: (c.replace(DEFAULT_AGENT, DEFAULT_AGENT + PLAIN_CHATRA), r, e),
        "channels.online-chat.base_url is plain http:// to chatra.example.com",
    ),
}  # fmt: skip


def write(folder: Path, config: str, rules: str) -> Path:
    (folder / "rules.d").mkdir(exist_ok=True)
    (folder / "rules.d" / "rules.yaml").write_text(rules)
    path = folder / "rulekit.yaml"
    path.write_text(config)
    return path


def outcomes(config: Path, env: dict[str, str], monkeypatch) -> tuple[str | None, int, str]:
    """``run --strict``'s refusal (None: it starts), ``check --strict``'s exit code and
    output."""
    for name in ("HOOK_SECRET", "SLACK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        Daemon(config, strict=True, watch=False)
        refusal = None
    except StrictRefusal as exc:
        refusal = str(exc)
    result = CliRunner().invoke(cli, ["check", "--strict", "--config", str(config)])
    assert "Traceback" not in result.output
    return refusal, result.exit_code, result.output


def test_a_config_without_problems_passes_both(tmp_path, monkeypatch) -> None:
    refusal, code, output = outcomes(write(tmp_path, CONFIG, RULES), ENV, monkeypatch)
    assert refusal is None
    assert code == 0, output
    assert "0 warning(s)" in output


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_of_run_strict_is_reported_by_check_strict(
    case, tmp_path, monkeypatch
) -> None:
    change, said = REFUSALS[case]
    config, rules, env = change(CONFIG, RULES, ENV)
    refusal, code, output = outcomes(write(tmp_path, config, rules), env, monkeypatch)
    assert refusal is not None and said in refusal, refusal
    assert code == 1
    assert said in output
    lenient = CliRunner().invoke(cli, ["check", "--config", str(tmp_path / "rulekit.yaml")])
    assert lenient.exit_code == 0 and "warning: " in lenient.output and said in lenient.output


def test_the_validation_example_of_rules_md(monkeypatch) -> None:
    from scaffold import REPO

    text = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    block = text[text.index("## Validation") :].split("```\n$ ", 1)[1].split("```", 1)[0]
    command, *said = block.splitlines()
    args = command.split("#")[0].split()[1:]
    monkeypatch.chdir(REPO)
    for name in ("CHATRA_PUBLIC_KEY", "CHATRA_SECRET_KEY", "SLACK_BOT_TOKEN", "TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    for line in said:
        assert line in result.output.splitlines()


def test_secrets_written_in_a_file_every_user_can_read_are_warned_of(tmp_path, monkeypatch):
    """Secrets belong in the environment (``${NAME}``): one written in a config file that
    every user of the machine can read is warned of (its mode is the admin's to change, and
    never fails a check); from the environment, or in a private file, nothing is said."""
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-from-the-environment-1")
    config = tmp_path / "rulekit.yaml"
    (tmp_path / "rules.d").mkdir()

    def check(text: str, mode: int) -> str:
        config.write_text(text)
        config.chmod(mode)
        result = CliRunner().invoke(cli, ["check", "--config", str(config)])
        assert result.exit_code == 0, result.output
        return result.output

    literal = 'integrations:\n  slack: {token: "xoxb-written-in-the-file-2"}\n'
    told = check(literal, 0o644)
    assert f"warning: {config} is readable by every user of this machine (mode 0644)" in told
    assert "holds 1 secret(s) written in it" in told and "xoxb-written" not in told
    defaulted = 'integrations:\n  slack: {token: "${NOT_SET_HERE:-xoxb-a-default-3}"}\n'
    assert "holds 1 secret(s)" in check(defaulted, 0o644)
    assert "readable by every user" not in check(literal, 0o600)
    from_env = 'integrations:\n  slack: {token: "${SLACK_TOKEN}"}\n'
    assert "readable by every user" not in check(from_env, 0o644)


def test_a_service_over_plain_http_on_this_machine_passes_both(tmp_path, monkeypatch) -> None:
    """Plain http:// stays on the machine when the service is there (a fake, a local relay)."""
    config = CONFIG.replace(
        '"${SLACK_TOKEN}"}', '"${SLACK_TOKEN}", base_url: "http://127.0.0.1:9/"}'
    )
    refusal, code, output = outcomes(write(tmp_path, config, RULES), ENV, monkeypatch)
    assert refusal is None and code == 0, output


def test_a_short_webhook_secret_is_warned_of_and_never_fails_a_check(tmp_path, monkeypatch):
    """The webhook secret is the one credential of ``/webhooks/<channel>/<secret>``, and wrong
    ones are answered as fast as they come: a short one can be found by trying. It is warned of
    by ``check`` and at start (never an error: the daemon runs as before), without the secret."""
    path = write(tmp_path, CONFIG, RULES)
    refusal, code, output = outcomes(path, {**ENV, "HOOK_SECRET": "s3cret-1"}, monkeypatch)
    assert refusal is None and code == 0, output
    said = "the webhook_secret of channel(s) 'online-chat' is shorter than 16 characters"
    assert f"warning: {said}" in output and "s3cret-1" not in output
    _, _, long_enough = outcomes(path, ENV, monkeypatch)
    assert "webhook_secret of channel" not in long_enough
