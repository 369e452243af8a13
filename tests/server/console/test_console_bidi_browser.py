"""Client values holding bidi controls, as an agent sees them in headless Chromium: each value
is isolated from the text around it (a ``<bdi>``), so a client named ``evil`` RLO ``txt.exe``
reorders nothing outside its name (not the time after it, not the labels, not who wrote
what), and a control that would reorder (an embedding, override or isolate) is shown as what
it is, ``evil\\u202etxt.exe``, not obeyed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from browser import chromium
from test_workspace_browser import open_conversation, sign_in, wait_for
from workspace_helpers import SAMPLES, SECRET, running

NAME = "evil\u202etxt.exe"
TEXT = "see \u202egnp.exe\u202c and \u2067isolate never closed, \u200fmarks\u061c"
CITY = "Ber\u202blin"
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
REORDERING = BIDI[3:]


def shown(text: str) -> str:
    """``text`` as the console shows it: each control that reorders written out."""
    return "".join(f"\\u{ord(c):04x}" if c in REORDERING else c for c in text)


UNISOLATED = """
const bidi = new RegExp("[" + arguments[0] + "]");
const isolating = new Set(["isolate", "isolate-override", "plaintext"]);
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const found = [], wrong = [];
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  if (!bidi.test(node.data)) continue;
  const holder = node.parentElement;
  if (holder.closest("[hidden]")) continue;
  found.push(node.data);
  // isolated, and alone in what isolates it: nothing else of the page shares its embedding
  if (!isolating.has(getComputedStyle(holder).unicodeBidi) || holder.textContent !== node.data) {
    wrong.push([holder.tagName + "." + holder.className, holder.textContent]);
  }
}
return [found, wrong];
"""

AFTER_THE_NAME = """
const item = document.querySelector("#thread li.author-client");
if (!item) return null;
const author = item.querySelector(".author").getBoundingClientRect();
const time = item.querySelector(".time").getBoundingClientRect();
return [author.left, author.right, time.left, time.right];
"""


@pytest.mark.slow
def test_a_client_s_bidi_controls_reorder_nothing_around_their_values(tmp_path: Path) -> None:
    body = json.loads((SAMPLES / "chat_started_anonymous.json").read_text())
    body["client"].update(name=NAME, displayedName=NAME, city=CITY)
    body["message"]["text"] = TEXT
    with running("sqlite", tmp_path) as site:
        answer = httpx.post(f"{site.url}/webhooks/online-chat/{SECRET}", json=body)
        assert answer.status_code == 200, answer.text
        site.processed("online-chat:msg:Acb7t59BkCvoXi6SS")
        with chromium(tmp_path / "profile") as page:
            sign_in(page, site.url, "anna")
            open_conversation(page)
            wait_for(
                lambda: page.execute_script(AFTER_THE_NAME), "the client's message in the thread"
            )
            found, wrong = page.execute_script(UNISOLATED, BIDI)
            page.save_screenshot(str(tmp_path / "bidi.png"))
            # what a person sees: the message's time after the whole name, not inside it
            _, name_right, time_left, _ = page.execute_script(AFTER_THE_NAME)
            assert time_left >= name_right - 0.5, (name_right, time_left)
            assert wrong == []
            assert not [text for text in found if set(text) & set(REORDERING)], found
            assert any(shown(TEXT) in text for text in found), found  # its marks kept
            # shown in the list, the thread's title and author, the facts, the feed
            seen = page.execute_script("return document.body.innerText")
            assert seen.count(shown(NAME)) >= 4 and shown(CITY) in seen, seen
