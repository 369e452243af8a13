"""Memory: RSS of a `rulekit run` daemon with N rules loaded (target: 10,000 rules <= 200 MB).

    python benchmarks/daemon_memory.py             # 10,000 rules
    python benchmarks/daemon_memory.py --rules 1000
    python benchmarks/daemon_memory.py --smoke     # 20 rules, 30 webhooks: does it run

The rules are varied (conditions on the client, messages and pages; templates in the actions),
spread over several files; the daemon is measured once ready, and again after a few hundred
webhooks went through.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from daemon_common import Daemon, chat_started, write_config

EVENTS = ["created", "message", "reopened", "agent_replied", "closed", "client_updated"]


def rule(n: int, rng: random.Random) -> str:
    event = rng.choice(EVENTS)
    condition = rng.choice(
        [
            f"client.country == 'C{n % 60:02d}'",
            f"'word{n % 120}' in message.text|lower",
            f"client.language == 'l{n % 30}' and not client.email",
            f"conversation.page and 'p{n % 50}' in conversation.page",
        ]
    )
    return (
        f"- name: Rule {n}\n"
        f"  on: {{channel: online-chat, event: {event}}}\n"
        f'  if: "{condition}"\n'
        "  do:\n"
        f"    - play_sound: {{sound: bell, to: everyone}}\n"
        f"    - autoreply: {{text: \"Hello {{{{ client.name or 'there' }}}} ({n})\"}}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run")
    args = parser.parse_args()
    webhooks, settle = (30, 0.2) if args.smoke else (300, 2.0)
    if args.smoke:
        args.rules = 20
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), "[]\n")
        rules = Path(folder) / "rules.d"
        per_file = 500
        for start in range(0, args.rules, per_file):
            text = "".join(rule(n, rng) for n in range(start, min(args.rules, start + per_file)))
            (rules / f"{start:06d}.yaml").write_text(text)
        began = time.monotonic()
        daemon = Daemon(config).wait_ready(timeout=600)
        loaded = time.monotonic() - began
        try:
            ready = daemon.rss_mb()
            for n in range(webhooks):
                httpx.post(daemon.webhook_url, content=chat_started(n, f"m{n}"))
            time.sleep(settle)
            after = daemon.rss_mb()
        finally:
            daemon.stop()
    print(
        f"{args.rules} rules: ready in {loaded:.1f} s; RSS {ready:.0f} MB when ready, "
        f"{after:.0f} MB after {webhooks} webhooks (target <= 200 MB at 10,000 rules)"
    )


if __name__ == "__main__":
    main()
