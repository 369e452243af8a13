"""How a trace's ``team`` is worded for a reader who may see only some of the emails read: the
others are counted, never named, and the lines stay as many as the facts read."""

from __future__ import annotations

from rulekit.team import describe_seen, seen_summary

SEEN = {
    "tracked": True,
    "online": ["anna@example.com", "boris@example.com"],
    "online_in": {"sales": ["boris@example.com"], "support": []},
    "open": {"anna@example.com": 2, "boris@example.com": 1, "client@example.net": 0},
}


def test_everything_is_named_to_a_reader_who_may_see_everyone() -> None:
    assert seen_summary(SEEN) == [
        "online: anna@example.com, boris@example.com",
        "online in sales: boris@example.com",
        "online in support: nobody",
        "open conversations of anna@example.com: 2",
        "open conversations of boris@example.com: 1",
        "open conversations of client@example.net: 0",
    ]


def test_the_emails_a_reader_may_not_see_are_counted_not_named() -> None:
    lines = seen_summary(SEEN, lambda email: email == "anna@example.com")
    assert lines == [
        "online: anna@example.com, 1 other",
        "online in sales: 1 other",
        "online in support: nobody",
        "open conversations of anna@example.com: 2",
        "open conversations of 2 others: not shown",
    ]
    assert not any("boris" in line or "client" in line for line in lines)
    assert describe_seen(SEEN, lambda email: False)[-1] == (
        "open conversations of 3 others: not shown"
    )


def test_nothing_read_is_nothing_shown() -> None:
    assert seen_summary({}) == [] and seen_summary(None, lambda email: True) == []
