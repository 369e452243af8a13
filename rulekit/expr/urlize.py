"""The ``urlize`` filter, in time linear in its text.

Jinja2's ``urlize`` finds a word's trailing punctuation with ``re.search(r"([)>.,\\n]|&gt;)+$")``:
a word of many ``)`` (or ``>``), then a letter and a final ``.`` makes that search start again
at every ``)`` and scan to the letter: quadratic, inside one C call that no budget can
interrupt (a client message of 100,000 characters held a render for minutes). This is Jinja2
3.1's algorithm and output, word for word, with the trailing punctuation stripped from the end
one token at a time and the parentheses balanced in one pass.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2.exceptions import FilterArgumentError
from jinja2.nodes import EvalContext
from jinja2.utils import pass_eval_context
from markupsafe import Markup, escape

__all__ = ["urlize", "urlize_filter"]

# Jinja2 3.1's patterns (jinja2.utils, jinja2.filters): each anchored and without nested
# repetition over the same characters, so linear in the word they read.
_HTTP = re.compile(
    r"""
    ^
    (
        (https?://|www\.)  # scheme or www
        (([\w%-]+\.)+)?  # subdomain
        (
            [a-z]{2,63}  # basic tld
        |
            xn--[\w%]{2,59}  # idna tld
        )
    |
        ([\w%-]{2,63}\.)+  # basic domain
        (com|net|int|edu|gov|org|info|mil)  # basic tld
    |
        (https?://)  # scheme
        (
            (([\d]{1,3})(\.[\d]{1,3}){3})  # IPv4
        |
            (\[([\da-f]{0,4}:){2}([\da-f]{0,4}:?){1,6}])  # IPv6
        )
    )
    (?::[\d]{1,5})?  # port
    (?:[/?#]\S*)?  # path, query, and fragment
    $
    """,
    re.IGNORECASE | re.VERBOSE,
)
_EMAIL = re.compile(r"^\S+@\w[\w.-]*\.\w+$")
_LEAD = re.compile(r"^([(<]|&lt;)+")
_SCHEME = re.compile(r"^([\w.+-]{2,}:(/){0,2})$")
_TRAILING = (")", ">", ".", ",", "\n")


def _tail_start(word: str) -> int:
    """Where the trailing punctuation of ``word`` starts: ``)``, ``>``, ``.``, ``,``, a line
    break and ``&gt;``, read from the end (each token is known by its last character, so the
    longest such suffix is found in one pass)."""
    end = len(word)
    while end:
        if word.endswith(_TRAILING, 0, end):
            end -= 1
        elif word.endswith("&gt;", 0, end):
            end -= 4
        else:
            break
    return end


def _balance(middle: str, tail: str) -> tuple[str, str]:
    """Jinja2's balancing of brackets: as many closing ones as the word opens, and whatever
    precedes them, move from the tail back into the word."""
    for start_char, end_char in ("(", ")"), ("<", ">"), ("&lt;", "&gt;"):
        start_count = middle.count(start_char)
        if start_count <= middle.count(end_char):
            continue
        end = 0
        for _ in range(min(start_count, tail.count(end_char))):
            end = tail.index(end_char, end) + len(end_char)
        middle, tail = middle + tail[:end], tail[end:]
    return middle, tail


def urlize(
    text: str,
    trim_url_limit: int | None = None,
    rel: str | None = None,
    target: str | None = None,
    extra_schemes: Any = None,
) -> str:
    """Jinja2's :func:`jinja2.utils.urlize`: links for the URLs and addresses in ``text``."""

    def trim_url(url: str) -> str:
        if trim_url_limit is not None and len(url) > trim_url_limit:
            return f"{url[:trim_url_limit]}..."
        return url

    words = re.split(r"(\s+)", str(escape(text)))
    rel_attr = f' rel="{escape(rel)}"' if rel else ""
    target_attr = f' target="{escape(target)}"' if target else ""
    for i, word in enumerate(words):
        head, middle, tail = "", word, ""
        lead = _LEAD.match(middle)
        if lead:
            head = lead.group()
            middle = middle[lead.end() :]
        end = _tail_start(middle)
        if end < len(middle):
            middle, tail = middle[:end], middle[end:]
        middle, tail = _balance(middle, tail)
        if _HTTP.match(middle):
            href = middle if middle.startswith(("https://", "http://")) else f"https://{middle}"
            middle = f'<a href="{href}"{rel_attr}{target_attr}>{trim_url(middle)}</a>'
        elif middle.startswith("mailto:") and _EMAIL.match(middle[7:]):
            middle = f'<a href="{middle}">{middle[7:]}</a>'
        elif (
            "@" in middle
            and not middle.startswith("www.")
            and not middle.startswith("@")
            and ":" not in middle
            and _EMAIL.match(middle)
        ):
            middle = f'<a href="mailto:{middle}">{middle}</a>'
        elif extra_schemes is not None:
            for scheme in extra_schemes:
                if middle != scheme and middle.startswith(scheme):
                    middle = f'<a href="{middle}"{rel_attr}{target_attr}>{middle}</a>'
        words[i] = f"{head}{middle}{tail}"
    return "".join(words)


@pass_eval_context
def urlize_filter(
    eval_ctx: EvalContext,
    value: str,
    trim_url_limit: int | None = None,
    nofollow: bool = False,
    target: str | None = None,
    rel: str | None = None,
    extra_schemes: Any = None,
) -> str:
    """The ``urlize`` filter: Jinja2's arguments and policies, with :func:`urlize`."""
    policies = eval_ctx.environment.policies
    rel_parts = set((rel or "").split())
    if nofollow:
        rel_parts.add("nofollow")
    rel_parts.update((policies["urlize.rel"] or "").split())
    rel = " ".join(sorted(rel_parts)) or None
    if target is None:
        target = policies["urlize.target"]
    if extra_schemes is None:
        extra_schemes = policies["urlize.extra_schemes"] or ()
    for scheme in extra_schemes:
        if _SCHEME.fullmatch(scheme) is None:
            raise FilterArgumentError(f"{scheme!r} is not a valid URI scheme prefix.")
    result = urlize(value, trim_url_limit, rel, target, extra_schemes)
    return Markup(result) if eval_ctx.autoescape else result
