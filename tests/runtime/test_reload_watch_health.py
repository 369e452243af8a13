"""A watch that fails (its folders gone, the system's limit on watches reached) is said by
``/healthz`` (``watch``) and ``rulekit_watch_up``, not only once in the log: until it is back,
a save is not reloaded. Once the folders are back, the watch is, and so is the next save."""

from __future__ import annotations

import shutil

import httpx
import pytest
from daemons import AUTOREPLY_RULES, wait_for, write_setup

OUTSIDE = {"X-Forwarded-For": "203.0.113.7"}


def health(server, headers=None) -> dict:
    return httpx.get(f"{server.url}/healthz", headers=headers, timeout=5).json()


def metric(server, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


@pytest.mark.slow
def test_a_failing_watch_is_said_by_healthz_and_metrics(tmp_path, serve):
    (tmp_path / "data").mkdir()
    folder = tmp_path / "conf"
    folder.mkdir()
    config = write_setup(folder)
    config.write_text(
        config.read_text().replace(
            "sqlite:///rulekit.sqlite3", f"sqlite:///{tmp_path}/data/rulekit.sqlite3"
        )
    )
    server = serve(config, watch=True)
    assert health(server)["watch"] == "ok"
    assert metric(server, "rulekit_watch_up") == 1
    saved = config.read_text()
    shutil.rmtree(folder)  # none of the watched folders exists now
    wait_for(lambda: health(server)["watch"] != "ok", timeout=20)
    assert "none of the watched folders exists" in health(server)["watch"]
    assert health(server, OUTSIDE)["watch"] == "failing"  # (its reason names the folders)
    assert metric(server, "rulekit_watch_up") == 0
    version = health(server)["rules_version"]
    folder.mkdir()
    (folder / "rules.d").mkdir()
    (folder / "rules.d" / "rules.yaml").write_text(AUTOREPLY_RULES.replace("Hello", "Welcome"))
    config.write_text(saved)
    wait_for(lambda: health(server)["watch"] == "ok", timeout=20)
    assert metric(server, "rulekit_watch_up") == 1
    wait_for(lambda: health(server)["rules_version"] != version, timeout=20)
    assert health(server)["last_reload"]["ok"]


def test_no_watch_is_said_as_off(tmp_path, serve):
    server = serve(write_setup(tmp_path))
    assert health(server)["watch"] == "off"
    assert metric(server, "rulekit_watch_up") == 0
