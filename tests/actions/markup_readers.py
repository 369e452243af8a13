"""Reference readers of the markups rulekit sends, written from the services' documentation and
independent of rulekit's escaping code: what a message *means* once Telegram or Slack reads it.

Each returns a list of events — ``("text", s)``, ``("open", kind)``, ``("close", kind)``,
``("link", target, label)``, ``("start", tag, attrs)``... — with text decoded (entities and
escapes resolved), and raises ``ValueError`` where the service would refuse the markup.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

Event = tuple[Any, ...]


def _text(events: list[Event], text: str) -> None:
    if not text:
        return
    if events and events[-1][0] == "text":
        events[-1] = ("text", events[-1][1] + text)
    else:
        events.append(("text", text))


# Telegram HTML ----------------------------------------------------------------------------------


class _HtmlEvents(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[Event] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, tuple(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, tuple(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        _text(self.events, data)

    def unknown(self, *args: Any) -> None:
        self.events.append(("other", *args))

    handle_comment = handle_decl = handle_pi = unknown_decl = unknown


def read_html(text: str) -> list[Event]:
    """Tags with their attributes (values decoded) and text (entities decoded), as Python's
    HTML parser reads them."""
    parser = _HtmlEvents()
    parser.feed(text)
    parser.close()
    return parser.events


# Telegram MarkdownV2 ----------------------------------------------------------------------------

RESERVED = set("_*[]()~`>#+-=|{}.!")
_MARKERS = (("__", "underline"), ("||", "spoiler"), ("*", "bold"), ("_", "italic"), ("~", "strike"))


def _escape_at(text: str, index: int) -> bool:
    return text[index] == "\\" and index + 1 < len(text) and 0 < ord(text[index + 1]) <= 126


def read_markdown_v2(text: str) -> list[Event]:
    """MarkdownV2 as Telegram's documentation reads it: ``\\`` escapes any character 1-126
    anywhere; in code and pre only a backquote is reserved; a link's url ends at ``)``; any
    other reserved character outside markup is an error."""
    events: list[Event] = []
    stack: list[str] = []
    index = 0
    at_line_start = True
    while index < len(text):
        char = text[index]
        top = stack[-1] if stack else None
        if _escape_at(text, index):
            _text(events, text[index + 1])
            index += 2
            at_line_start = False
            continue
        if top in ("code", "pre"):
            end = "```" if top == "pre" else "`"
            if text.startswith(end, index):
                events.append(("close", stack.pop()))
                index += len(end)
            elif char == "`":
                raise ValueError(f"a backquote inside {top} at {index} must be escaped")
            else:
                _text(events, char)
                index += 1
            continue
        if char not in RESERVED:
            _text(events, char)
            at_line_start = char == "\n"
            index += 1
            continue
        if text.startswith("```", index):
            stack.append("pre")
            events.append(("open", "pre"))
            index += 3
        elif char == "`":
            stack.append("code")
            events.append(("open", "code"))
            index += 1
        elif char == "[":
            stack.append("link")
            events.append(("open", "link"))
            index += 1
        elif char == "]":
            if top != "link" or not text.startswith("](", index):
                raise ValueError(f"a ']' at {index} closes no link")
            stack.pop()
            index, url = _read_url(text, index + 2)
            events.append(("close", "link", url))
        elif char == ">" and at_line_start:
            events.append(("quote",))
            index += 1
        else:
            for marker, kind in _MARKERS:
                if text.startswith(marker, index):
                    if top == kind:
                        stack.pop()
                        events.append(("close", kind))
                    elif kind in stack:
                        raise ValueError(f"{marker!r} at {index} closes {kind} out of order")
                    else:
                        stack.append(kind)
                        events.append(("open", kind))
                    index += len(marker)
                    break
            else:
                raise ValueError(f"character {char!r} at {index} is reserved and must be escaped")
        at_line_start = False
    if stack:
        raise ValueError(f"unclosed {stack}")
    return events


def _read_url(text: str, index: int) -> tuple[int, str]:
    url: list[str] = []
    while index < len(text):
        if _escape_at(text, index):
            url.append(text[index + 1])
            index += 2
        elif text[index] == ")":
            return index + 1, "".join(url)
        else:
            url.append(text[index])
            index += 1
    raise ValueError("a link's url is not closed")


# Slack mrkdwn -----------------------------------------------------------------------------------

_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", ">": ">", "gt": ">"}


def _decode(text: str) -> str:
    if "&" in _ENTITY.sub("", text):
        raise ValueError(f"a bare '&' in {text!r}")
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def read_mrkdwn(text: str) -> list[Event]:
    """Slack's control sequences: ``<target|label>`` (links, ``<@U1>``, ``<!channel>``), the
    three entities; the rest is text (formatting characters are not markup of links or
    mentions, and Slack has no escape for them)."""
    events: list[Event] = []
    index = 0
    while index < len(text):
        start = text.find("<", index)
        if start == -1:
            start = len(text)
        chunk = text[index:start]
        if ">" in chunk:
            raise ValueError(f"a bare '>' in {chunk!r}")
        _text(events, _decode(chunk))
        if start == len(text):
            break
        end = text.find(">", start)
        if end == -1:
            raise ValueError("a '<' without '>'")
        target, _, label = text[start + 1 : end].partition("|")
        events.append(("link", _decode(target), _decode(label)))
        index = end + 1
    return events
