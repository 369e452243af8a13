"""``rulekit retry`` and ``rulekit requeue``: list what failed, make it pending again, say so;
exit 1 for an id that is not there or not in a state to act on."""

from __future__ import annotations

import json

from rulekit.store.sqlite import SQLiteStore


def test_retry_lists_dead_letters_and_makes_one_pending(site) -> None:
    listed = site.run("retry")
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.splitlines()
    job_id = int(line.split()[0])
    assert "slack" in line and "channel_not_found" in line
    assert site.sql("SELECT status FROM outbox WHERE id = ?", (job_id,)) == [("dead",)]

    retried = site.run("retry", str(job_id))
    assert retried.exit_code == 0, retried.output
    assert retried.output == f"dead letter {job_id}: pending again\n"
    assert site.sql("SELECT status FROM outbox WHERE id = ?", (job_id,)) == [("pending",)]

    again = site.run("retry", str(job_id), "--format", "json")
    assert again.exit_code == 1
    (result,) = json.loads(again.output)["results"]
    assert result == {
        "ok": False,
        "job_id": job_id,
        "error": f"job {job_id} is pending, not a dead letter",
    }
    assert site.run("retry", "424242").exit_code == 1
    assert site.run("retry").output == "no dead letters\n"


def test_requeue_lists_set_aside_webhooks_and_makes_one_pending(site) -> None:
    assert site.run("requeue").output == "no set-aside webhooks\n"
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            inbox_id, _ = state.append_inbox("online-chat", b'{"not": "chatra"}')
            state.finish_inbox(inbox_id, error="ChannelError: no client")
    finally:
        store.close()
    listed = site.run("requeue", "--format", "json")
    assert listed.exit_code == 0, listed.output
    (item,) = json.loads(listed.output)["set_aside"]
    assert (item["inbox_id"], item["error"]) == (inbox_id, "ChannelError: [hidden]")
    shown = site.run("requeue", "--format", "json", "--show-content")
    (item,) = json.loads(shown.output)["set_aside"]
    assert (item["inbox_id"], item["error"]) == (inbox_id, "ChannelError: no client")
    requeued = site.run("requeue", str(inbox_id))
    assert requeued.exit_code == 0, requeued.output
    assert site.sql("SELECT status FROM inbox WHERE id = ?", (inbox_id,)) == [("pending",)]
    assert site.run("requeue", str(inbox_id)).exit_code == 1


def test_the_listings_hide_what_they_quote_of_clients_without_show_content(site) -> None:
    """A dead letter's error quoting the client's message, a set-aside body with their email:
    `rulekit retry` and `rulekit requeue` list them as `rulekit why` does, content hidden unless
    --show-content (terminals and pasted bug reports are no place for it)."""
    angry, email = "refund now, I am angry", "bob.roe@example.org"
    body = json.dumps({"client": {"id": "c-bob", "email": email}, "text": "card 4111 declined"})
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            state.execute(
                "UPDATE outbox SET last_error = :error WHERE status = 'dead'",
                {"error": f'Slack refused: {{"text": "{angry}"}}'},
            )
            inbox_id, _ = state.append_inbox("online-chat", body.encode())
            state.finish_inbox(inbox_id, error=f"ChannelError: {email} is not a client of ours")
    finally:
        store.close()
    for command in ("retry", "requeue"):
        for form in ([], ["--format", "json"]):
            hidden = site.run(command, *form)
            assert hidden.exit_code == 0, hidden.output
            for value in (angry, email, "card 4111 declined"):
                assert value not in hidden.output, (command, form, hidden.output)
            assert "[hidden]" in hidden.output, (command, form, hidden.output)
    shown = (
        site.run("retry", "--show-content").output
        + site.run("requeue", "--show-content", "--format", "json").output
    )
    assert angry in shown and email in shown and "card 4111 declined" in shown


def test_the_set_aside_listing_hides_a_providers_words_and_shows_rulekits_own(site) -> None:
    """Without --show-content the listing does not read the bodies: a provider's error (which
    may quote a body that is not JSON, or any part of it) is hidden, a bug's keeps its type,
    rulekit's own reasons are shown (the event ids in them hidden)."""
    body = b"name=Jane+Roe&phone=555-0142"
    errors = {
        "cannot read name=Jane Roe&phone=555-0142": "[hidden]",
        "KeyError: 'Jane Roe'": "KeyError: [hidden]",
        "the conversation's state changed 5 times while evaluated": (
            "the conversation's state changed 5 times while evaluated"
        ),
        "evaluating event jane-roe-1 took more than its CPU budget (2 s; processing.event_cpu)": (
            "evaluating event [hidden] took more than its CPU budget (2 s; processing.event_cpu)"
        ),
    }
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            for error in errors:
                inbox_id, _ = state.append_inbox("online-chat", body)
                state.finish_inbox(inbox_id, error=error)
    finally:
        store.close()
    listed = json.loads(site.run("requeue", "--format", "json").output)["set_aside"]
    assert sorted(entry["error"] for entry in listed) == sorted(errors.values())
    text = site.run("requeue").output
    assert "Jane" not in text and "555-0142" not in text and "jane-roe" not in text
    shown = site.run("requeue", "--show-content").output
    assert "Jane Roe&phone=555-0142" in shown
