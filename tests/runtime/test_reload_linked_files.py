"""Rule files that are symlinks to files kept elsewhere (``rules.d/10-refunds.yaml ->
../rules-available/10-refunds.yaml``, as nginx's ``sites-enabled``): an edit of the file a link
leads to is a change of the rules, and reloads them, as an edit of a file in the folder does."""

from __future__ import annotations

import os

import httpx
from daemons import AUTOREPLY_RULES, wait_for, write_setup

from rulekit.server.watching import WatchPlan


def health(process) -> dict:
    return httpx.get(f"{process.url}/healthz", timeout=5).json()


def greeting(n: int) -> str:
    return AUTOREPLY_RULES.replace("Hello", f"Greeting {n},")


def test_an_edit_of_a_linked_rule_file_reloads(tmp_path, processes):
    config = write_setup(tmp_path, greeting(1))
    available = tmp_path / "rules-available"
    available.mkdir()
    (available / "greet.yaml").write_text(greeting(1))
    (tmp_path / "rules.d" / "rules.yaml").unlink()
    (tmp_path / "rules.d" / "greet.yaml").symlink_to("../rules-available/greet.yaml")
    process = processes(config).wait_ready()
    version = health(process)["rules_version"]
    (available / "greet.yaml").write_text(greeting(2))  # edited in place
    wait_for(lambda: health(process)["rules_version"] != version, timeout=20)
    version = health(process)["rules_version"]
    (available / ".greet.yaml.tmp").write_text(greeting(3))  # a copy renamed over it
    os.replace(available / ".greet.yaml.tmp", available / "greet.yaml")
    wait_for(lambda: health(process)["rules_version"] != version, timeout=20)
    assert health(process)["last_reload"]["ok"]


def test_the_watch_plan_follows_linked_rule_files(tmp_path):
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (tmp_path / "available").mkdir()
    (tmp_path / "available" / "a.yaml").write_text("[]")
    (tmp_path / "available" / "notes.txt").write_text("")
    (rules / "a.yaml").symlink_to("../available/a.yaml")
    plan = WatchPlan.of(None, rules)
    assert str(tmp_path / "available") in plan.folders
    assert plan.relevant(None, str(tmp_path / "available" / "a.yaml"))
    assert not plan.relevant(None, str(tmp_path / "available" / "notes.txt"))
    # a link made (or pointed elsewhere) later is a new plan: the daemon watches anew
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.yaml").write_text("[]")
    (rules / "b.yaml").symlink_to("../other/b.yaml")
    assert WatchPlan.of(None, rules).identity != plan.identity
