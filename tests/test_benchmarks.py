"""Every script in ``benchmarks/`` runs with ``--smoke`` (tiny sizes, one run, every phase) and
prints the figures its docstring promises, with numbers: a change of the API a benchmark uses
fails here, not at the next round of measurements.

Each script runs as a subprocess, as a person runs it. The helpers (``daemon_common.py``,
``rawhttp.py``, ``baseline_pipeline.py``) run inside the scripts that use them. PostgreSQL
parts run when ``RULEKIT_TEST_POSTGRES`` is set; the scripts' SQLite parts always do.

A smoke run that starts daemons for several seconds is ``slow`` (run with ``--full``); where a
script also measures in process (the store's calls: what an API change breaks first), that part
runs on its own in the quick profile. ``e2e.py`` is all daemons: its helpers (the daemon's
config, the load generator, the fake Slack) run in the quick profile in ``rules_cost.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from postgres_schemas import POSTGRES_ENV, postgres_unreachable
from scaffold import REPO

BENCHMARKS = REPO / "benchmarks"
N = r"-?\d[\d,]*(?:\.\d+)?"
"""A figure as the scripts print it: ``1,234``, ``0.25``, ``-0.10``."""
X = rf"{N}x"
"""A ratio."""


def smoke(tmp_path: Path, script: str, *args: str, postgres: str | None = None) -> str:
    """Run ``benchmarks/<script> --smoke *args`` in ``tmp_path`` and return what it printed,
    asserting it exited 0. PostgreSQL is given only as ``postgres``; the whole process group
    (the daemons and fakes a script starts) is ended if it hangs."""
    env = {key: value for key, value in os.environ.items() if key != POSTGRES_ENV}
    if postgres:
        env[POSTGRES_ENV] = postgres
    command = [sys.executable, str(BENCHMARKS / script), "--smoke", *args]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"{script} --smoke did not end in 300 s:\n{out}\n{err}")
    assert process.returncode == 0, f"{script} --smoke exited {process.returncode}:\n{out}\n{err}"
    return out


def shows(out: str, *patterns: str) -> None:
    """Each pattern matches a whole line of ``out`` (``N`` a figure, ``X`` a ratio)."""
    missing = [p for p in patterns if not re.search(rf"^{p}$", out, re.MULTILINE)]
    assert not missing, f"no line matches {missing} in:\n{out}"


def postgres() -> str:
    """The test PostgreSQL server's URL (skips the test when there is none)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"set {POSTGRES_ENV} to a PostgreSQL URL to run the benchmarks on PostgreSQL")
    reason = postgres_unreachable(url)
    if reason:
        pytest.skip(reason)
    return url


def test_every_script_is_smoke_tested() -> None:
    source = Path(__file__).read_text()
    helpers = {"daemon_common.py", "rawhttp.py", "baseline_pipeline.py"}
    scripts = {path.name for path in BENCHMARKS.glob("*.py")} - helpers
    untested = sorted(name for name in scripts if f'"{name}"' not in source)
    assert not untested, f"benchmarks without a smoke test here: {untested}"


def test_actions(tmp_path: Path) -> None:
    out = smoke(tmp_path, "actions.py")
    for service in ("slack", "telegram"):
        shows(
            out,
            rf"{service} +raw httpx +{N}/s +actions +{N}/s +ratio +{X} +most per destination per"
            rf" period \d+ \((limit held|LIMIT EXCEEDED)\)",
        )
    shows(out, "(ok|target missed)")


def test_chatra_parse(tmp_path: Path) -> None:
    out = smoke(tmp_path, "chatra_parse.py")
    shows(
        out,
        rf"bodies: {N} \(5 conversations, {N} bytes on average\)",
        rf"json\.loads +{N} bodies/s +{N} µs/body",
        rf"ChatraProvider\.parse, state in dicts +{N} bodies/s +{N} µs/body",
        rf"  store statements: {N}/body",
        rf"ratio all of it \(MemoryStore\)/json\.loads: {X}",
        rf"ratio parse/json\.loads \(.*\): {X} \(target >= 0\.25x\): (ok|BELOW TARGET)",
    )


