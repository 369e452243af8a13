"""``fetch_client: true`` against a running daemon and the fake Chatra, on SQLite and
PostgreSQL: an anonymous visitor's webhook is processed at once, then the client's data is
fetched with ``GET /clients/{id}`` and the name Chatra knows is a ``client_updated`` event that
rules see, in the console's client panel too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from workspace_helpers import STORAGES, VISITOR, Workspace, path, running, wait_for

pytest.importorskip("rulekit_chatra")


@pytest.fixture(params=STORAGES)
def fetching(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    with running(request.param, tmp_path, "fetch_client: true") as workspace:
        yield workspace


def test_a_visitors_data_is_fetched_and_rules_see_it(fetching: Workspace) -> None:
    fetching.chatra.add_client(
        VISITOR,
        basicInfo={"name": "Maria Lopez", "email": "maria@example.org"},
        info={"name": "Maria Lopez", "email": "maria@example.org", "plan": "gold"},
    )
    fetching.started()  # the webhook's own events do not wait for the fetch
    (updated,) = wait_for(lambda: fetching.events("client_updated"), "the fetched client")
    assert updated.data["client"]["name"] == "Maria Lopez"
    assert updated.data["origin"] == "channel"
    matched = [rule["name"] for rule in updated.trace["rules"] if rule.get("matched")]
    assert matched == ["Welcome named clients"]
    gets = [r.path for r in fetching.chatra.requests if r.method == "GET"]
    assert gets == [f"/clients/{VISITOR}"]
    with fetching.client("anna") as anna:
        client = anna.get(path()).json()["client"]
    assert (client["name"], client["email"], client["city"]) == (
        "Maria Lopez",
        "maria@example.org",
        "Berlin",
    )
    assert client["custom"] == {"plan": "gold"}
    # the next webhook of the same visitor asks Chatra nothing more
    fetching.webhook("chat_fragment_client_message.json")
    fetching.processed("online-chat:msg:mZBJAHsfeJshXhTRG")
    assert [r.path for r in fetching.chatra.requests if r.method == "GET"] == gets
