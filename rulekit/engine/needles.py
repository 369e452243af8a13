"""Which of many substrings a text contains, in time linear in the text.

Testing ``needle in text`` for each of the needles of a bucket (``'refund' in message.text|lower``
rules) reads the text once per needle: a 4 MB message against thousands of needles takes
minutes. An RE2 set of the needles as literals reads it once per set (a DFA that is an
Aho-Corasick automaton) and reports every needle found.

RE2 builds the automaton's states as the text reaches them, within a memory budget; a search
that runs out of it reports nothing rather than failing. Each set therefore holds needles of at
most :data:`SET_BYTES` bytes in all and gets the memory their automaton can need at most (one
state per byte of the needles, twice over for the match marks), so it never runs out.
"""

from __future__ import annotations

from collections.abc import Sequence

import re2

SET_BYTES = 4_000
"""Bytes of needles per RE2 set (a bucket with more needles gets several sets)."""
_STATE_BYTES = 8 * 257 + 128
"""An upper bound of one DFA state's memory (its transitions, its threads, bookkeeping)."""


class NeedleSets:
    """Needles (indexed in the order given) as RE2 sets."""

    def __init__(self, needles: Sequence[str]) -> None:
        self._sets: list[tuple[re2.Set, list[int]]] = []
        chunk: list[int] = []
        size = 0
        for index, needle in enumerate(needles):
            length = len(needle.encode("utf-8", "surrogatepass"))
            if chunk and size + length > SET_BYTES:
                self._add(needles, chunk, size)
                chunk, size = [], 0
            chunk.append(index)
            size += length
        if chunk:
            self._add(needles, chunk, size)

    def _add(self, needles: Sequence[str], chunk: list[int], size: int) -> None:
        options = re2.Options()
        options.literal = True
        longest = max(len(needles[i].encode("utf-8", "surrogatepass")) for i in chunk)
        states = 2 * (size + 1)
        # the DFA gets two thirds of max_mem, after the compiled program
        options.max_mem = (8 << 20) + 3 * states * (_STATE_BYTES + 8 * longest) // 2
        found = re2.Set.SearchSet(options)
        for i in chunk:
            found.Add(needles[i])
        found.Compile()
        self._sets.append((found, chunk))

    def found(self, text: str) -> list[int]:
        """The indexes of the needles ``text`` contains (in no particular order). Raises
        ``UnicodeEncodeError`` for a text that is not valid Unicode (a lone surrogate)."""
        out: list[int] = []
        for found, chunk in self._sets:
            hits = found.Match(text)
            if hits:
                out.extend(chunk[i] for i in hits)
        return out
