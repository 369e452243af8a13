"""What a client controls (a name, a message, custom data, the page they are on), made hostile,
as an agent sees it in headless Chromium against a real daemon and the fake Chatra: values of
any length without a space break inside their column, never widening it or the page; an
address that hides where it leads is no link; a letter shows no more combining marks than a
script needs; a conversation longer than its page reads on back to its first message."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from browser import chromium
from scaffold import make_event
from test_workspace_browser import (
    list_item,
    open_conversation,
    sign_in,
    thread_texts,
    wait_for,
)
from workspace_helpers import CONVERSATION, SAMPLES, SECRET, VISITOR, path, running

from rulekit.server.console.conversations import PAGE_EVENTS
from rulekit.store.records import NewEvent

NAME = "N" * 300
KEY = "K" * 300
ZALGO = "Z" + "\u0301\u0316\u0352" * 67
"""A letter carrying 201 combining marks: stacked, they cover the lines above and below."""
VIETNAMESE = "Tie\u0302\u0301ng Vie\u0302\u0323t"
"""Letters carrying the two marks their script needs (decomposed)."""
DECEIVING = "https://shop.example.com:8443@evil.example/checkout"
"""Reads as the shop's address; leads to evil.example (the shop's name is a user name)."""

WIDER_THAN_THEIR_BOX = """
const out = [];
for (const selector of ["html", ".list-column", ".thread-column", ".panel-column"]) {
  const box = document.querySelector(selector);
  if (box.scrollWidth > box.clientWidth + 1) out.push([selector, box.scrollWidth, box.clientWidth]);
}
return out;
"""


def test_a_client_s_values_of_any_length_stay_in_their_column(tmp_path: Path) -> None:
    body = json.loads((SAMPLES / "chat_started_anonymous.json").read_text())
    client = body["client"]
    client.update(displayedName=NAME, city="C" * 300, email="e" * 200 + "@example.com")
    client["info"] = {KEY: "v", "plan": "V" * 300, "zalgo": ZALGO, "language": VIETNAMESE}
    client["chatLink"] = "https://app.chatra.io/chat/" + "L" * 400
    body["chatStartedPage"]["link"] = DECEIVING
    body["message"]["text"] = "x" * 3000
    with running("sqlite", tmp_path) as site:
        answer = httpx.post(f"{site.url}/webhooks/online-chat/{SECRET}", content=json.dumps(body))
        assert answer.status_code == 200, answer.text
        site.processed("online-chat:msg:Acb7t59BkCvoXi6SS")
        with chromium(tmp_path / "profile") as page:
            sign_in(page, site.url, "anna")
            open_conversation(page)
            wait_for(lambda: thread_texts(page) == ["x" * 3000], "the thread")
            wait_for(lambda: KEY in page.find_element("id", "client-custom").text, "the panel")
            for width in (1280, 390):  # a desk's screen and a phone's
                page.set_window_size(width, 900)
                assert page.execute_script(WIDER_THAN_THEIR_BOX) == [], width
            assert NAME in page.find_element("id", "thread-title").text.replace("\n", "")
            assert not page.find_element("id", "thread-older").is_displayed()  # all is shown

            # a letter shows the marks a script needs, not the dozens that cover other lines
            custom = page.execute_script(
                "return [...document.querySelectorAll('#client-custom dd')].map(e => e.textContent)"
            )
            assert ZALGO[:9] in custom and VIETNAMESE in custom

            # the page the client says they are on is shown, not offered as a link
            # (read in one script call: the panel is redrawn whenever the conversation changes)
            text, links = page.execute_script(
                "const facts = document.getElementById('conversation-facts');"
                " return [facts.innerText, [...facts.querySelectorAll('a')].map(a => a.href)];"
            )
            assert DECEIVING in text
            assert links == [client["chatLink"]]
            # an address the API cut short (ending "…") would lead to another page
            cut = "https://shop.example.com/" + "p" * 100 + "\u2026"
            shown = "return rulekitConsole.safeLink(arguments[0]).tagName"
            assert page.execute_script(shown, cut) == "BDI"
            assert page.execute_script(shown, cut[:-1]) == "A"  # not cut: a link


def test_a_long_thread_says_what_it_leaves_out_and_keeps_the_agent_where_they_read(
    tmp_path: Path,
) -> None:
    """A conversation longer than its page offers its older messages, read on demand back to
    the first; a client writing on does not move the agent from where they read (a new
    message reads only what is new, not the conversation again), and an agent reading the
    end sees what comes next."""
    later = [
        make_event(
            event="message",
            conversation={"id": CONVERSATION},
            client={"id": VISITOR},
            message={"id": f"m{n}", "text": f"message {n}", "author": "client"},
            id=f"online-chat:msg:m{n}",
        )
        for n in range(2 * PAGE_EVENTS + 50)
    ]
    with running("sqlite", tmp_path) as site:
        site.started()
        with site.daemon.store.transaction() as state:
            state.record_events([NewEvent(event, None, {}) for event in later])
        with chromium(tmp_path / "profile") as page:
            sign_in(page, site.url, "anna")
            open_conversation(page)
            wait_for(lambda: len(thread_texts(page)) == PAGE_EVENTS, "the thread")
            first_shown = f"message {len(later) - PAGE_EVENTS}"
            assert thread_texts(page)[0] == first_shown  # not the conversation's first
            assert page.find_element("id", "thread-older").is_displayed()
            # opened, the thread shows its newest message
            assert page.execute_script(LAST_MESSAGE_SHOWN)
            views = page.execute_script(VIEWS_READ)

            page.execute_script("window.scrollTo(0, 0)")  # the agent reads further up
            site.webhook("chat_fragment_client_message.json")
            wait_for(lambda: thread_texts(page)[-1] == NEW_TEXT, "the client's new message")
            assert page.execute_script("return window.scrollY") == 0
            # what is new since the newest event shown was read, not the whole view again
            read = page.execute_script(VIEWS_READ)
            assert [url for url in read if "?" not in url] == [u for u in views if "?" not in u]
            assert any("?after=" in url for url in read), read
            # reading the end, the agent sees what comes next
            page.execute_script(
                "document.querySelector('#thread').lastElementChild.scrollIntoView(false)"
            )
            with site.client("anna") as anna:
                sent = anna.post(f"{path()}/messages", json={"text": "Yes, in stock."})
                assert sent.status_code == 202, sent.text
            wait_for(lambda: thread_texts(page)[-1] == "Yes, in stock.", "the reply")
            assert page.execute_script(LAST_MESSAGE_SHOWN)

            # older messages, on demand, back to the conversation's first
            for shown in (2 * PAGE_EVENTS + 2, len(later) + 3):
                page.find_element("id", "thread-older").click()
                wait_for(lambda n=shown: len(thread_texts(page)) == n, "older messages")
            texts = thread_texts(page)
            assert texts[0] == FIRST_TEXT
            assert texts[1:-2] == [f"message {n}" for n in range(len(later))]
            assert texts[-2:] == [NEW_TEXT, "Yes, in stock."]
            assert not page.find_element("id", "thread-older").is_displayed()  # all is shown


FIRST_TEXT = "Hi, is the blue kettle in stock?"
"""The client's first message (``chat_started_anonymous.json``)."""
VIEWS_READ = """
return performance.getEntriesByType("resource").map(e => e.name)
  .filter(name => name.includes("/console/api/conversations/online-chat/"));
"""
NEW_TEXT = "Also, do you ship to Austria?"
"""The client's message of ``chat_fragment_client_message.json``."""


