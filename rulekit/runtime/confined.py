"""What the daemon's helper processes are given of its environment and config: none of its
secrets.

An evaluation worker runs admin-written conditions and templates on client data; it needs no
token, password or webhook URL (it sends nothing: the daemon's dispatcher does). So that a
sandbox escape, a plugin's bug or a worker's crash dump holds none of them:

* the fork server the helpers are started from is started with only the variables Python and
  the locale need (:func:`base_environment`): a forked process keeps its parent's initial
  environment in memory (``/proc/<pid>/environ``) whatever it sets afterwards;
* a worker's environment is that, plus what the rules may read (the config's ``env`` and
  ``RULEKIT_*``), less every variable that holds a configured secret
  (:func:`worker_environment`);
* the worker loads the config with each secret masked (:func:`masked`): the ``${NAME}``
  variables the file names are given to its interpolation with their secrets masked
  (:func:`interpolation_environment`), and secrets written in the file itself are masked in
  the bytes it replays (:func:`worker_files`). A masked value keeps the shape its setting is
  validated against (an http(s) URL keeps its scheme and host), so the worker loads the same
  rules and plans the same actions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from rulekit import yamlsource
from rulekit.interpolation import _VAR
from rulekit.secrets import MIN_SECRET_IN_VALUE, without_secrets
from rulekit.sources import Files

KEPT = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TZDIR", "TMPDIR", "TEMP", "TMP", "VIRTUAL_ENV"}
)
"""Variables Python, the C library and the locale read (kept for every helper process)."""
KEPT_PREFIXES = ("LC_", "PYTHON")
MASK = "redacted"
"""What a secret reads as in a helper process (a word every setting's validation accepts)."""


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that Python and the locale need, and only those."""
    return {
        name: value
        for name, value in environ.items()
        if name in KEPT or name.startswith(KEPT_PREFIXES)
    }


def worker_environment(
    environ: Mapping[str, str], allowed: Mapping[str, str], secrets: Iterable[str]
) -> dict[str, str]:
    """An evaluation worker's environment: :func:`base_environment` and the variables rules
    may read (``allowed``: :meth:`rulekit.config.Config.allowed_env`), less any that holds one
    of ``secrets``."""
    return without_secrets({**base_environment(environ), **allowed}, secrets)


def masked(value: str) -> str:
    """``value`` (which holds a secret) with the secret gone: an http(s) URL as its scheme and
    host (what its setting is validated against), anything else as :data:`MASK`."""
    try:
        parts = urlsplit(value)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return MASK
    if parts.scheme and host and "://" in value:
        return f"{parts.scheme}://{host}/{MASK}"
    return MASK


class _Secrets:
    """The secrets to mask, and how each string that holds one reads once masked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.whole = {secret for secret in secrets if secret}
        # longest first: a secret holding another is masked whole
        self.inside = sorted(
            (secret for secret in self.whole if len(secret) >= MIN_SECRET_IN_VALUE),
            key=len,
            reverse=True,
        )

    def scrub(self, value: str) -> str:
        """``value`` :func:`masked` when it is a secret, else with each secret it holds (of
        :data:`~rulekit.secrets.MIN_SECRET_IN_VALUE` characters or more) masked."""
        if value in self.whole:
            return masked(value)
        for secret in self.inside:
            if secret in value:
                value = value.replace(secret, masked(secret))
        return value

    def tree(self, value: Any) -> Any:
        """A YAML tree with each string value (not key) scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {key: self.tree(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.tree(item) for item in value]
        return value


def interpolation_environment(
    config_text: bytes | None, environ: Mapping[str, str], secrets: Iterable[str]
) -> dict[str, str]:
    """The variables the config file names (``${NAME}``), their secrets masked: what the
    worker's load interpolates."""
    if not config_text:
        return {}
    hidden = _Secrets(secrets)
    names = {match.group(1) for match in _VAR.finditer(config_text.decode("utf-8", "replace"))}
    return {name: hidden.scrub(environ[name]) for name in names if name in environ}


def worker_files(
    files: Files, config_path: str | os.PathLike[str] | None, secrets: Iterable[str]
) -> Files:
    """``files`` with the secrets written in the config file masked.

    Each secret's text is replaced in the file's bytes, which is kept only when the file then
    reads as the same tree with exactly its secret values masked (a secret that also spells part
    of a key, or that YAML quotes with escapes, would change something else): otherwise the
    file goes as it is, and the worker loads its secrets as the daemon did."""
    if config_path is None:
        return files
    key = os.path.abspath(config_path)
    data = files.get(key)
    hidden = _Secrets(secrets)
    if not isinstance(data, bytes) or not hidden.whole:
        return files
    text = data.decode("utf-8", "replace")
    if not any(secret in text for secret in hidden.whole):
        return files
    replaced = text
    for secret in sorted(hidden.whole, key=len, reverse=True):
        replaced = replaced.replace(secret, masked(secret))
    try:
        if yamlsource.load(replaced.encode()) != hidden.tree(yamlsource.load(data)):
            return files
    except (yamlsource.YamlSyntaxError, ValueError, RecursionError):
        return files
    return {**files, key: replaced.encode()}
