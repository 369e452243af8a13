"""What ``/healthz`` tells whom: a liveness probe anywhere gets the status and what stalls; the
reasons (the store's error with its path, the rules' warnings with their files, a refused
reload's errors quoting the config) only a request from this machine, not one a proxy forwards
from elsewhere (the documented nginx publishes ``/healthz``)."""

from __future__ import annotations

import json
import os

import httpx
from daemons import wait_for, write_setup

WARNED = """\
- name: Escalate
  on: {channel: online-chat, event: message}
  do:
    - slack: {channel: "#vip", text: "hi"}
"""
OUTSIDE = {"X-Forwarded-For": "203.0.113.7"}
"""What a proxy on this machine adds for a client elsewhere (loopback is a trusted proxy)."""
SPOOFED = {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}
"""The same proxy's header for a client that wrote its own ``X-Forwarded-For: 127.0.0.1``."""


def _health(server, headers=None) -> tuple[int, dict]:
    answer = httpx.get(f"{server.url}/healthz", headers=headers)
    return answer.status_code, answer.json()


def test_healthz_tells_its_reasons_only_to_this_machine(tmp_path, serve):
    server = serve(write_setup(tmp_path, WARNED))
    folder = str(tmp_path)
    status, here = _health(server)
    assert status == 200 and folder in here["warnings"][0]  # an operator on the machine
    for headers in (OUTSIDE, SPOOFED):
        status, away = _health(server, headers)
        assert status == 200 and away["status"] == "ok" and away["store"] == "ok"
        assert "warnings" not in away and folder not in json.dumps(away)
    os.unlink(tmp_path / "rulekit.sqlite3")
    wait_for(lambda: _health(server)[0] == 503)
    assert folder in _health(server)[1]["store"]
    for headers in (OUTSIDE, SPOOFED):
        status, away = _health(server, headers)
        assert status == 503 and away["status"] == "unavailable"
        assert away["store"] == "unavailable" and folder not in json.dumps(away)


def test_a_refused_reload_s_errors_stay_on_this_machine(tmp_path, serve):
    config = write_setup(tmp_path)
    server = serve(config)
    (tmp_path / "rules.d" / "rules.yaml").write_text("- name: Broken\n  on: [\n")
    assert server.call(server.daemon.reload("test")) is False
    _, here = _health(server)
    assert here["last_reload"]["ok"] is False and here["last_reload"]["errors"]
    _, away = _health(server, OUTSIDE)
    assert away["last_reload"]["ok"] is False and "errors" not in away["last_reload"]
    assert "rules.yaml" not in json.dumps(away)