FILL_SEEN = """
// what a browser remembers having read, grown by every conversation it ever listed (a client
// can start thousands), up to the last entry its storage takes
const id = (i) => "online-chat:" + String(i).padStart(200, "0");
const make = (n) => {
  const seen = {};
  for (let i = 0; i < n; i++) seen[id(i)] = "2020-01-01T00:00:00+00:00";
  return JSON.stringify(seen);
};
let fits = 0, fails = 100000;
while (fails - fits > 1) {
  const n = (fits + fails) >> 1;
  try { localStorage.setItem("rulekit.seen", make(n)); fits = n; } catch (e) { fails = n; }
}
localStorage.setItem("rulekit.seen", make(fits));
// and the few characters left (an entry is longer than they are)
let more = 0, over = 10000;
while (over - more > 1) {
  const n = (more + over) >> 1;
  try { localStorage.setItem("filler", "x".repeat(n)); more = n; } catch (e) { over = n; }
}
localStorage.setItem("filler", "x".repeat(more));
return fits;
"""


SEEN_BEFORE = """
const seen = {};
for (let i = 0; i < 3000; i++) seen["online-chat:" + i] = "2020-01-01T00:00:00+00:00";
localStorage.setItem("rulekit.seen", JSON.stringify(seen));
"""


def test_a_browser_remembers_the_reading_of_the_conversations_active_last(
    tmp_path: Path,
) -> None:
    with running("sqlite", tmp_path) as site:
        site.started()
        with chromium(tmp_path / "profile") as page:
            sign_in(page, site.url, "anna")
            page.execute_script(SEEN_BEFORE)  # 3,000 conversations read long ago
            page.refresh()
            open_conversation(page)
            wait_for(lambda: thread_texts(page), "the thread")
            seen = page.execute_script("return JSON.parse(localStorage['rulekit.seen'])")
            assert len(seen) == 2000 and CONVERSATION in seen


