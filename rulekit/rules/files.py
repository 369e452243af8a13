"""Rules files: which files a rules path holds, reading one within its size bound, and how
paths are shown in messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rulekit import sources, yamlsource
from rulekit.errors import Location, RuleError
from rulekit.safetext import escape_controls

MAX_FILE_BYTES = 1024 * 1024
MAX_RULES_BYTES = 8 * MAX_FILE_BYTES
"""Bytes of all the files of one rules directory together (each within
:data:`MAX_FILE_BYTES`): a megabyte of rules takes up to 100 MB compiled, in the daemon and in
each worker, and up to 15 s to load, and nothing bounded how many such files a load read."""


class Allowance:
    """What is left of :data:`MAX_RULES_BYTES` while one load reads its files."""

    __slots__ = ("left", "over")

    def __init__(self) -> None:
        self.left = MAX_RULES_BYTES
        self.over = False


RULE_SUFFIXES = (".yaml", ".yml")


def rule_files(path: Path) -> list[Path]:
    """The YAML files of a rules directory, in name order (or the file itself)."""
    return sources.listing(path, _rule_files)


def is_rules_file_name(name: str) -> bool:
    """Whether a file of a rules directory named ``name`` holds rules (or a suite): a
    ``.yaml`` or ``.yml`` name not starting with a dot. Hidden names are what tools leave
    beside the files they write, not rules: macOS's ``._10-greeting.yaml`` (binary, from a
    copy or an archive), Emacs's ``.#10-greeting.yaml`` lock, the temporary files of editors
    and deploy tools that write a copy and rename it over the file, and Kubernetes'
    ``..data`` folders."""
    return not name.startswith(".") and name.endswith(RULE_SUFFIXES)


def _rule_files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(2, "no such file or directory", str(path))
    if not path.is_dir():  # a file, or a FIFO or a device: reading refuses those, saying so
        return [path]
    return sorted(p for p in path.iterdir() if is_rules_file_name(p.name) and p.is_file())


def display_path(path: Path) -> str:
    """A path as people should read it in messages: relative to the working directory when
    it is inside it, as named (symlinks not followed: a ConfigMap's versioned folder is not
    what the admin wrote), with the characters a terminal acts on written as escapes (a name
    may hold a newline that would forge a message line, or bytes that are no UTF-8)."""
    named = os.path.abspath(path)
    try:
        shown = str(Path(named).relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return escape_controls(shown)


def is_suite(data: Any) -> bool:
    """A YAML document with a top-level ``tests:`` key is a rule test suite, not rules."""
    return isinstance(data, dict) and "tests" in data


def read_rules_file(
    file: Path, errors: list[RuleError], digest: Any, allowance: Allowance | None = None
) -> Any:
    """The YAML document of ``file``, its name and bytes added to ``digest`` (the rule set's
    version); None, with the problem added to ``errors``, when it cannot be read or parsed, or
    when it would take the files read with ``allowance`` over :data:`MAX_RULES_BYTES` (said
    once, at the first file over it; the files after it are not read)."""
    name = display_path(file)
    if allowance is not None and allowance.over:
        return None
    try:
        raw = sources.read_bytes(file, MAX_FILE_BYTES)
    except sources.FileTooLarge:
        errors.append(RuleError(f"the file is over {MAX_FILE_BYTES} bytes", Location(name)))
        return None
    except OSError as exc:
        errors.append(RuleError(f"cannot read the file: {exc.strerror}", Location(name)))
        return None
    if allowance is not None:
        if len(raw) > allowance.left:
            allowance.over = True
            errors.append(
                RuleError(
                    f"the rules files are over {MAX_RULES_BYTES} bytes together: this file and "
                    "those after it are not loaded",
                    Location(name),
                )
            )
            return None
        allowance.left -= len(raw)
    digest.update(name.encode() + b"\0" + raw)
    try:
        return yamlsource.load(raw)
    except yamlsource.YamlSyntaxError as exc:
        errors.append(RuleError(f"invalid YAML: {exc.message}", Location(name, exc.line)))
        return None
