"""The shape docs/architecture.md describes: no import cycles, imports that point one way,
and a core that names no concrete action or channel.

Every import counts, function-level ones included; only ``if TYPE_CHECKING:`` blocks are left
out (and the CLI's lazy loading of its command modules, which goes through strings)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "rulekit": ROOT / "rulekit",
    "rulekit_chatra": ROOT / "plugins/chatra/rulekit_chatra",
    "rulekit_telegram": ROOT / "plugins/telegram/rulekit_telegram",
}


def _modules() -> dict[str, Path]:
    found = {}
    for name, folder in PACKAGES.items():
        for file in folder.rglob("*.py"):
            parts = [name, *file.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = file
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for sub in ast.walk(node))
    return skipped


def _imports(module: str) -> set[str]:
    file = MODULES[module]
    tree = ast.parse(file.read_text())
    skipped = _type_checking_nodes(tree)
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for target in targets:
            resolved = _resolve(target) if target.split(".")[0] in PACKAGES else None
            if resolved and resolved != module:
                out.add(resolved)
    return out


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_there_are_no_import_cycles() -> None:
    assert _cycles() == []


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from rulekit.cli.main import cli\n"
        "def f():\n"
        "    from rulekit.engine.engine import Engine\n"
    )
    MODULES["rulekit.probe"] = probe
    try:
        assert _imports("rulekit.probe") == {"rulekit.engine.engine"}
    finally:
        del MODULES["rulekit.probe"]


LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "vocabulary",
        (
            "rulekit.errors",
            "rulekit.event",
            "rulekit.models",
            "rulekit.config",
            "rulekit.directory",
            "rulekit.interpolation",
            "rulekit.sources",
            "rulekit.yamlsource",
            "rulekit.calendars",
            "rulekit.validation",
            "rulekit.safetext",
            "rulekit.secrets",
            "rulekit.escapes",
            "rulekit.countries",
            "rulekit.team",
            "rulekit.addresses",
            "rulekit.hosts",
        ),
    ),
    ("expr", ("rulekit.expr",)),
    ("rules", ("rulekit.rules",)),
    ("engine", ("rulekit.engine",)),
    ("runtime", ("rulekit.runtime", "rulekit.snapshot", "rulekit.loading")),
    ("audit", ("rulekit.audit",)),
    ("server", ("rulekit.server",)),
    ("cli", ("rulekit.cli",)),
]
"""The layers from the bottom up: a module imports only its own layer and those below."""

CONTRACTS = ("rulekit.actions", "rulekit.channels")
"""Plugin contracts and built-ins, beside the layers: they may use the vocabulary and the
sandbox (``expr``) but nothing that runs them."""
SIDE = ("rulekit.store", "rulekit.hookspecs", "rulekit.plugins", "rulekit.registry")
"""The store and the plugin system, beside the layers: they use the vocabulary only."""


def _layer(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_every_module_of_the_core_has_a_place() -> None:
    homeless = [
        m
        for m in GRAPH
        if m.startswith("rulekit.")
        and _layer(m) is None
        and not _in(m, (*CONTRACTS, *SIDE, "rulekit.testing"))
    ]
    assert homeless == []


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if (mine := _layer(module)) is not None
        and (theirs := _layer(target)) is not None
        and theirs > mine
    ]
    assert upward == []


def test_contracts_and_the_side_packages_import_nothing_that_runs_them() -> None:
    expr = _layer("rulekit.expr")
    wrong = [
        f"{module} -> {target}"
        for module, targets in sorted(GRAPH.items())
        if _in(module, (*CONTRACTS, *SIDE))
        for target in sorted(targets)
        if (rank := _layer(target)) is not None and rank > (expr if _in(module, CONTRACTS) else 0)
    ]
    assert wrong == []


def test_the_store_names_no_channel() -> None:
    assert [
        f"{module} -> {target}"
        for module, targets in sorted(GRAPH.items())
        if module.startswith("rulekit.store")
        for target in sorted(targets)
        if target.startswith("rulekit.channels")
    ] == []


CONCRETE = re.compile(
    r"""["'](autoreply|play_sound|slack|telegram|telegram-bot|chatra|online-chat)["']"""
)
NAMED_IN_CORE_ALLOWED = {"rulekit.testing"}
"""Fakes of the services, shipped for plugin authors, name them by design."""


def test_the_core_names_no_concrete_action_or_channel_in_code() -> None:
    offenders = []
    for module, file in MODULES.items():
        if not module.startswith("rulekit.") or module.startswith(
            ("rulekit.actions", "rulekit.channels", *NAMED_IN_CORE_ALLOWED)
        ):
            continue
        tree = ast.parse(file.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docstrings and CONCRETE.search(repr(node.value)):
                    offenders.append(f"{module}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith(
                    ("rulekit.actions.", "rulekit_chatra", "rulekit_telegram")
                ):
                    if node.module.split(".")[-1] not in ("base", "pacing"):
                        offenders.append(f"{module} imports {node.module}")
    assert sorted(set(offenders)) == KNOWN_NAMED


KNOWN_NAMED: list[str] = []
"""Known exceptions, listed in docs/architecture.md; a new one fails the test."""