@pytest.mark.slow
def test_a_browser_remembers_what_was_read_however_many_conversations_it_saw(
    tmp_path: Path,
) -> None:
    """The browser's storage as full as what it remembers can make it: what is read now is
    still remembered."""
    with running("sqlite", tmp_path) as site:
        site.started()
        with chromium(tmp_path / "profile") as page:
            sign_in(page, site.url, "anna")
            assert page.execute_script(FILL_SEEN) > 10_000
            page.refresh()
            wait_for(lambda: page.title == "(1) rulekit console", "the chat unread")
            open_conversation(page)
            wait_for(lambda: thread_texts(page), "the thread")
            page.get(f"{site.url}/console/")  # another day: the page opened anew
            wait_for(lambda: page.execute_script("return document.body.dataset.ready"), "it")
            wait_for(lambda: list_item(page) is not None, "the list")
            assert page.title == "rulekit console"  # read it stays


LAST_MESSAGE_SHOWN = """
const last = document.querySelector("#thread").lastElementChild.getBoundingClientRect();
return last.top < window.innerHeight && last.bottom > 0;
"""


def test_a_reply_being_written_stays_with_its_conversation(tmp_path: Path) -> None:
    """An agent writing to one client who opens another conversation (a new chat came in)
    finds an empty box there: Enter must not send what was meant for the first client, about
    them, to the second. Back in the first, the reply waits where it was left."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    other = "online-chat:user-48213"
    with running("sqlite", tmp_path) as site:
        site.started()
        site.webhook("chat_started_bound_user_agent_initiated.json")
        with chromium(tmp_path / "profile") as page:
            sign_in(page, site.url, "anna")
            open_conversation(page)
            wait_for(lambda: thread_texts(page), "the first thread")
            page.find_element(By.ID, "reply-text").send_keys("Your order 1042 ships to Berlin")
            open_conversation(page, other)
            wait_for(lambda: "Jonas" in page.find_element(By.ID, "thread-title").text, "it")
            box = page.find_element(By.ID, "reply-text")
            assert box.get_attribute("value") == ""
            box.send_keys(Keys.ENTER)  # nothing to send
            open_conversation(page)
            wait_for(lambda: "Jonas" not in page.find_element(By.ID, "thread-title").text, "back")
            box = page.find_element(By.ID, "reply-text")
            assert box.get_attribute("value") == "Your order 1042 ships to Berlin"
        assert site.chatra.sent == [] and site.events("agent_replied") == []


def test_a_link_to_no_conversation_leaves_the_page_working(tmp_path: Path) -> None:
    """A link into the console whose conversation part is not percent-encoding (pasted from a
    chat, cut short) opens the workspace with no conversation, its live stream working."""
    with running("sqlite", tmp_path) as site:
        site.started()
        with chromium(tmp_path / "profile") as page:
            sign_in(page, site.url, "anna")
            page.get("about:blank")
            page.get(f"{site.url}/console/#/c/online-chat/%E0%A4%A")
            wait_for(lambda: list_item(page) is not None, "the list")
            wait_for(
                lambda: page.find_element("id", "connection").text == "live", "the live stream"
            )
            assert not page.find_element("id", "thread-view").is_displayed()
            open_conversation(page)  # and the list opens conversations as ever
            wait_for(lambda: thread_texts(page), "the thread")
