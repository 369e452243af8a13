"""What the console tells an agent when something fails: a status and a reason in the console's
words. What failed inside (the store's error naming its file or server, a refused reload's
errors quoting the config and naming its files) is the operator's, in the daemon's log and in
``/healthz`` asked from this machine; an agent is not the operator."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
import pytest
from workspace_helpers import TOKENS, path, running, wait_for

pytest.importorskip("rulekit_chatra")


def test_an_agent_is_told_the_store_failed_not_where_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = str(tmp_path)
    with running("sqlite", tmp_path) as workspace:
        workspace.started()
        os.unlink(tmp_path / "rulekit.sqlite3")
        caplog.set_level(logging.ERROR, logger="rulekit.console")
        with workspace.client("anna") as anna:
            answers = [
                anna.get("conversations"),
                anna.get(path()),
                anna.get("recent"),
                anna.get("dead-letters"),
                anna.get("set-aside"),
                anna.post(f"{path()}/tags", json={"add": ["vip"]}),
                anna.post(
                    f"{path()}/priority",
                    json={"priority": "high"},
                    headers={"Idempotency-Key": "k1"},
                ),
                anna.post(f"{path()}/messages", json={"text": "hello"}),
                anna.patch(f"{path()}/client", json={"name": "Ann"}),
            ]
        for answer in answers:
            assert answer.status_code == 503, (answer.request.url, answer.text)
            assert answer.json() == {"error": "the store is unavailable; retry later"}
            assert folder not in answer.text and "sqlite" not in answer.text.lower()
            assert answer.headers["Retry-After"]
        # a sign-in (its session and the throttle's counts are in the store) is told the
        # same: 503, naming nothing of the store, and no 500
        signed_in = httpx.post(f"{workspace.url}/console/login", data={"token": TOKENS["anna"]})
        assert signed_in.status_code == 503, signed_in.text
        assert signed_in.json() == {"error": "the store is unavailable; retry later"}
        assert signed_in.headers["Retry-After"]
        assert not signed_in.cookies.get("rulekit_console")
        # the operator reads what failed in the log, and in /healthz on this machine
        assert any(folder in record.getMessage() for record in caplog.records)
        assert folder in httpx.get(f"{workspace.url}/healthz").json()["store"]


def test_a_refused_reload_s_errors_are_the_admin_s(tmp_path: Path) -> None:
    with running("sqlite", tmp_path) as workspace:
        with workspace.client("admin") as admin:
            admin.get("recent")  # the console records the live feed from now on
            (tmp_path / "rules.d" / "rules.yaml").write_text("- name: Broken\n  on: [\n")
            assert workspace.reload() is False
            shown = wait_for(lambda: admin.get("recent").json()["reload"], "the reload")
        assert shown["ok"] is False and "rules.yaml" in str(shown["errors"])
        with workspace.client("anna") as anna:
            told = anna.get("recent")
        assert told.json()["reload"]["ok"] is False  # the agent knows a reload failed
        assert "errors" not in told.json()["reload"]
        assert "rules.yaml" not in told.text and str(tmp_path) not in told.text
        login = httpx.post(
            f"{workspace.url}/console/login",
            data={"token": TOKENS["anna"]},
            headers={"Origin": workspace.url},
        )
        cookies = dict(login.cookies)
        assert cookies, login.text
        # the live stream's reload message, told again from the recent ones (Last-Event-ID 0)
        with httpx.stream(
            "GET",
            f"{workspace.url}/console/stream",
            cookies=cookies,
            headers={"Last-Event-ID": "0"},
            timeout=10,
        ) as stream:
            told_again = next(line for line in stream.iter_lines() if '"type":"reload"' in line)
        assert '"ok":false' in told_again
        assert "rules.yaml" not in told_again and '"errors"' not in told_again, told_again
