"""``rulekit forget`` and where an action was sent: a destination a rule renders from the client's
data (a Telegram chat id kept in a custom field) is theirs too. After the erasure it is in no
column of the store: the jobs' destination and lane, and (PostgreSQL) the pacing agreed between
daemons, not only the jobs' parameters."""

from __future__ import annotations

import json

import httpx
from daemons import wait_for, write_setup
from privacy_scenario import CLIENT, NAME, webhook
from test_audit_output_hides_every_form import run
from test_forget_every_form import forget, postgres_dump, sqlite_bytes

from rulekit.config import LoggingSettings
from rulekit.runtime.logs import configure_logging
from rulekit.testing.fake_telegram import FakeTelegram

CHAT = "5550001234987"
RULES = """\
- name: Tell the client on Telegram
  on: {channel: online-chat, event: created}
  do:
    - telegram: {chat_id: "{{ client.custom.telegram }}", text: "We got your message"}
"""


def _record(tmp_path, serve, storage: str | None = None):
    telegram = FakeTelegram()
    telegram.start()
    config = write_setup(tmp_path, RULES, telegram=telegram)
    if storage is not None:
        config.write_text(config.read_text().replace("sqlite:///rulekit.sqlite3", storage))
    server = serve(config)
    body = webhook(CLIENT, NAME, "msgJane1", "hello", info={"telegram": CHAT})
    assert httpx.post(server.webhook_url, content=body).status_code == 200
    wait_for(lambda: telegram.messages(accepted=True), timeout=30)
    assert str(telegram.messages(accepted=True)[0].chat_id) == CHAT

    def settled() -> bool:
        with server.daemon.store.transaction() as state:
            return not state.jobs(status="pending")

    wait_for(settled, timeout=30)
    return config, server, telegram


def test_a_destination_made_of_the_client_s_data_is_forgotten_in_sqlite(tmp_path, serve):
    config, _, telegram = _record(tmp_path, serve)
    try:
        assert CHAT in sqlite_bytes(tmp_path)
        forget(config)
        assert CHAT not in sqlite_bytes(tmp_path)
    finally:
        telegram.stop()


def test_a_destination_made_of_the_client_s_data_is_forgotten_in_postgres(
    tmp_path, serve, postgres_url
):
    config, _, telegram = _record(tmp_path, serve, postgres_url)
    try:
        assert CHAT in postgres_dump(postgres_url)
        forget(config)
        after = postgres_dump(postgres_url)
        assert CHAT not in after, [line for line in after.splitlines() if CHAT in line]
    finally:
        telegram.stop()


def test_why_history_and_the_log_hide_such_a_destination_without_content(
    tmp_path, serve, log_lines
):
    """Without ``--show-content`` (``logging.content``), audit output and the daemon's log hide
    a destination made of the client's hidden data, as they hide it in the job's parameters."""
    configure_logging(LoggingSettings(), log_lines)
    config, _, telegram = _record(tmp_path, serve)
    try:
        history = json.loads(run(config, "history", "--format", "json", "--limit", "100"))
        [event_id] = [event["event_id"] for event in history["events"]]
        outputs = {
            "history": run(config, "history", "--limit", "100"),
            "history json": json.dumps(history),
            "why": run(config, "why", event_id, "--raw"),
            "why json": run(config, "why", event_id, "--format", "json"),
        }
        shown = run(config, "why", event_id, "--show-content", "--format", "json")
    finally:
        telegram.stop()
    assert CHAT in shown  # the test can fail
    assert [name for name, output in outputs.items() if CHAT in output] == []
    assert "job" in log_lines.text and CHAT not in log_lines.text
