"""No SQL statement is written twice across the store's modules: the SQL stores share one body
of SQL (``rulekit/store/sql/``), and a back-end writes only what differs."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

STORE = Path(__file__).resolve().parents[2] / "rulekit" / "store"
STATEMENT = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\s", re.IGNORECASE)


def _text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with ``{}`` for each value put in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
        )
    return None


def statements(source: str) -> list[str]:
    """The SQL statements written as string literals in ``source``, whitespace normalised."""
    tree = ast.parse(source)
    parts = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    found = []
    for node in ast.walk(tree):
        text = None if id(node) in parts else _text(node)
        if text is not None and STATEMENT.match(text):
            found.append(" ".join(text.split()))
    return found


def duplicates(sources: dict[str, str]) -> dict[str, list[str]]:
    """Statements that appear more than once across ``sources`` (name -> code), with where."""
    where: dict[str, list[str]] = defaultdict(list)
    for name, source in sources.items():
        for statement in statements(source):
            where[statement].append(name)
    return {statement: names for statement, names in where.items() if len(names) > 1}


def test_no_sql_statement_is_written_twice_in_the_store() -> None:
    sources = {str(path.relative_to(STORE)): path.read_text() for path in STORE.rglob("*.py")}
    found = [s for source in sources.values() for s in statements(source)]
    assert "SELECT * FROM inbox WHERE id = :id" in found  # the collector sees the shared SQL
    repeated = duplicates(sources)
    assert not repeated, "\n".join(f"{names}: {sql}" for sql, names in repeated.items())


def test_a_statement_written_twice_is_found() -> None:
    first = 'A = "SELECT data FROM clients WHERE id = :id"\n'
    second = (
        "def f(x):\n"
        '    return x.execute("SELECT data FROM clients"\n'
        '                     "  WHERE id = :id")\n'
    )
    third = 'B = f"UPDATE {table} SET a = 1"\nC = f"UPDATE {other}  SET a = 1"\n'
    assert duplicates({"a.py": first, "b.py": second, "c.py": third}) == {
        "SELECT data FROM clients WHERE id = :id": ["a.py", "b.py"],
        "UPDATE {} SET a = 1": ["c.py", "c.py"],
    }
    assert duplicates({"a.py": first, "d.py": 'D = "select data from other"\n'}) == {}
