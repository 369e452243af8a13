"""Which folders the daemon watches for a reload, and which of their changes call for one.

The config file and the rules location are watched **as named** (absolute, symlinks not
followed), each from the folder that holds it, so that a change of what a name points to is
seen as well as a change of a file's bytes:

* an editor's or a deploy's save writes the file in place, or writes a copy and renames it over
  the file (rsync, ``sed -i``, most editors): either ends in a change to the file's name;
* a Kubernetes ConfigMap mounted as a folder changes all its files at once by pointing its
  ``..data`` symlink at a new versioned folder and deleting the old one; a deploy may swap a
  ``current`` symlink, or replace the rules folder with a new one, or delete it and create it
  again.

A rule file that is a symlink (``rules.d/10-refunds.yaml -> ../rules-available/…``) is
watched where it leads too: that is the file an admin edits.

Watches follow folders, not names: once a watched folder is replaced, deleted, or a symlink on
the way to it points elsewhere, its watch sees nothing any more. So :class:`WatchPlan` says what
each watched folder is now (:attr:`WatchPlan.identity`), and the daemon watches anew whenever it
changed. Only the rules folder's own files are rules (:func:`rulekit.rules.files.rule_files`),
so no folder is watched recursively: a folder holding the config, a busy SQLite store or a
virtualenv costs one watch, not one per subfolder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rulekit.rules.files import is_rules_file_name

KUBERNETES_DATA = "..data"
"""The symlink a Kubernetes ConfigMap or Secret volume flips to change its files at once."""


def _identity(folder: str) -> tuple[str, int, int] | None:
    """What ``folder`` is now: where it leads and which folder that is (None when gone)."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return os.path.realpath(folder), info.st_dev, info.st_ino


def _linked_rule_files(rules_dir: str) -> tuple[str, ...]:
    """Where the rule files of ``rules_dir`` that are symlinks lead (``rules.d/10-refunds.yaml
    -> ../rules-available/10-refunds.yaml``): the file edited is the one led to, in a folder
    of its own, and its changes are changes of the rules."""
    try:
        with os.scandir(rules_dir) as entries:
            links = sorted(
                entry.path
                for entry in entries
                if is_rules_file_name(entry.name) and entry.is_symlink()
            )
    except OSError:
        return ()
    return tuple(os.path.realpath(link) for link in links)


@dataclass(frozen=True)
class WatchPlan:
    """The folders to watch for a config file and a rules location, and the changes that
    call for a reload."""

    folders: tuple[str, ...]
    """Existing folders to watch (not recursively)."""
    targets: frozenset[str]
    """The config file and the rules location, as named and as symlinks lead (a change to
    one of these paths calls for a reload)."""
    rules_dir: str | None
    """The rules folder as named (its rule files' changes call for a reload)."""
    identity: tuple[Any, ...]
    """What each folder this plan was made from is now: when it changed, watch anew."""

    @classmethod
    def of(cls, config: Path | None, rules: Path) -> WatchPlan:
        """The plan for a config file (None: none) and a rules folder or file."""
        named = [os.path.abspath(path) for path in (config, rules) if path is not None]
        targets = set(named)
        folders: list[str] = []
        for path in named:
            folders.append(os.path.dirname(path))
            real = os.path.realpath(path)
            targets.add(real)  # a config that is a symlink to a file edited where it is
            folders.append(os.path.dirname(real))
        rules_named = os.path.abspath(rules)
        rules_dir = rules_named if os.path.isdir(rules_named) else None
        linked: tuple[str, ...] = ()
        if rules_dir is not None:
            folders.append(rules_dir)
            linked = _linked_rule_files(rules_dir)
            for real in linked:
                targets.add(real)
                folders.append(os.path.dirname(real))
        chosen = tuple(dict.fromkeys(folders))
        return cls(
            folders=tuple(folder for folder in chosen if os.path.isdir(folder)),
            targets=frozenset(targets),
            rules_dir=rules_dir,
            identity=(rules_dir, linked, *((folder, _identity(folder)) for folder in chosen)),
        )

    def relevant(self, change: Any, path: str) -> bool:
        """Whether a change to ``path`` (as the watch names it) calls for a reload."""
        if path in self.targets:
            return True
        head, name = os.path.split(path)
        if name == KUBERNETES_DATA:
            return True
        return head == self.rules_dir and is_rules_file_name(name)
