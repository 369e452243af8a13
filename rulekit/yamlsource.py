"""Reading YAML the way people mean it, with line numbers kept.

* Safe loading only, through libyaml's C parser when it is installed.
* Booleans are ``true``/``false`` only: YAML 1.1 would read ``on``, ``off``, ``yes`` and ``no`` as
  booleans, which turns a rule's ``on:`` key into ``True`` and a reply text of ``no`` into
  ``False``. Here they stay strings.
* Duplicate keys in one mapping are errors, not a silent "last one wins".
* Mappings and lists remember the line of each entry, so validation errors can say where.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # libyaml's loader, when installed, has the same interface
    _Base = yaml.SafeLoader
else:
    _Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"


class LineDict(dict[Any, Any]):
    """A mapping read from YAML; ``lines[key]`` is the line (1-based) where ``key`` was written."""

    __slots__ = ("line", "lines")

    def __init__(self, *args: Any, line: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = line
        self.lines: dict[Any, int] = {}


class LineList(list[Any]):
    """A list read from YAML; ``lines[i]`` is the line where item ``i`` starts."""

    __slots__ = ("line", "lines")

    def __init__(self, *args: Any, line: int | None = None) -> None:
        super().__init__(*args)
        self.line = line
        self.lines: list[int] = []


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key
        self.line = line


class Loader(_Base):
    """Safe loader with YAML 1.2 booleans, duplicate-key errors and line numbers."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_yaml_map(self, node: yaml.MappingNode) -> Generator[LineDict]:
        data = LineDict(line=node.start_mark.line + 1)
        yield data
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in data:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            data[key] = self.construct_object(value_node, deep=True)
            data.lines[key] = key_node.start_mark.line + 1

    def construct_yaml_seq(self, node: yaml.SequenceNode) -> Generator[LineList]:
        data = LineList(line=node.start_mark.line + 1)
        yield data
        for item in node.value:
            data.append(self.construct_object(item, deep=True))
            data.lines.append(item.start_mark.line + 1)


Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_yaml_map)
Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_yaml_seq)


class YamlSyntaxError(Exception):
    """The text is not valid YAML; ``line`` tells where (1-based), when known."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def load(text: str | bytes) -> Any:
    """Parse one YAML document; raise :class:`YamlSyntaxError` with a line on bad input."""
    try:
        return yaml.load(text, Loader=Loader)
    except DuplicateKeyError as exc:
        raise YamlSyntaxError(str(exc), exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlSyntaxError(reason, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc).splitlines()[0], None) from None


def line_of(root: Any, path: tuple[Any, ...]) -> int | None:
    """The line where ``path`` (keys and indexes from ``root``) was written, as close as known."""
    line = getattr(root, "line", None)
    node = root
    for part in path:
        if isinstance(node, LineDict) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line
