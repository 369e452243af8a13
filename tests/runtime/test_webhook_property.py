"""Property: whatever body arrives at the webhook endpoint of a real daemon, the answer is a 2xx
or a 4xx that says what is wrong, never a 5xx; an accepted body is processed or set aside with
a clear reason (never a Python exception); and the daemon stays responsive: a normal webhook
posted after each hostile one is accepted and processed.

Bodies: random bytes, random JSON (lone surrogates, huge and non-finite numbers, deep nesting
included), and mutated Chatra samples (a value replaced, a key renamed or dropped, surrogates
added, bytes cut or inserted).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from daemons import SECRET, chat_started
from hostile import (
    PYTHON_ERROR,
    SAMPLES,
    Site,
    key_paths,
    renamed_key,
    replaced,
    running_site,
    string_paths,
    value_paths,
    with_surrogates,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COUNTER = itertools.count(1)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)  # surrogates included

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**130), max_value=10**130),
    st.floats(),  # NaN and infinities included: json.dumps writes them as literals
    ANY_TEXT,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=25,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    sample = SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))]
    how = draw(st.sampled_from(["value", "surrogates", "key", "drop", "cut", "insert", "all"]))
    if how == "all":  # surrogates in every string
        for path in list(string_paths(sample)):
            sample = replaced(sample, path, with_surrogates)
        return _dumps(sample)
    if how in ("value", "surrogates", "drop"):
        path = draw(st.sampled_from(list(value_paths(sample))))
        if how == "value":
            return _dumps(replaced(sample, path, lambda _: draw(json_values)))
        if how == "surrogates":
            return _dumps(replaced(sample, path, lambda v: with_surrogates(json.dumps(v))))
        return _dumps(replaced(sample, path, lambda _: None))
    if how == "key":
        path = draw(st.sampled_from(list(key_paths(sample))))
        return _dumps(renamed_key(sample, path, lambda key: draw(ANY_TEXT) or key + "\ud800"))
    raw = _dumps(sample)
    at = draw(st.integers(0, len(raw)))
    if how == "cut":
        return raw[:at]
    return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]


bodies = st.one_of(
    st.binary(max_size=500),
    json_values.map(_dumps),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 300).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    mutated_samples(),
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("property")) as running:
        yield running


def check_any_body(site: Site, examples: int) -> None:
    urls = {
        "ok": site.server.webhook_url,
        "wrong-secret": f"{site.server.url}/webhooks/online-chat/x{SECRET}",
        "wrong-channel": f"{site.server.url}/webhooks/nope/{SECRET}",
    }
    accepted: list[int] = []
    normal: list[int] = []

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, url=st.sampled_from(["ok", "ok", "ok", "wrong-secret", "wrong-channel"]))
    def post(body: bytes, url: str) -> None:
        answer = site.post(body, urls[url])
        assert 200 <= answer.status_code < 500, (answer.status_code, answer.text, body[:200])
        if answer.status_code >= 400:
            assert answer.json()["error"]  # a 4xx says what is wrong
        elif answer.json()["status"] == "accepted":
            accepted.append(answer.json()["id"])
        after = site.post(chat_started(next(COUNTER)))
        assert after.status_code == 200 and after.json()["status"] == "accepted"
        normal.append(after.json()["id"])

    post()
    settled = site.inbox.settle(accepted + normal, timeout=120)
    assert all(settled[i] == ("done", None) for i in normal)
    assert all(len(site.inbox.events(i)) == 1 for i in normal)
    unclear = [(i, e) for i, (s, e) in settled.items() if s != "done" and PYTHON_ERROR.match(e)]
    assert unclear == []
    assert httpx.get(f"{site.server.url}/healthz").status_code == 200


@pytest.mark.slow
def test_any_body_gets_a_2xx_or_a_clear_4xx_and_the_daemon_keeps_working(site):
    check_any_body(site, examples=150)


@pytest.mark.slow
def test_any_body_many_more_examples(site):
    check_any_body(site, examples=2000)
