"""docs/console.md's examples are true: each ``http`` request is sent to a running daemon (with
the fake Chatra) after the sample chat started, and the answer must be the documented one.

A documented object lists some of the answer's keys (each must match); ``"..."`` stands for
any value; lists must match element by element."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from scaffold import REPO
from workspace_helpers import TOKENS, Workspace, wait_for, workspace

pytest.importorskip("rulekit_chatra")

__all__ = ["workspace"]

DOC = REPO / "docs" / "console.md"
BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


def examples() -> list[tuple[str, int, Any]]:
    """(request, status, documented answer) of each example, in order."""
    found = []
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    for (kind, _, request), (answer_kind, status, answer) in itertools.pairwise(blocks):
        if kind == "http":
            assert answer_kind == "json", f"the answer to {request.splitlines()[0]} is not json"
            found.append((request, int(status.strip()), json.loads(answer)))
    return found


def like(documented: Any, actual: Any, where: str = "answer") -> None:
    if documented == "...":
        return
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        for key, value in documented.items():
            assert key in actual, f"{where}: no {key!r} in {sorted(actual)}"
            like(value, actual[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list) and len(actual) == len(documented), (
            f"{where}: {actual!r} has not {len(documented)} entries"
        )
        for n, (doc_item, item) in enumerate(zip(documented, actual, strict=True)):
            like(doc_item, item, f"{where}[{n}]")
    else:
        assert documented == actual, f"{where}: documented {documented!r}, got {actual!r}"


def send(workspace: Workspace, request: str) -> Any:
    head, _, body = request.partition("\n\n")
    first, *header_lines = head.splitlines()
    method, target = first.split()
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        value = value.strip().replace("$ADMIN_TOKEN", TOKENS["admin"])
        headers[name.strip()] = value.replace("$TOKEN", TOKENS["anna"])
    with workspace.client() as api:
        return api.request(
            method, workspace.url + target, headers=headers, content=body.strip().encode() or None
        )


def test_there_are_examples_of_every_endpoint() -> None:
    requests = [request.split("\n", 1)[0] for request, _, _ in examples()]
    endpoints = ("GET /console/api/conversations?", "/messages", "/client", "dead-letters")
    for endpoint in (*endpoints, "/assign", "/tags", "/priority"):
        assert any(endpoint in request for request in requests), endpoint
    assert len(requests) >= 7


def test_every_example_answers_as_documented(workspace: Workspace) -> None:
    workspace.started()
    for request, status, documented in examples():
        response = send(workspace, request)
        first = request.split("\n", 1)[0]
        assert response.status_code == status, f"{first}: {response.text}"
        like(documented, response.json(), first)
        if response.status_code == 202:  # the next example sees what this one changed
            job_id = response.json()["job_id"]
            wait_for(lambda job_id=job_id: workspace.job(job_id).status == "done", first)
