"""What the command line imports before it does anything: ``rulekit --help`` and the commands
that need no channel's HTTP client must not load the providers or the heavy SDKs."""

from __future__ import annotations

import json
import subprocess
import sys

from scaffold import EXAMPLES, REPO

HEAVY = ("aiohttp", "httpx", "telegram", "slack_sdk", "rulekit_telegram.provider")
"""HTTP clients and SDKs (and a provider, which brings them): only sending needs them."""

PROBE = """
import json, sys
from rulekit.cli.main import main
sys.argv = ["rulekit", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print("MODULES" + json.dumps(sorted(sys.modules)))
"""


def imported_by(*args: str) -> set[str]:
    """The modules loaded in a fresh interpreter once ``rulekit ARGS`` has run."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES"))
    return set(json.loads(line.removeprefix("MODULES")))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY))


def test_help_imports_no_provider_and_no_sdk() -> None:
    modules = imported_by("--help")
    assert heavy(modules) == []
    # the plugin objects themselves are loaded: their commands are listed
    assert "rulekit_telegram.plugin" in modules


def test_check_imports_no_http_client() -> None:
    modules = imported_by(
        "check", str(REPO / "rules.d"), "--config", str(EXAMPLES / "rulekit.yaml")
    )
    assert [m for m in heavy(modules) if m != "rulekit_telegram.provider"] == []
    # the providers were loaded (their settings are checked), without their HTTP clients
    assert "rulekit_telegram.provider" in modules
