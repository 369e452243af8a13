"""What the browser itself enforces on the console's pages, in headless Chromium: no string a
script hands it becomes markup (Trusted Types, with no policy), and a page of another site
keeps no handle on a console window it opened, nor loads the console's answers into itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, chromium_or_skip, wait_for
from console_helpers import ConsoleServer, serve
from test_console_browser import HOSTILE, feed_texts, sign_in


@pytest.fixture(autouse=True)
def _offline_selenium(monkeypatch: pytest.MonkeyPatch) -> None:
    chromium_or_skip()
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium never looks anything up online


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


MARKUP_SINKS = """
const markup = '<a id="injected" href="https://phish.example/">Session expired: sign in</a>';
const tried = {};
function attempt(name, write) {
  try { write(); tried[name] = "parsed"; } catch (e) { tried[name] = e.name; }
}
const feed = document.getElementById("feed");
attempt("innerHTML", () => { document.createElement("div").innerHTML = markup; });
attempt("insertAdjacentHTML", () => feed.insertAdjacentHTML("afterbegin", markup));
attempt("outerHTML", () => { feed.firstElementChild.outerHTML = markup; });
attempt("createContextualFragment", () => document.createRange().createContextualFragment(markup));
attempt("DOMParser", () => new DOMParser().parseFromString(markup, "text/html"));
attempt("document.write", () => document.write(markup));
attempt("srcdoc", () => { document.createElement("iframe").srcdoc = markup; });
attempt("script text", () => { document.createElement("script").text = "window.__ran = 1"; });
attempt("handler attribute", () => feed.setAttribute("onclick", "window.__ran = 1"));
return [tried, Boolean(document.getElementById("injected")), window.__ran === undefined];
"""


def test_the_console_page_turns_no_string_into_markup(
    console_server: ConsoleServer, browser: Any
) -> None:
    sign_in(browser, console_server, "ann")
    # the page's own rendering works under the policy: a client's markup is shown as text
    console_server.publish(
        {"type": "event", "channel": "online-chat", "event": "created", "client_name": HOSTILE}
    )
    wait_for(lambda: any("Mal" in text for text in feed_texts(browser)), "the event in the feed")
    refused = [e["message"] for e in browser.get_log("browser") if e["source"] == "security"]
    assert refused == []  # nothing the page's own scripts did broke the policy

    tried, injected, nothing_ran = browser.execute_script(MARKUP_SINKS)
    assert tried == dict.fromkeys(tried, "TypeError"), tried
    assert len(tried) == 9
    assert not injected and nothing_ran


def test_a_page_of_another_site_keeps_no_handle_on_the_console_it_opened(
    console_server: ConsoleServer, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    browser.get("about:blank")  # a page of no site of the console's
    opener = browser.current_window_handle
    browser.execute_script(
        "window.__console = window.open(arguments[0])", f"{console_server.url}/console/login"
    )
    opened = wait_for(
        lambda: [handle for handle in browser.window_handles if handle != opener],
        "the console's window",
    )[0]
    browser.switch_to.window(opened)
    wait_for(lambda: browser.find_elements(By.ID, "token"), "the sign-in form")
    browser.switch_to.window(opener)
    # its handle is that of a closed window: it can neither send the console to a look-alike
    # sign-in page nor count the frames it holds
    assert browser.execute_script("return window.__console.closed") is True


LOAD_ELSEWHERE = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {mode: "no-cors", credentials: "include"})
  .then(() => done("loaded"), () => done("refused"));
"""


def test_a_page_of_another_origin_cannot_load_the_console_s_answers(
    console_server: ConsoleServer, browser: Any
) -> None:
    """Another program on the console's host (another port: the same site, so the browser
    sends the console's cookie with what it asks) loads nothing of the console into its own
    page: no answer, no sound, not even the page's files."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>another program</title>")

    sign_in(browser, console_server, "ann")
    with serve(Starlette(routes=[Route("/", page)])) as (elsewhere, _):
        browser.get(elsewhere)
        browser.set_script_timeout(10)
        for path in ("/console/api/me", "/console/sounds/ding.wav", "/console/static/console.js"):
            url = f"{console_server.url}{path}"
            assert browser.execute_async_script(LOAD_ELSEWHERE, url) == "refused", path
