"""An ``Idempotency-Key`` is known to every daemon on the store and across a restart: a retry
that a balancer sends to another daemon, or that comes after the daemon was restarted, is still
a retry (nothing is sent or changed twice) and another request under the key is still 422."""

from __future__ import annotations

from pathlib import Path

from postgres_schemas import schema_url
from workspace_helpers import VISITOR, Workspace, path, running, wait_for


def tags_then_removed(daemon: Workspace) -> dict:
    """Anna tags the chat with key ``k-tags``; the admin then removes the tag."""
    with daemon.client("anna") as anna:
        tagged = anna.post(
            f"{path()}/tags", json={"add": ["vip"]}, headers={"Idempotency-Key": "k-tags"}
        )
    assert tagged.status_code == 200, tagged.text
    with daemon.client("admin") as admin:
        assert admin.post(f"{path()}/tags", json={"remove": ["vip"]}).status_code == 200
    return tagged.json()


def retry_tags(daemon: Workspace, first: dict) -> None:
    """The same request again answers what the first did and tags nothing; another under the
    key is refused."""
    key = {"Idempotency-Key": "k-tags"}
    with daemon.client("anna") as anna:
        again = anna.post(f"{path()}/tags", json={"add": ["vip"]}, headers=key)
        assert again.status_code == 200 and again.json() == first
        other = anna.post(f"{path()}/tags", json={"add": ["new"]}, headers=key)
        assert other.status_code == 422 and "different request" in other.json()["error"]
        assert anna.get(path()).json()["conversation"]["tags"] == []


def test_a_retry_on_another_daemon_of_the_store_is_a_retry(tmp_path: Path) -> None:
    from rulekit_chatra.testing import FakeChatra

    from rulekit.store.postgres import drop_schema

    storage = schema_url()
    try:
        with FakeChatra() as chatra:
            chatra.add_client(VISITOR, name=None)
            shared = {"storage": storage, "chatra": chatra}
            with (
                running("postgresql", tmp_path / "a", **shared) as first,
                running("postgresql", tmp_path / "b", **shared) as second,
            ):
                first.started()
                key = {"Idempotency-Key": "k-reply"}
                with first.client("anna") as anna:
                    sent = anna.post(f"{path()}/messages", json={"text": "one"}, headers=key)
                assert sent.status_code == 202, sent.text
                with second.client("anna") as anna:
                    other = anna.post(f"{path()}/messages", json={"text": "two"}, headers=key)
                    retry = anna.post(f"{path()}/messages", json={"text": "one"}, headers=key)
                assert (other.status_code, retry.status_code) == (422, 200)
                assert retry.json()["duplicate"] is True

                retry_tags(second, tags_then_removed(first))
                wait_for(lambda: first.job(sent.json()["job_id"]).status == "done", "the reply")
                assert [message["text"] for message in chatra.sent] == ["one"]
                added = [
                    e for e in first.events("updated") if e.data["changed"]["tags"].get("added")
                ]
                assert [e.data["changed"]["tags"]["added"] for e in added] == [["vip"]]
    finally:
        drop_schema(storage)


def test_a_retry_after_a_restart_is_a_retry(tmp_path: Path) -> None:
    from rulekit_chatra.testing import FakeChatra

    with FakeChatra() as chatra:
        chatra.add_client(VISITOR, name=None)
        with running("sqlite", tmp_path, chatra=chatra) as daemon:
            daemon.started()
            first = tags_then_removed(daemon)
        with running("sqlite", tmp_path, chatra=chatra) as restarted:
            retry_tags(restarted, first)
            added = [
                e for e in restarted.events("updated") if e.data["changed"]["tags"].get("added")
            ]
            assert [e.data["changed"]["tags"]["added"] for e in added] == [["vip"]]
