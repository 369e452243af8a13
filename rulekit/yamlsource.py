"""Reading YAML the way people mean it, with line numbers kept.

* Safe loading only, through libyaml's C parser when it is installed.
* Booleans are ``true``/``false`` only: YAML 1.1 would read ``on``, ``off``, ``yes`` and ``no`` as
  booleans, which turns a rule's ``on:`` key into ``True`` and a reply text of ``no`` into
  ``False``. Here they stay strings.
* Duplicate keys in one mapping are errors, not a silent "last one wins".
* Mappings and lists remember the line of each entry, so validation errors can say where.
* Bounded work, whatever the file says (an admin's typo or a hostile file must not hang
  ``rulekit check``, the start or a hot reload): aliases may repeat at most
  :data:`MAX_ALIAS_VALUES` values and :data:`MAX_ALIAS_TEXT` characters in all (a 600-byte
  "billion laughs" file would expand to billions), an alias may not refer to a value that
  contains it, merge keys (``<<``) and lists or mappings as keys are refused, values nest at
  most :data:`MAX_DEPTH` deep. Each refusal is a :class:`YamlSyntaxError` with the line (a file's
  size is capped before it is read: :func:`rulekit.sources.read_file`).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import yaml
from yaml.constructor import ConstructorError

if TYPE_CHECKING:  # libyaml's loader, when installed, has the same interface
    _Base = yaml.SafeLoader
else:
    _Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp", "binary")
)
"""Scalar tags built by PyYAML's safe constructors; others (``!!set``, ``!!omap``, unknown
tags) take PyYAML's own path, which builds or refuses them."""
_MAX_REMEMBERED_TEXT = 64
_MAX_REMEMBERED_TAGS = 4096
_plain_tags: dict[str, str] = {}

MAX_ALIAS_VALUES = 100_000
"""Most values aliases may repeat in one document, counted expanded (``*a`` repeating a list of
ten strings adds eleven)."""
MAX_ALIAS_TEXT = 1024 * 1024
"""Most characters of text aliases may repeat in one document, counted expanded (as much again
as the largest file: a long template repeated by aliases is compiled once per use)."""
MAX_SHARED = 64
"""Texts up to this length are kept once however often a file repeats them (a channel, an
event, an action's name in each of a thousand rules)."""
MAX_DEPTH = 100
"""Deepest nesting of mappings and lists in one document."""
MAX_INT_TEXT = 4300
"""Most characters of a base-60 integer (``1:30:00``), as Python allows an integer's digits:
PyYAML computes one part at a time on an ever larger number, so its time grows with the
square of the text (an 800 KB one took 23 s of CPU)."""


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


class _AliasBudget:
    """What aliases have repeated so far in one document, within :data:`MAX_ALIAS_VALUES` values
    and :data:`MAX_ALIAS_TEXT` characters."""

    def __init__(self) -> None:
        self.values = 0
        self.text = 0

    def repeat(self, size: tuple[int, int], node: yaml.Node) -> None:
        """Count one more use of ``node`` (``size``: the values and characters it expands to);
        raise once the document repeats too much."""
        self.values += size[0]
        self.text += size[1]
        if self.values > MAX_ALIAS_VALUES or self.text > MAX_ALIAS_TEXT:
            raise ConstructorError(
                None,
                None,
                f"aliases repeat too much: expanded, they add over {MAX_ALIAS_VALUES} "
                f"values or {MAX_ALIAS_TEXT} characters (the value written on this line is "
                "repeated too often)",
                node.start_mark,
            )


def _self_reference(node: yaml.Node) -> ConstructorError:
    """The error for an alias inside the value it refers to."""
    return ConstructorError(
        None, None, "an alias refers to a value that contains it", node.start_mark
    )


