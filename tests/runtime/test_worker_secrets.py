"""An evaluation worker holds none of the daemon's secrets: not in its environment (as set, nor
as it was started with), not in the config it loaded. It runs admin-written code on client
data, so a sandbox escape or a crash dump must find nothing to steal there.

The escape is a real plugin's filter that walks up the stack to the worker's snapshot and
reads the process's environment, as code breaking out of a template would.
"""

from __future__ import annotations

import json

import pytest
from daemons import SECRET, install_plugin, write_setup
from rulekit_chatra.testing import FakeChatra

from rulekit.runtime.confined import masked, worker_files
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.planning import prepare
from rulekit.runtime.worker import Limits, Refusal
from rulekit.snapshot import load_snapshot
from rulekit.store.sqlite import SQLiteStore
from rulekit.testing.fake_slack import FakeSlack

PLUGIN = """\
import json
import os
import sys

from rulekit import hookimpl


def escape(value):
    from rulekit.secrets import secret_values

    frame, found = sys._getframe(), []
    while frame is not None:
        snapshot = frame.f_locals.get("snapshot")
        if snapshot is not None and hasattr(snapshot, "config"):
            found = secret_values(snapshot.config)
            break
        frame = frame.f_back
    with open("/proc/self/environ", "rb") as initial:
        started_with = initial.read().decode("utf-8", "replace")
    return json.dumps({"environ": dict(os.environ), "started": started_with, "config": found})


@hookimpl
def rulekit_template_environment(register):
    register.filter("breakout", escape)
"""

RULES = """\
- name: Escape
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "{{ message.text | breakout }}"}
    - slack: {channel: "#support", text: "new chat"}
"""

CRM_URL = "https://crm.example.com/hooks/very-secret-path-123"
CRM_KEY = "crm-signing-key-456"
CLOUD_KEY = "unrelated-cloud-key-789"


def test_a_worker_holds_no_secret_of_the_daemon(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "rulekit_escape_rules", PLUGIN)
    monkeypatch.setenv("CRM_URL", CRM_URL)
    monkeypatch.setenv("CRM_KEY", CRM_KEY)
    monkeypatch.setenv("CLOUD_SECRET_KEY", CLOUD_KEY)  # not the config's: not the worker's
    monkeypatch.setenv("RULEKIT_GREETING", "hello")  # what rules may read stays
    extra = "  webhooks:\n    crm: {url: '${CRM_URL}', secret: '${CRM_KEY}'}\n"
    with FakeChatra() as chatra, FakeSlack(token="xoxb-literal-slack-token-42") as slack:
        config = write_setup(tmp_path, RULES, chatra=chatra, slack=slack, extra=extra)
        snapshot = load_snapshot(config)
        evaluator = Evaluator(config, limits=Limits(event_wall=60))
        evaluator.want(snapshot)
        store = SQLiteStore(tmp_path / "state.sqlite3")
        try:
            provider = snapshot.providers["online-chat"]
            prepared = prepare(store, lambda state: provider.parse(_chat(), state))
            answer = evaluator.evaluate(prepared.request)
        finally:
            evaluator.close()
            store.close()
        secrets = [slack.token, CRM_URL, CRM_KEY, CLOUD_KEY, SECRET, chatra.secret_key]
    assert not isinstance(answer, Refusal), answer
    jobs = answer[0].jobs
    assert [job.action for job in jobs] == ["autoreply", "slack"]  # the same plan
    seen = json.loads(jobs[0].params["text"])
    assert seen["environ"]["RULEKIT_GREETING"] == "hello"
    assert "PATH" in seen["environ"]
    assert seen["config"]  # the escape found the worker's config
    for secret in secrets:
        assert secret not in jobs[0].params["text"]


def _chat() -> bytes:
    from daemons import chat_started

    return chat_started(1)


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("token: s3cret-value-1\n", "token: redacted\n"),
        ("url: 'https://x.example/p/s3cret-value-1'\n", "url: 'https://x.example/redacted'\n"),
        # the secret also spells a key: masking it would change the key too, so the file goes
        # as it is (the worker loads what the daemon did rather than a config it would refuse)
        ("s3cret-value-1: s3cret-value-1\n", "s3cret-value-1: s3cret-value-1\n"),
    ],
)
def test_secrets_written_in_the_config_are_masked_only_where_they_are_values(
    tmp_path, written, kept
):
    path = tmp_path / "rulekit.yaml"
    secret = "https://x.example/p/s3cret-value-1" if "url" in written else "s3cret-value-1"
    files = worker_files({str(path): written.encode()}, path, [secret])
    assert files[str(path)] == kept.encode()


def test_a_masked_url_keeps_its_scheme_and_host_only():
    assert masked("https://user:pw@hooks.example.com:8443/a/b?k=v") == (
        "https://hooks.example.com:8443/redacted"
    )
    assert masked("xoxb-123") == "redacted"
