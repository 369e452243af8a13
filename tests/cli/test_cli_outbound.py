"""``rulekit test``, ``check`` and ``plugins`` with the webhook and email actions: the dry run
shows the exact request and message with every secret masked; plain http warns."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from scaffold import write

from rulekit.cli.main import cli

SECRET = "whsec-cli-0123456789"
TOKEN = "tok-cli-ABCDEF123456"
PASSWORD = "pw-cli-Zq81xLk0mm"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def setup(tmp_path: Path, url: str = "https://crm.example/hooks/abc123") -> tuple[Path, Path]:
    config = write(
        tmp_path / "rulekit.yaml",
        f"""
        rules: rules.d
        channels: {{online-chat: {{provider: webhook, webhook_secret: s3cret-s3cret}}}}
        groups: [support]
        agents: [{{email: ann@shop.example, groups: [support], channels: [online-chat]}}]
        integrations:
          webhooks:
            crm:
              url: "{url}"
              secret: "${{CRM_SECRET}}"
              headers: {{Authorization: "Bearer ${{CRM_TOKEN}}"}}
          smtp:
            host: mail.example
            username: bot
            password: "${{SMTP_PASSWORD}}"
            from: bot@shop.example
        """,
    )
    write(
        tmp_path / "rules.d" / "r.yaml",
        """
        - name: out
          on: {channel: online-chat, event: created}
          do:
            - webhook: {to: crm, body: {who: "{{ client.name }}"}}
            - email: {to: [group:support], subject: "Chat from {{ client.name }}", text: hi}
        """,
    )
    event = write(
        tmp_path / "event.yaml",
        """
        channel: online-chat
        event: created
        conversation: {id: c1}
        client: {name: Bob}
        message: {text: hello, author: client}
        """,
    )
    return config, event


ENV = {"CRM_SECRET": SECRET, "CRM_TOKEN": TOKEN, "SMTP_PASSWORD": PASSWORD}


def test_the_dry_run_shows_the_request_and_the_message_with_secrets_masked(tmp_path):
    config, event = setup(tmp_path)
    result = run("test", "--config", str(config), str(event), env=ENV)
    assert result.exit_code == 0, result.output
    assert (
        "POST https://crm.example/*** (webhook crm) [Content-Type: application/json, User-Agent: "
        "rulekit, Accept-Encoding: identity, Authorization: ***, X-Rulekit-Delivery: <the job's "
        "id>, X-Rulekit-Timestamp: <the time of each attempt>, X-Rulekit-Signature: sha256=<HMAC "
        'of each attempt>]: {"who":"Bob"}'
    ) in result.output
    assert (
        "email to ann@shop.example from bot@shop.example via mail.example:587 (starttls, as bot):"
        " subject 'Chat from Bob'; text 'hi'"
    ) in result.output
    as_json = run("test", "--config", str(config), "--format", "json", str(event), env=ENV)
    for output in (result.output, as_json.output):
        for secret in (SECRET, TOKEN, PASSWORD, "abc123"):
            assert secret not in output
    actions = json.loads(as_json.output)["results"][0]["events"][0]["actions"]
    assert [a["action"] for a in actions] == ["webhook", "email"]
    assert all("would_fail" not in a for a in actions)
    unset = run("test", "--config", str(config), str(event), env={"CRM_TOKEN": TOKEN})
    assert "would fail: the secret of webhook target(s) 'crm' is empty" in unset.output
    assert "would fail: the SMTP password is empty" in unset.output


def test_check_warns_about_plain_http_and_strict_refuses_it(tmp_path):
    config, _ = setup(tmp_path, url="http://crm.example/hook")
    result = run("check", "--config", str(config), env=ENV)
    assert result.exit_code == 0
    assert "plain http:// to crm.example" in result.output
    assert run("check", "--strict", "--config", str(config), env=ENV).exit_code == 1


def test_plugins_and_schema_list_both_actions():
    listed = json.loads(run("plugins", "--format", "json").output)
    names = {a["name"]: p["name"] for p in listed["plugins"] for a in p["actions"]}
    assert names["webhook"] == "rulekit.actions.webhook"
    assert names["email"] == "rulekit.actions.email"
    text = run("plugins").output
    assert "action webhook(to, body?, text?, content_type?)" in text
    assert "action email(to, subject, text, html?, on_recovered?)" in text
    schema = json.loads(run("schema").output)
    assert {"params_webhook", "params_email"} <= set(schema["$defs"])