class Loader(_Base):
    """Safe loader with YAML 1.2 booleans, duplicate-key errors, line numbers and bounds."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        # values and characters each finished node expands to
        self._sizes: dict[yaml.Node, tuple[int, int]] = {}
        self._values = 0
        self._text = 0
        self._aliases = _AliasBudget()
        self._depth = 0

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """The tag of a node without an explicit one; a plain scalar's tag depends only on its
        text, and rules files repeat the same few keys and values, so short ones are
        remembered."""
        if kind is yaml.ScalarNode and implicit[0] and len(value) <= _MAX_REMEMBERED_TEXT:
            tag = _plain_tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
                if len(_plain_tags) < _MAX_REMEMBERED_TAGS:
                    _plain_tags[value] = tag
            return tag
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """YAML 1.1 integers, base-60 ones (``1:30``) of at most :data:`MAX_INT_TEXT`
        characters (longer ones are as much work as Python refuses for decimal digits)."""
        text = node.value
        if ":" in text and len(text) > MAX_INT_TEXT:
            raise ValueError(f"Exceeds the limit ({MAX_INT_TEXT} characters) for a base-60 integer")
        return super().construct_yaml_int(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Construct ``node``, counting what aliases repeat and how deep values nest."""
        if node in self.recursive_objects:  # an alias inside the value it refers to
            raise _self_reference(node)
        if node in self.constructed_objects:  # an alias of a node already built
            size = self._sizes.get(node)
            if size is None:
                raise _self_reference(node)
            values, text = size
            self._values += values
            self._text += text
            self._aliases.repeat(size, node)
            return self.constructed_objects[node]
        # the root is level 1; the levels under it are built inside their parent (``deep``)
        if self._depth + (2 if deep or self.deep_construct else 1) > MAX_DEPTH:
            raise ConstructorError(
                None, None, f"values nest more than {MAX_DEPTH} levels deep", node.start_mark
            )
        self._depth += 1
        before = (self._values, self._text)
        self._values += 1
        if isinstance(node, yaml.ScalarNode):
            self._text += len(node.value)
        try:
            data = super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. an integer of 10,000 digits
            message = str(exc).split(";")[0]
            raise ConstructorError(
                None, None, f"cannot read this value: {message}", node.start_mark
            ) from None
        finally:
            self._depth -= 1
        if deep or self.deep_construct:  # the document's root is built later, not here
            self._sizes[node] = (self._values - before[0], self._text - before[1])
        return data

    def construct_yaml_map(self, node: yaml.MappingNode) -> Generator[LineDict]:
        data = LineDict(line=node.start_mark.line + 1)
        yield data
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                raise ConstructorError(
                    None, None, "merge keys ('<<') are not supported", key_node.start_mark
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping",
                    key_node.start_mark,
                )  # fmt: skip
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
Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_yaml_map)
Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_yaml_seq)


class YamlSyntaxError(Exception):
    """The text is not valid YAML; ``line`` tells where (1-based), when known."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _NotPlain(Exception):
    """A node :class:`_Builder` leaves to PyYAML's constructors (a ``!!set``, a custom tag)."""


