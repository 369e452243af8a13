"""What the console page keeps through a sign-in again and a refused live stream, in headless
Chromium against a real daemon and the fake Chatra: a reply being written outlives a session
that ran out (for its agent and its conversation only, forgotten on signing out), and a stream
the server refuses (too many open: 429 with Retry-After) is tried again when the server says,
not every two seconds."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium
from browser import wait_for as wait_briefly
from workspace_helpers import TOKENS, Workspace, running

from rulekit.server.console.routes import MAX_STREAMS

FIRST_TEXT = "Hi, is the blue kettle in stock?"
DRAFT = "Yes, the blue kettle is in stock.\nShall I reserve one for you until Friday?"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Workspace]:
    with running("sqlite", tmp_path) as workspace:
        yield workspace


def wait_for(condition: Any, what: str) -> Any:
    return wait_briefly(condition, what, timeout=60.0)


def signed_in(page: Any, url: str, who: str, *, live: bool = True) -> None:
    from selenium.webdriver.common.by import By

    page.get(f"{url}/console/login")
    wait_for(lambda: page.find_elements(By.ID, "token"), "the sign-in form")
    page.find_element(By.ID, "token").send_keys(TOKENS[who])
    page.find_element(By.ID, "sign-in").click()
    wait_for(lambda: page.execute_script("return document.body.dataset.ready === 'true'"), "ready")
    if live:
        wait_for(
            lambda: page.find_elements(By.CSS_SELECTOR, "#connection[data-state='open']"),
            "the live stream",
        )


def open_conversation(page: Any) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def click() -> bool:
        found = page.find_elements(By.CSS_SELECTOR, "#conversations li[data-id] button")
        try:
            return bool(found) and found[0].click() is None
        except StaleElementReferenceException:
            return False

    wait_for(click, "the conversation in the list")
    script = "return Array.from(document.querySelectorAll('#thread li .text'), e => e.innerText)"
    wait_for(lambda: page.execute_script(script) == [FIRST_TEXT], "the thread")


def kept(page: Any) -> Any:
    return page.execute_script("return window.localStorage.getItem('rulekit.drafts')")


@pytest.mark.slow
def test_a_reply_being_written_outlives_a_session_that_ran_out(
    site: Workspace, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    site.started()
    with chromium(tmp_path / "profile") as page:
        signed_in(page, site.url, "anna")
        open_conversation(page)
        box = page.find_element(By.ID, "reply-text")
        first, second = DRAFT.split("\n")
        box.send_keys(first, Keys.SHIFT, Keys.ENTER, Keys.SHIFT, second)
        wait_for(lambda: box.get_attribute("value") == DRAFT, "the draft typed")
        page.delete_all_cookies()  # the session ran out: the browser holds none that works
        box.send_keys(Keys.ENTER)  # the send finds it gone, and the page goes to sign in
        wait_for(lambda: page.find_elements(By.ID, "token"), "the sign-in page")
        signed_in(page, site.url, "anna")
        open_conversation(page)
        box = page.find_element(By.ID, "reply-text")
        wait_for(lambda: box.get_attribute("value") == DRAFT, "the draft found again")
        assert site.events("agent_replied") == []  # nothing was sent meanwhile
        # another agent signing in on this browser is never shown it
        page.delete_all_cookies()
        signed_in(page, site.url, "boris")
        assert kept(page) is None
        # signing out forgets the drafts
        signed_in(page, site.url, "anna")
        open_conversation(page)
        box = page.find_element(By.ID, "reply-text")
        box.send_keys("Back in a minute")
        wait_for(lambda: kept(page), "the draft kept in the browser")
        page.find_element(By.ID, "sign-out").click()
        wait_for(lambda: page.find_elements(By.ID, "token"), "the sign-in page")
        assert kept(page) is None
        signed_in(page, site.url, "anna")
        open_conversation(page)
        assert page.find_element(By.ID, "reply-text").get_attribute("value") == ""


def test_a_refused_stream_waits_as_long_as_retry_after_says(
    site: Workspace, tmp_path: Path
) -> None:
    """Anna's other pages hold every stream an agent may: the page's stream is refused (429,
    Retry-After: 15) and the page says it waits that long, plus at most a quarter; it also
    caps what a server might ask."""
    from selenium.webdriver.common.by import By

    cookie = httpx.post(f"{site.url}/console/login", data={"token": TOKENS["anna"]}).cookies
    with contextlib.ExitStack() as held:
        client = held.enter_context(httpx.Client(base_url=site.url, cookies=cookie, timeout=10))
        for _ in range(MAX_STREAMS):
            stream = held.enter_context(client.stream("GET", "/console/stream"))
            assert stream.status_code == 200
        refused = client.get("/console/stream")
        assert refused.status_code == 429
        after = int(refused.headers["Retry-After"])
        with chromium(tmp_path / "profile") as page:
            signed_in(page, site.url, "anna", live=False)
            status = wait_for(
                lambda: page.find_element(By.ID, "connection").get_attribute("data-retry-in"),
                "the page's wait before trying again",
            )
            assert after <= int(status) <= round(after * 1.25)
            text = page.find_element(By.ID, "connection").text
            assert text == f"too many console pages open: reconnecting in {status} s…"
            delays = page.execute_script(
                "const K = window.rulekitConsole;"
                "return [K.retryDelay('100000', 0), K.retryDelay('3', 0), K.retryDelay(null, 3)];"
            )
            assert delays[0] <= 300 and 3 <= delays[1] <= 3.75 and 16 <= delays[2] <= 20


@pytest.mark.slow
def test_a_refused_page_goes_live_once_a_stream_is_free(site: Workspace, tmp_path: Path) -> None:
    """After its wait the page asks again, and goes live once another page closed."""
    from selenium.webdriver.common.by import By

    cookie = httpx.post(f"{site.url}/console/login", data={"token": TOKENS["anna"]}).cookies
    with chromium(tmp_path / "profile") as page:
        with contextlib.ExitStack() as held:
            client = held.enter_context(httpx.Client(base_url=site.url, cookies=cookie))
            for _ in range(MAX_STREAMS):
                held.enter_context(client.stream("GET", "/console/stream"))
            signed_in(page, site.url, "anna", live=False)
            wait_for(
                lambda: page.find_element(By.ID, "connection").get_attribute("data-retry-in"),
                "the page's wait before trying again",
            )
        wait_for(
            lambda: page.find_elements(By.CSS_SELECTOR, "#connection[data-state='open']"),
            "the live stream, once the other pages closed",
        )
        assert page.find_element(By.ID, "connection").get_attribute("data-retry-in") is None