@pytest.mark.slow
def test_daemon_memory(tmp_path: Path) -> None:
    out = smoke(tmp_path, "daemon_memory.py")
    shows(
        out,
        rf"20 rules: ready in {N} s; RSS {N} MB when ready, {N} MB after 30 webhooks \(.*\)",
    )


@pytest.mark.slow
def test_e2e(tmp_path: Path) -> None:
    out = smoke(tmp_path, "e2e.py")
    shows(
        out,
        rf"throughput, webhooks/s +{N} +{N} +{X}",
        rf"CPU per webhook, ms +{N} +{N} +{X}",
        rf"ack p99 at 20/s, ms +{N} +{N} +({X}|-)",
        rf"end-to-end p99 at 20/s, ms +{N} +{N} +({X}|-)",
        rf"load generator CPU per webhook, ms +{N} +{N} +({X}|-)",
        rf"targets: throughput >= 0\.5x \({X}\), CPU per webhook <= 2x \({X}\); .*\({N}\)",
        rf"baseline's CPU per webhook by thread, ms \(throughput phase\): event loop thread {N}.*",
        rf"rulekit's CPU per webhook by thread, ms \(throughput phase\): event loop thread {N}.*",
    )
    assert "missing" not in out, "every webhook's message reaches the fake Slack"


def test_engine(tmp_path: Path) -> None:
    out = smoke(tmp_path, "engine.py")
    shows(
        out,
        rf"50 rules \(any-only\), 100 events \({N} rule matches\)",
        rf"  rulekit +{N} events/s +ratio {X}",
        rf"  daemon path +{N} events/s +ratio {X} +\(trace {N} KiB per event\)",
        rf"  load: PyYAML C {N} s, rulekit {N} s +ratio {X} +\({X} PyYAML .*\)",
        rf"worst at 50 rules: \S+, daemon path {X} the lambdas \(fast path {X} at worst\)",
        rf"worst load at 50 rules: \S+, {X} PyYAML's C loader",
        rf"start-up: python -c pass {N} s, rulekit --help {N} s, difference {N} s",
    )
    assert out.count("ratio") == 6 * 3, "every shape of rules is measured"


def test_engine_load_only(tmp_path: Path) -> None:
    out = smoke(tmp_path, "engine.py", "--load-only")
    shows(out, rf"worst load at 50 rules: \S+, {X} PyYAML's C loader")
    assert out.count("  load: PyYAML C") == 6, "every shape of rules is loaded"


HISTORY_STORE_CALLS = [
    rf"{figure} +{N} +{N} +{X}"
    for figure in (
        r"ingest \(append \+ commit\)",
        "claim inbox",
        "claim due jobs",
        "console: list conversations",
        "console: a conversation's view",
        r"retention purge \(nothing due\)",
    )
]


def test_history_store_calls(tmp_path: Path) -> None:
    out = smoke(tmp_path, "history.py", "--no-daemon")
    shows(out, r" +20 +200 +ratio", *HISTORY_STORE_CALLS)


@pytest.mark.slow
def test_history(tmp_path: Path) -> None:
    out = smoke(tmp_path, "history.py")
    shows(
        out,
        *HISTORY_STORE_CALLS,
        rf"daemon: CPU per webhook, ms +{N} +{N} +{X}",
        rf"daemon: ack p99 at 20/s, ms +{N} +{N} +{X}",
    )


@pytest.mark.slow
def test_ingest(tmp_path: Path) -> None:
    out = smoke(tmp_path, "ingest.py")
    for endpoint in ("no-op", "durable", "durable, processing paused"):
        # every request accepted: a refused or failed one shows as another status
        shows(
            out,
            rf"{endpoint} +{N} webhooks/s +p50 +{N} ms +p99 +{N} ms +statuses \{{200: \d+\}}",
        )
    shows(
        out,
        rf"durable / no-op: {X} \(target >= 0\.3x\), with the processor running alongside",
        rf"durable / no-op, processing paused: {X}",
    )