class _Builder:
    """Plain data from a composed node tree, in one pass: what :class:`Loader` builds, with the
    same bounds and errors, without PyYAML's generator-based construction."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.built: dict[yaml.Node, Any] = {}
        self.sizes: dict[yaml.Node, tuple[int, int]] = {}
        self.aliases = _AliasBudget()
        self.texts: dict[str, str] = {}

    def build(self, node: yaml.Node, level: int) -> Any:
        built = self.built.get(node, self)
        if built is not self:  # an alias of a node met before
            if built is _BUILDING:
                raise _self_reference(node)
            self.aliases.repeat(self.size(node), node)
            return built
        if level > MAX_DEPTH:
            raise ConstructorError(
                None, None, f"values nest more than {MAX_DEPTH} levels deep", node.start_mark
            )
        tag = node.tag
        kind = type(node)
        value: Any
        if kind is yaml.ScalarNode:
            if tag == _STR_TAG:
                value = node.value
                if len(value) <= MAX_SHARED:  # names, channels, events: one copy of each
                    value = self.texts.setdefault(value, value)
            elif tag in _SCALAR_TAGS:
                try:
                    value = self.loader.yaml_constructors[tag](self.loader, node)
                except (ValueError, OverflowError) as exc:  # e.g. an integer of 10,000 digits
                    message = str(exc).split(";")[0]
                    raise ConstructorError(
                        None, None, f"cannot read this value: {message}", node.start_mark
                    ) from None
            else:
                raise _NotPlain
        elif kind is yaml.MappingNode and tag == _MAP_TAG:
            self.built[node] = _BUILDING
            value = LineDict(line=node.start_mark.line + 1)
            lines = value.lines
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    raise ConstructorError(
                        None, None, "merge keys ('<<') are not supported", key_node.start_mark
                    )
                if type(key_node) is not yaml.ScalarNode:
                    raise ConstructorError(
                        None, None, "a key must be a plain value, not a list or mapping",
                        key_node.start_mark,
                    )  # fmt: skip
                key = self.build(key_node, level + 1)
                if key in value:
                    raise DuplicateKeyError(key, key_node.start_mark.line + 1)
                value[key] = self.build(value_node, level + 1)
                lines[key] = key_node.start_mark.line + 1
        elif kind is yaml.SequenceNode and tag == _SEQ_TAG:
            self.built[node] = _BUILDING
            value = LineList(line=node.start_mark.line + 1)
            items = value.lines
            for item in node.value:
                value.append(self.build(item, level + 1))
                items.append(item.start_mark.line + 1)
        else:
            raise _NotPlain
        self.built[node] = value
        return value

    def size(self, node: yaml.Node) -> tuple[int, int]:
        """The values and characters ``node`` expands to, aliases in it expanded (each node
        walked once; no recursion, as aliases of aliases nest deeper than the text does)."""
        sizes = self.sizes
        stack = [node]
        while stack:
            current = stack[-1]
            if current in sizes:
                stack.pop()
                continue
            if isinstance(current, yaml.ScalarNode):
                sizes[current] = (1, len(current.value))
                stack.pop()
                continue
            children = (
                [part for pair in current.value for part in pair]
                if isinstance(current, yaml.MappingNode)
                else current.value
            )
            missing = [child for child in children if child not in sizes]
            if missing:
                stack.extend(missing)
                continue
            sizes[current] = (
                1 + sum(sizes[child][0] for child in children),
                sum(sizes[child][1] for child in children),
            )
            stack.pop()
        return sizes[node]


_BUILDING = object()


def _load(text: str | bytes) -> Any:
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _Builder(loader).build(node, 1)
        except _NotPlain:
            return loader.construct_document(node)
    finally:
        loader.dispose()


def load(text: str | bytes) -> Any:
    """Parse one YAML document; raise :class:`YamlSyntaxError` with a line on bad input."""
    try:
        return _load(text)
    except RecursionError:  # the pure-Python parser nests its calls (libyaml refuses sooner)
        raise YamlSyntaxError(f"values nest more than {MAX_DEPTH} levels deep", None) from None
    except DuplicateKeyError as exc:
        raise YamlSyntaxError(str(exc), exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlSyntaxError(reason, mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:  # a character no YAML may hold: not a marked error
        undecodable = _not_utf8(text)
        if undecodable is not None:
            raise undecodable from None
        reason = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise YamlSyntaxError(reason, _line_at(text, exc.position)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc).splitlines()[0], None) from None


def _not_utf8(text: str | bytes) -> YamlSyntaxError | None:
    """Where a file that is not UTF-8 stops being so, as a person can find it: the line, the
    column and the byte (libyaml names the character after it, or ``#x-001`` at the end)."""
    if not isinstance(text, bytes) or text[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return None  # text, or UTF-16 (which YAML reads too)
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = text.rfind(b"\n", 0, exc.start) + 1
        if line_start == 0 and text.startswith(b"\xef\xbb\xbf"):
            line_start = 3  # a byte order mark is no column
        column = len(text[line_start : exc.start].decode("utf-8", "replace")) + 1
        return YamlSyntaxError(
            f"the file is not UTF-8: byte #x{text[exc.start]:04x} at column {column} "
            "(save it as UTF-8)",
            text.count(b"\n", 0, exc.start) + 1,
        )
    return None


def _line_at(text: str | bytes, offset: int) -> int:
    """The line (1-based) of the byte at ``offset`` of ``text`` as UTF-8: libyaml counts the
    position of a bad character in bytes."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    return data.count(b"\n", 0, max(offset, 0)) + 1


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
