"""Metric labels that come from data stay few: the ``webhook`` channel takes any event name its
sender writes, and every label value was a series the daemon kept for good (its memory and
``/metrics`` grew with each new name, a name of any length included)."""

from __future__ import annotations

import json
import re

import httpx
from daemons import wait_for, write_setup

from rulekit.runtime.metrics import MAX_EVENT_NAMES

WEB_SECRET = "web-secret-0123456789"


def processed(metrics: str) -> dict[str, float]:
    pattern = r'rulekit_events_processed_total\{channel="web",event="([^"]*)"\} (\S+)'
    return {name: float(count) for name, count in re.findall(pattern, metrics)}


def test_a_channel_s_event_names_are_counted_apart_up_to_a_bound(tmp_path, serve) -> None:
    config = write_setup(tmp_path)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            f"channels:\n  web: {{provider: webhook, webhook_secret: {WEB_SECRET}}}\n",
        )
    )
    server = serve(config)
    names = [f"order.paid.{n}" for n in range(MAX_EVENT_NAMES + 30)] + ["x" * 10_000]
    events = [
        {"id": f"e{n}", "event": name, "conversation": {"id": f"web:c{n}"}}
        for n, name in enumerate(names)
    ]
    answer = httpx.post(f"{server.url}/webhooks/web/{WEB_SECRET}", content=json.dumps(events))
    assert answer.status_code == 200, answer.text

    def counted() -> dict[str, float]:
        return processed(httpx.get(f"{server.url}/metrics").text)

    wait_for(lambda: sum(counted().values()) == len(names))
    series = counted()
    assert len(series) == MAX_EVENT_NAMES + 1
    assert series["other"] == 31  # the names after the first 50, and the long one
    assert series["order.paid.0"] == 1
