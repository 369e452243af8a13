"""Python's pattern syntax where RE2 reads it otherwise: its repeats (:func:`python_repeat`)
and its word boundaries (:func:`boundary_problem`), for :mod:`rulekit.expr.patterns`."""

from __future__ import annotations

ASCII_FLAG = "(?a)"
"""A pattern's leading flag that makes ``\\w``, ``\\d``, ``\\s`` and ``\\b`` ASCII-only, as in
Python."""


def boundary_problem(pattern: str) -> str | None:
    """Why a ``\\b`` or ``\\B`` of ``pattern`` would fall elsewhere on RE2 than in Python:
    RE2's word boundary knows only ASCII letters, Python's (without ``(?a)``) those of every
    script. Beside what matches only ASCII (``\\bref``, ``\\s\\b``) or digits (``\\b\\d+``)
    they agree but where the text itself puts a letter (or digit) of another script there;
    beside a letter of another script, or what may match one (``\\b\\w+\\b``, ``.``,
    ``[^ ]``, ``\\p{L}``), they differ wherever the text holds one: ``\\b\\w+\\b`` found
    ``caf`` in ``café``."""
    if pattern.startswith(ASCII_FLAG):
        return None  # Python's \b is ASCII-only then too
    atoms = _atoms(pattern)
    for at, (kind, text, _) in enumerate(atoms):
        if kind != "boundary":
            continue
        before = at - 1
        while before >= 0 and atoms[before][0] == "repeat":
            before -= 1  # (`\w+\b`: the atom repeated)
        beside = [atoms[i] for i in (before, at + 1) if 0 <= i < len(atoms)]
        wide_beside = next((atom for atom in beside if atom[2]), None)
        if wide_beside is None:
            continue
        what = wide_beside[1]
        if len(what) == 1 and what.isalnum():
            what = f"a letter outside ASCII ({what})"
        return (
            f"pattern {pattern!r}: {text} next to {what} does not fall where Python's does: "
            "RE2's word boundary knows only ASCII letters, and that may be a letter of another "
            r"script (write (?:^|[^\w]) and (?:$|[^\w]) around the word, or start the pattern "
            r"with (?a) to make \w and \b ASCII-only)"
        )
    return None


def _atoms(pattern: str) -> list[tuple[str, str, bool]]:
    """``pattern`` outside groups' structure, as far as word boundaries care: each atom as
    (``boundary``, ``repeat`` or ``atom``; its text; whether it may match a letter or digit
    outside ASCII). Groups are not looked into: ``(\\w)\\b`` goes unchecked."""
    atoms: list[tuple[str, str, bool]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            following = pattern[index + 1]
            end = index + 2
            if following in "pP":  # \pL, \p{Greek}
                close = pattern.find("}", end) if pattern.startswith("{", end) else end
                end = (close if close != -1 else len(pattern) - 1) + 1
            if following in "bB":
                atoms.append(("boundary", pattern[index:end], False))
            else:
                wide = following in "wWDSpP" or (following.isalnum() and not following.isascii())
                atoms.append(("atom", pattern[index:end], wide))
            index = end
        elif char == "[":
            end = index + 1
            end += 1 if pattern.startswith("^", end) else 0
            end += 1 if pattern.startswith("]", end) else 0  # `[]a]`: a leading ] is text
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            text = pattern[index : end + 1]
            inner = text[1:-1]
            wide = (
                inner.startswith("^")
                or any((c.isalnum() and not c.isascii()) for c in inner)
                or any(f"\\{c}" in inner for c in "wWDpP")
            )
            atoms.append(("atom", text, wide))
            index = end + 1
        elif char in "*+?":
            atoms.append(("repeat", char, False))
            index += 1
        elif char == "{" and (repeat := python_repeat(pattern, index)) is not None:
            atoms.append(("repeat", pattern[index : repeat[1]], False))
            index = repeat[1]
        else:
            atoms.append(("atom", char, char == "." or (char.isalnum() and not char.isascii())))
            index += 1
    return atoms


_DIGITS = frozenset("0123456789")


def python_repeat(pattern: str, index: int) -> tuple[str, int] | None:
    """The repeat Python reads at ``pattern[index]`` (``{`` digits, optionally ``,`` and
    digits, ``}``; not ``{}``) in RE2's spelling, and the index after it; None when Python
    reads the ``{`` as text. RE2 reads ``a{,3}``, ``a{,}`` and ``a{02}`` as text, and Python
    as up to three, any number and two."""
    end = pattern.find("}", index)
    inside = pattern[index + 1 : end]
    low, comma, high = inside.partition(",")
    if end == -1 or not inside or not set(low) <= _DIGITS or not set(high) <= _DIGITS:
        return None
    if not comma:
        return f"{{{int(low)}}}", end + 1
    return f"{{{int(low or 0)},{int(high) if high else ''}}}", end + 1


POSIX_CLASSES = frozenset(
    {
        *("alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print"),
        *("punct", "space", "upper", "word", "xdigit"),
    }
)
"""The classes RE2 reads as ``[:name:]`` (or ``[:^name:]``) inside ``[...]``."""


def posix_class(pattern: str, index: int) -> str | None:
    """The POSIX class RE2 reads at ``pattern[index]``, inside ``[...]`` (``[:alpha:]``), or
    None. Python reads its characters one by one."""
    if not pattern.startswith("[:", index):
        return None
    end = pattern.find(":]", index + 2)
    name = pattern[index + 2 : end].removeprefix("^")
    return pattern[index : end + 2] if end != -1 and name in POSIX_CLASSES else None
