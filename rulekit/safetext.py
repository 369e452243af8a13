"""Outside text made safe to print: one place for terminal and log output, linear time.

Event data (ids, names, message texts), request paths and rule files may hold characters that a
terminal or a log viewer acts on instead of showing: ``ESC[2J`` clears the screen, OSC 52
(``ESC]52;…BEL``) writes the clipboard, ``\\r`` overwrites a line, ``\\n`` forges one, C1
controls (U+0080 to U+009F) are 8-bit escapes, bidi overrides (U+202E …) reorder what is shown.
:func:`escape_controls` renders each of them visibly (``\\x1b``, ``\\u202e``); every text output
of the CLI and every text log line goes through it. :func:`dumps_json` is ``json.dumps`` with the
same characters written as ``\\uXXXX`` escapes, so JSON output stays valid JSON and still
prints safely.

Every function here is linear in the length of its input (``str.translate``, ``str.find``; no
regex).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

UNSAFE: frozenset[int] = frozenset(
    [
        *range(0x00, 0x20),  # C0 controls
        *range(0x7F, 0xA0),  # DEL, C1 controls
        *(0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)),  # bidi
        *(0x2028, 0x2029),  # line and paragraph separators
        *range(0xD800, 0xE000),  # lone surrogates (cannot be written as UTF-8)
    ]
)
"""The code points :func:`escape_controls` escapes."""

BIDI_CONTROLS: frozenset[int] = frozenset(
    [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
"""The bidi control characters: marks (ALM, LRM, RLM), embeddings and overrides (LRE … RLO,
PDF) and isolates (LRI … PDI). Each is invisible; an override or an unclosed embedding
reorders what follows it (``evil\u202etxt.exe`` shows as ``evilexe.txt``)."""
_NO_BIDI = dict.fromkeys(BIDI_CONTROLS)


def without_bidi_controls(text: str) -> str:
    """``text`` without its bidi control characters (:data:`BIDI_CONTROLS`): it shows its
    characters in the order they were written, and cannot reorder the text around it."""
    if not any(chr(code) in text for code in BIDI_CONTROLS):
        return text  # the usual case: no copy
    return text.translate(_NO_BIDI)


INVISIBLE: frozenset[int] = frozenset([0x00AD, 0x180E, 0x200B, *range(0x2060, 0x2065), 0xFEFF])
"""Characters that show nothing at all (soft hyphen, zero-width space, word joiner, invisible
operators, byte order mark): a name holding one looks like another name."""
_LINE_BREAKS = frozenset([0x09, 0x0A, 0x0D])

_SHORT = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_VISIBLE = {
    code: _SHORT.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in UNSAFE
}
# json.dumps escapes C0 controls itself
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in UNSAFE if code >= 0x20}


def escape_controls(text: str) -> str:
    """``text`` with every control, bidi and separator character (and lone surrogate) written
    as a visible escape: ``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\x9b``, ``\\u202e``. The result
    holds no character a terminal acts on, and no line break."""
    return text.translate(_VISIBLE)


def text_problem(text: str, *, multiline: bool = False) -> str | None:
    """Why ``text`` a person sent cannot be kept as it is, or None: it holds a control
    character (with ``multiline``, tab and line breaks are allowed), a bidi control, a line
    separator or a lone surrogate. Linear in ``len(text)``."""
    for char in text:
        code = ord(char)
        if code in UNSAFE and not (multiline and code in _LINE_BREAKS):
            return f"holds {_kind(code)} ({_VISIBLE[code]})"
    return None


def _kind(code: int) -> str:
    if code < 0x20 or 0x7F <= code < 0xA0:
        return "a control character"
    if 0xD800 <= code < 0xE000:
        return "a lone surrogate"
    if code in (0x2028, 0x2029):
        return "a line separator character"
    return "a bidi control character"


def name_problem(text: str) -> str | None:
    """Why ``text`` cannot be a name (a tag, a field shown in a list), or None: what
    :func:`text_problem` refuses, and characters that show nothing (:data:`INVISIBLE`)."""
    problem = text_problem(text)
    if problem is not None:
        return problem
    for char in text:
        if ord(char) in INVISIBLE:
            return f"holds an invisible character (\\u{ord(char):04x})"
    return None


def text_lines(lines: Iterable[str]) -> str:
    """Lines of output joined with newlines (and one at the end); each line escaped by
    :func:`escape_controls`, so a value holding ``\\n`` cannot start a line of its own."""
    return "".join(escape_controls(line) + "\n" for line in lines)


def printable(text: str) -> str:
    """Multi-line ``text`` with its line breaks kept and everything else escaped: for output
    whose lines are already laid out (the line breaks are the program's own)."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


def dumps_json(document: Any, **options: Any) -> str:
    """``json.dumps(document, ensure_ascii=False, **options)`` with DEL, C1 controls, bidi
    characters, separators and lone surrogates written as ``\\uXXXX``: valid JSON that prints
    safely (JSON already escapes C0 controls) and always encodes as UTF-8."""
    return json.dumps(document, ensure_ascii=False, **options).translate(_JSON_ESCAPES)


def replace_folded(text: str, values: Iterable[str], replacement: str) -> str:
    """``text`` with every occurrence of each of ``values`` (case-folded strings), compared
    case-insensitively (``str.casefold``), replaced by ``replacement``; occurrences that overlap
    are replaced together. Linear in ``len(text)`` for each value: ``str.find`` never goes
    back (unlike a regex alternation, which retries every value at every position)."""
    wanted = [value for value in values if value]
    if not wanted or not text:
        return text
    folded = text.casefold()
    spans: list[tuple[int, int]] = []
    for value in wanted:
        start = folded.find(value)
        while start != -1:
            spans.append((start, start + len(value)))
            start = folded.find(value, start + len(value))
    if not spans:
        return text
    origin = _origins(text, folded)
    out: list[str] = []
    done = 0  # in ``text``
    end = -1  # of the current merged span, in ``folded``
    for start, stop in sorted(spans):
        if start < end:
            end = max(end, stop)
            continue
        if end != -1:
            done = origin[end - 1] + 1
        out.append(text[done : origin[start]])
        out.append(replacement)
        end = stop
    out.append(text[origin[end - 1] + 1 :])
    return "".join(out)


def _origins(text: str, folded: str) -> list[int] | range:
    """For each position of ``folded``, the position of the character of ``text`` it comes
    from (a character that folds to several: all of them map to it)."""
    if len(folded) == len(text):
        return range(len(text))
    origin: list[int] = []
    for index, char in enumerate(text):
        origin.extend([index] * len(char.casefold()))
    return origin


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``text`` (to stderr with ``err``) through :func:`printable`: its line breaks kept,
    every other control, C1 or bidi character escaped. Every text the commands print goes
    through here, so event data cannot drive the terminal."""
    import click

    click.echo(printable(text), err=err, nl=nl)


def echo_json_list(key: str, items: Iterable[Any]) -> None:
    """Print ``{key: [items...]}`` as :func:`echo_json` would, one item at a time as they
    come: a long listing is never held whole, neither as values nor as text."""
    import click

    first = True
    for item in items:
        lines = dumps_json(item, indent=2, default=str).split("\n")
        head = f"{{\n  {dumps_json(key)}: [\n" if first else ",\n"
        click.echo(head + "\n".join("    " + line for line in lines), nl=False)
        first = False
    click.echo(f"{{\n  {dumps_json(key)}: []\n}}" if first else "\n  ]\n}")


def echo_json(document: Any) -> None:
    """Print a JSON document with :func:`dumps_json` (indented; non-JSON values as strings)."""
    import click

    click.echo(dumps_json(document, indent=2, default=str))
