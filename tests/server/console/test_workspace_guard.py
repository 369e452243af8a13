"""The workspace API's write budget and bearer tokens, with an injected clock."""

from __future__ import annotations

from starlette.requests import Request

from rulekit.server.console.guard import WriteBudget, bearer_token


def request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "method": "GET", "path": "/"})


def test_each_agent_has_a_burst_then_one_write_per_refill() -> None:
    now = [100.0]
    budget = WriteBudget(lambda: now[0], burst=3, rate=0.5)
    assert [budget.take("ann@example.com") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.take("ann@example.com") == 2.0  # one write refills in 1 / 0.5 s
    assert budget.take("bob@example.com") == 0.0  # others keep their own bucket
    now[0] += 2.0
    assert budget.take("ann@example.com") == 0.0
    assert budget.take("ann@example.com") > 0


def test_bearer_tokens_are_read_from_the_authorization_header() -> None:
    assert bearer_token(request({})) is None
    assert bearer_token(request({"Authorization": "Bearer abc "})) == "abc"
    assert bearer_token(request({"Authorization": "bearer abc"})) == "abc"
    assert bearer_token(request({"Authorization": "Basic abc"})) == ""
