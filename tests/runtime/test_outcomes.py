"""What a call's result becomes when it is recorded (`json_ready`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rulekit.runtime.outcomes import json_ready

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@given(st.dictionaries(st.text(), scalars) | values)
def test_a_result_is_kept_as_its_json_round_trip(value):
    kept = json_ready(value)
    assert kept == round_trip(value)
    assert json.dumps(kept) == json.dumps(round_trip(value))


def test_what_json_cannot_hold_is_kept_as_its_string():
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert json_ready({"at": moment, "n": 1}) == {"at": str(moment), "n": 1}
    assert json_ready({1: "a"}) == {"1": "a"}
    assert json_ready({"ids": (1, 2)}) == {"ids": [1, 2]}


def test_the_kept_result_is_not_the_actions_own_dict():
    result = {"ts": "1.2", "channel": "C1"}
    kept = json_ready(result)
    result["ts"] = "changed"
    assert kept == {"ts": "1.2", "channel": "C1"}
