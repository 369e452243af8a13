"""Engine throughput, load time and CLI start-up, as ratios to baselines measured in the same run.

    python benchmarks/engine.py            # 1,000 and 10,000 rules
    python benchmarks/engine.py --quick    # 1,000 rules only, fewer events
    python benchmarks/engine.py --load-only  # load figures only, 10,000 rules (1,000 with --quick)
    python benchmarks/engine.py --smoke    # 50 rules, 100 events, one run each: does it run

Figures printed:
* events/s of ``Engine.evaluate`` vs hand-written Python lambdas behind a (channel, event) dict,
  on the same rules and events (targets: >= 0.5x at 1,000 rules, >= 4.5x at 10,000);
* the same for the path the daemon runs: ``evaluate(explain=True)`` and the trace it records,
  as the evaluation worker makes it (``encoded_trace``: the text the store writes) (``daemon
  path``), with the trace's mean size;
* time to load N rules vs PyYAML's C safe loader alone on the same files (target <= 2x at
  10,000 rules), and vs the same with the garbage collector paused as rulekit pauses it;
* ``rulekit --help`` wall time vs ``python -c pass`` (target: the difference <= 0.3 s).

Rates and load times are CPU time of this process (``time.process_time``): on a machine shared
with other work, wall time measures the other work too.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rulekit import Engine, Event
from rulekit.channels.base import ChannelSettings
from rulekit.config import ChannelConfig, Config
from rulekit.engine.trace import encoded_trace
from rulekit.plugins import load_plugins
from rulekit.rules.collector import collector_paused
from rulekit.store.codec import trace_json

CHANNELS = ["online-chat", "email", "telegram-bot", "vk"]
EVENTS = ["created", "message", "reopened", "agent_replied", "closed", "client_updated"]
COUNTRIES = [f"C{i:02d}" for i in range(60)]
LANGUAGES = [f"l{i}" for i in range(30)]
DOMAINS = [f"@d{i}.example" for i in range(80)]
WORDS = [f"word{i}" for i in range(120)]


def _text_has(e: Event, word: str) -> bool:
    return e.message.text is not None and word in e.message.text.lower()


def _ends(e: Event, domain: str) -> bool:
    return e.client.email is not None and e.client.email.endswith(domain)


def shape_equality(rng: random.Random) -> tuple[list, list]:
    """One equality on a field with 60 values."""
    c = rng.choice(COUNTRIES)
    return [f"client.country == '{c}'"], [lambda e, c=c: e.client.country == c]


def shape_suffix_selective(rng: random.Random) -> tuple[list, list]:
    """An unselective membership (40 of 60 countries) and a selective email suffix."""
    cs, d = rng.sample(COUNTRIES, 40), rng.choice(DOMAINS)
    return (
        [f"client.country in {cs!r}", f"client.email.endswith('{d}')"],
        [lambda e, cs=cs: e.client.country in cs, lambda e, d=d: _ends(e, d)],
    )


def shape_overlapping_membership(rng: random.Random) -> tuple[list, list]:
    """Membership lists that all share one value, and an equality."""
    ls, c = ["l0", *rng.sample(LANGUAGES[1:], 2)], rng.choice(COUNTRIES)
    return (
        [f"client.language in {ls!r}", f"client.country == '{c}'"],
        [lambda e, ls=ls: e.client.language in ls, lambda e, c=c: e.client.country == c],
    )


def shape_in_text(rng: random.Random) -> tuple[list, list]:
    """A word in the message text."""
    w = rng.choice(WORDS)
    return [f"'{w}' in message.text|lower"], [lambda e, w=w: _text_has(e, w)]


def shape_any_only(rng: random.Random) -> tuple[list, list]:
    """No must-hold condition: one `any` of an equality and a word."""
    c, w = rng.choice(COUNTRIES), rng.choice(WORDS)
    return (
        [{"any": [f"client.country == '{c}'", f"'{w}' in message.text|lower"]}],
        [lambda e, c=c, w=w: e.client.country == c or _text_has(e, w)],
    )


def shape_mixed(rng: random.Random) -> tuple[list, list]:
    """One indexable test of four kinds, then up to two `any` or `not` conditions."""
    conditions: list = []
    predicates: list = []
    first = rng.choice(["eq", "in", "endswith", "text"])
    if first == "eq":
        c = rng.choice(COUNTRIES)
        conditions.append(f"client.country == '{c}'")
        predicates.append(lambda e, c=c: e.client.country == c)
    elif first == "in":
        ls = rng.sample(LANGUAGES, 3)
        conditions.append(f"client.language in {ls!r}")
        predicates.append(lambda e, ls=ls: e.client.language in ls)
    elif first == "endswith":
        d = rng.choice(DOMAINS)
        conditions.append(f"client.email.endswith('{d}')")
        predicates.append(lambda e, d=d: e.client.email is not None and e.client.email.endswith(d))
    else:
        w = rng.choice(WORDS)
        conditions.append(f"'{w}' in message.text|lower")
        predicates.append(lambda e, w=w: e.message.text is not None and w in e.message.text.lower())
    for _ in range(rng.randint(0, 2)):
        kind = rng.choice(["any", "not"])
        if kind == "any":
            c, w = rng.choice(COUNTRIES), rng.choice(WORDS)
            conditions.append({"any": [f"client.country == '{c}'", f"'{w}' in message.text|lower"]})
            predicates.append(
                lambda e, c=c, w=w: (
                    e.client.country == c
                    or (e.message.text is not None and w in e.message.text.lower())
                )
            )
        else:
            ls = rng.sample(LANGUAGES, 2)
            conditions.append({"not": f"client.language in {ls!r}"})
            predicates.append(lambda e, ls=ls: e.client.language not in ls)
    return conditions, predicates


def make_rules(n: int, rng: random.Random, shape: str = "mixed") -> tuple[list[dict], list]:
    """N rules as YAML data, and the equivalent (name, channel, events, predicate) tuples."""
    rules, lambdas = [], []
    for i in range(n):
        channel = rng.choice(CHANNELS)
        events = rng.sample(EVENTS, rng.choice([1, 1, 2]))
        conditions, predicates = SHAPES[shape](rng)
        name = f"rule {i}"
        rules.append(
            {
                "name": name,
                "on": {"channel": channel, "event": events},
                "if": conditions,
                "do": [{"play_sound": {"sound": "bell", "to": "everyone"}}],
            }
        )
        lambdas.append((name, channel, events, predicates))
    return rules, lambdas


SHAPES = {
    "mixed": shape_mixed,
    "equality": shape_equality,
    "suffix-selective": shape_suffix_selective,
    "overlapping-membership": shape_overlapping_membership,
    "in-text": shape_in_text,
    "any-only": shape_any_only,
}


def make_events(n: int, rng: random.Random) -> list[Event]:
    out = []
    for i in range(n):
        out.append(
            Event(
                id=f"e{i}",
                channel=rng.choice(CHANNELS),
                event=rng.choice(EVENTS),
                client={
                    "country": rng.choice(COUNTRIES),
                    "language": rng.choice(LANGUAGES),
                    "email": f"user{i}{rng.choice(DOMAINS)}",
                },
                message={"text": " ".join(rng.sample(WORDS, 6)).upper()},
            )
        )
    return out


def lambda_table(lambdas: list) -> dict:
    table: dict = {}
    for name, channel, events, predicates in lambdas:
        for event in events:
            table.setdefault((channel, event), []).append((name, predicates))
    return table


def run_lambdas(table: dict, events: list[Event]) -> list[list[str]]:
    out = []
    for e in events:
        matched = []
        for name, predicates in table.get((e.channel, e.event), ()):
            if all(p(e) for p in predicates):
                matched.append(name)
        out.append(matched)
    return out


def run_engine(engine: Engine, events: list[Event]) -> list[list[str]]:
    return [[a.rule for a in engine.evaluate(e)] for e in events]


def run_daemon_path(engine: Engine, events: list[Event]) -> list[int]:
    """What the evaluation worker does per event: explain, and the trace it records."""
    out = []
    for e in events:
        plan = engine.evaluate(e, explain=True)
        out.append(len(trace_json(encoded_trace(plan, rules_version=engine.version))))
    return out


def best_rate(function, events, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        function(events)
        times.append(time.process_time() - start)
    return len(events) / min(times)


def config() -> Config:
    cfg = Config()
    for channel in CHANNELS:
        cfg.channels[channel] = ChannelConfig(channel, "webhook", ChannelSettings())
    return cfg


def write_rules(folder: Path, rules: list[dict]) -> None:
    """The rules in ten files, as an admin would split them."""
    per_file = max(1, len(rules) // 10)
    for index in range(0, len(rules), per_file):
        (folder / f"{index:06d}.yaml").write_text(
            yaml.safe_dump(rules[index : index + per_file], sort_keys=False)
        )


def measure_load(folder: Path, repeat: int = 3) -> tuple[Engine, dict[str, float]]:
    """The engine loaded from ``folder``, and the best CPU times (seconds) of PyYAML's C loader
    alone on the same files (``yaml``), of the same with the cyclic garbage collector paused
    as rulekit pauses it while loading (``yaml_paused``), and of the whole load (``load``)."""
    plugins = load_plugins()
    cfg = config()
    times: dict[str, list[float]] = {"yaml": [], "yaml_paused": [], "load": []}
    engine = None
    for _ in range(repeat):
        engine = None  # each measure starts from the same heap
        gc.collect()
        for key in ("yaml", "yaml_paused"):
            start = time.process_time()
            with collector_paused() if key == "yaml_paused" else contextlib.nullcontext():
                for file in sorted(folder.iterdir()):
                    yaml.load(file.read_bytes(), Loader=yaml.CSafeLoader)
            times[key].append(time.process_time() - start)
        gc.collect()
        start = time.process_time()
        engine = Engine.from_path(folder, cfg, plugins=plugins)
        times["load"].append(time.process_time() - start)
    assert engine is not None
    return engine, {key: min(values) for key, values in times.items()}


def print_load(best: dict[str, float]) -> None:
    print(
        f"  load: PyYAML C {best['yaml']:.3f} s, rulekit {best['load']:.3f} s"
        f"   ratio {best['load'] / best['yaml']:.2f}x"
        f"   ({best['load'] / best['yaml_paused']:.2f}x PyYAML with the collector paused too)"
    )


def measure(
    n: int, n_events: int, repeat: int, shape: str = "mixed", loads: int = 3
) -> dict[str, float]:
    rng = random.Random(n)
    rules, lambdas = make_rules(n, rng, shape)
    events = make_events(n_events, rng)
    with tempfile.TemporaryDirectory() as tmp:
        write_rules(Path(tmp), rules)
        engine, load = measure_load(Path(tmp), loads)
    table = lambda_table(lambdas)
    expected = run_lambdas(table, events)
    actual = run_engine(engine, events)
    if expected != actual:
        mismatches = sum(1 for a, b in zip(expected, actual, strict=True) if a != b)
        raise SystemExit(f"engine and lambdas disagree on {mismatches} of {len(events)} events")
    lambda_rate = best_rate(lambda ev: run_lambdas(table, ev), events, repeat)
    engine_rate = best_rate(lambda ev: run_engine(engine, ev), events, repeat)
    daemon_rate = best_rate(lambda ev: run_daemon_path(engine, ev), events, repeat)
    trace_bytes = statistics.mean(run_daemon_path(engine, events[:500]))
    matched = sum(len(m) for m in expected)
    print(f"\n{n:,} rules ({shape}), {len(events):,} events ({matched:,} rule matches)")
    print(f"  lambdas        {lambda_rate:>12,.0f} events/s")
    print(
        f"  rulekit        {engine_rate:>12,.0f} events/s   ratio {engine_rate / lambda_rate:.2f}x"
    )
    print(
        f"  daemon path    {daemon_rate:>12,.0f} events/s   ratio {daemon_rate / lambda_rate:.2f}x"
        f"   (trace {trace_bytes / 1024:,.1f} KiB per event)"
    )
    print_load(load)
    return {
        "ratio": engine_rate / lambda_rate,
        "daemon_ratio": daemon_rate / lambda_rate,
        "load_ratio": load["load"] / load["yaml"],
    }


def load_only(n: int, loads: int = 3) -> None:
    """Only the load figure, for every shape, and the worst."""
    ratios = {}
    for shape in SHAPES:
        rules, _ = make_rules(n, random.Random(n), shape)
        with tempfile.TemporaryDirectory() as tmp:
            write_rules(Path(tmp), rules)
            _, load = measure_load(Path(tmp), loads)
        print(f"\n{n:,} rules ({shape})")
        print_load(load)
        ratios[shape] = load["load"] / load["yaml"]
    worst = max(ratios, key=ratios.__getitem__)
    print(f"\nworst load at {n:,} rules: {worst}, {ratios[worst]:.2f}x PyYAML's C loader")


def startup(runs: int = 7) -> None:
    def wall(command: list[str]) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    base = wall([sys.executable, "-c", "pass"])
    cli = wall([sys.executable, "-m", "rulekit.cli.main", "--help"])
    print(
        f"\nstart-up: python -c pass {base:.3f} s, rulekit --help {cli:.3f} s,"
        f" difference {cli - base:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--load-only", action="store_true", help="only the load figures (10,000 rules)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run: does it run")
    args = parser.parse_args()
    loads = 1 if args.smoke else 3
    if args.load_only:
        load_only(50 if args.smoke else 1_000 if args.quick else 10_000, loads)
        return
    sizes = [(1_000, 2_000, 3)] if args.quick else [(1_000, 10_000, 5), (10_000, 10_000, 3)]
    if args.smoke:
        sizes = [(50, 100, 1)]
    for n, n_events, repeat in sizes:
        results = {shape: measure(n, n_events, repeat, shape, loads) for shape in SHAPES}
        worst = min(results, key=lambda shape: results[shape]["daemon_ratio"])
        print(
            f"\nworst at {n:,} rules: {worst}, daemon path "
            f"{results[worst]['daemon_ratio']:.2f}x the lambdas "
            f"(fast path {min(r['ratio'] for r in results.values()):.2f}x at worst)"
        )
        slowest = max(results, key=lambda shape: results[shape]["load_ratio"])
        print(
            f"worst load at {n:,} rules: {slowest}, "
            f"{results[slowest]['load_ratio']:.2f}x PyYAML's C loader"
        )
    startup(1 if args.smoke else 7)


if __name__ == "__main__":
    main()