@pytest.mark.slow
def test_rules_cost(tmp_path: Path) -> None:
    out = smoke(tmp_path, "rules_cost.py")
    for rules in (1, 20):
        shows(out, rf" +{rules} +{N} +{N} +{X}( +{N}){{6}} +\d+ +{N} +{N}")
    shows(out, r"targets: CPU <= 1\.5x at 1,000 rules, .*")
    assert "missing" not in out, "every webhook's message reaches the fake Slack"


def test_scale_store_on_sqlite(tmp_path: Path) -> None:
    out = smoke(tmp_path, "scale.py", "--store-only")
    shows(
        out,
        r"Store only, 30 events per configuration",
        rf"SQLite \(synchronous=FULL\) +1 +{N} +\(in-process\)",
        r"PostgreSQL: skipped \(.*\)",
    )


def test_scale_store_on_postgres(tmp_path: Path) -> None:
    out = smoke(tmp_path, "scale.py", "--store-only", postgres=postgres())
    shows(
        out,
        rf"PostgreSQL +1 +{N} +{X} +{N}",
        rf"PostgreSQL +2 +{N} +{X} +{N}",
        rf"PostgreSQL 1 worker vs SQLite: {X}",
    )


@pytest.mark.slow
def test_scale_daemons_on_sqlite(tmp_path: Path) -> None:
    out = smoke(tmp_path, "scale.py", "--daemons-only")
    shows(
        out,
        rf"SQLite \(synchronous=FULL\) +1 +{N} +{N} +{N} +\(in-process\)",
        r"PostgreSQL: skipped \(.*\)",
    )


@pytest.mark.slow
def test_scale_daemons_on_postgres(tmp_path: Path) -> None:
    out = smoke(tmp_path, "scale.py", "--daemons-only", postgres=postgres())
    shows(
        out,
        rf"PostgreSQL +1 +{N} +{X} +{N} +{N} +{N}",
        rf" +one PostgreSQL daemon / one SQLite daemon: {X}",
        rf"PostgreSQL +2 +{N} +{X} +{N} +{N} +{N}",
    )


def test_store(tmp_path: Path) -> None:
    out = smoke(tmp_path, "store.py")
    assert out.startswith("20 events per store")
    for store in ("memory", "sqlite FULL", "sqlite NORMAL"):
        shows(out, rf"  {store} +{N} tx/s +{X} memory +{X} FULL")
    assert out.count("tx/s") == 2 * 3, "both units of work on every store"


TIMER_STORE = [
    rf" +{shape}: set {N} \({X}\), cancel {N} \({X}\), next due {N} \({X}\),"
    rf" claim {N} \({X}\) +\[{N} s\]"
    for shape in ("spread", "same instant", "one rule")
]


def test_timers_store(tmp_path: Path) -> None:
    out = smoke(tmp_path, "timers.py", "--skip-daemon")
    shows(out, *TIMER_STORE, rf"  worst ratio: {X}", rf"worst ratios: SQLite store {X}")


@pytest.mark.slow
def test_timers_daemon(tmp_path: Path) -> None:
    out = smoke(tmp_path, "timers.py")
    shows(
        out,
        rf" +RSS when idle, MB: {N} vs {N} \({X}\)",
        rf" +CPU at idle, s per s: {N} vs {N} \(.*\)",
        rf" +lateness p99, 10 timers/s due, s: {N} vs {N} \(({X}|nanx)\)",
        rf" +lateness p99, 50 timers/s due, s: {N} vs {N} \(({X}|nanx)\)",
        rf" +5 timers, webhooks at {N}/s \(none pending: {N}/s\)",
        r"  target p99 <= 1 s at every shape: (met|NOT met)",
        rf"  worst ratio \(RSS, lateness\): {X}",
        rf"worst ratios: SQLite store {X}, daemon {X}",
    )


def test_timers_store_on_postgres(tmp_path: Path) -> None:
    out = smoke(tmp_path, "timers.py", "--skip-daemon", postgres=postgres())
    shows(
        out,
        r"PostgreSQL store: median ms per operation with 200 pending timers \(ratio to none\)",
        rf"worst ratios: SQLite store {X}, PostgreSQL store {X}",
    )
