"""`rulekit run` with its files where deploys put them: a config reached through a symlink, a
Kubernetes ConfigMap updated again and again, a rules folder deleted and created again. Events
are processed, and every change is reloaded, however often a name comes to lead elsewhere."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from daemons import AUTOREPLY_RULES, chat_started, wait_for, write_setup

from rulekit.server.watching import WatchPlan


def health(process) -> dict:
    return httpx.get(f"{process.url}/healthz", timeout=5).json()


def greeting(n: int) -> str:
    return AUTOREPLY_RULES.replace("Hello", f"Greeting {n},")


def test_a_config_reached_through_a_symlink_is_processed_by_the_workers(
    tmp_path, processes, chatra
):
    release = tmp_path / "releases" / "41"
    release.mkdir(parents=True)
    write_setup(release, chatra=chatra)
    (tmp_path / "current").symlink_to("releases/41")  # a deploy's `current` link
    process = processes(tmp_path / "current" / "rulekit.yaml").wait_ready()
    assert httpx.post(process.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=20)
    assert chatra.sent[0]["text"] == "Hello Visitor 1"
    assert (release / "rulekit.sqlite3").exists()  # next to the config as named


class ConfigMap:
    """A folder laid out as Kubernetes mounts a ConfigMap: each key a symlink through
    ``..data`` into a versioned folder; an update writes a new versioned folder, flips
    ``..data`` to it at once and deletes the old one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.version = 0
        folder.mkdir()

    def update(self, files: dict[str, str]) -> None:
        self.version += 1
        versioned = self.folder / f"..2026_12_01_00_00_0{self.version}.{1000 + self.version}"
        versioned.mkdir()
        for name, text in files.items():
            (versioned / name).write_text(text)
        (self.folder / "..data_tmp").symlink_to(versioned.name)
        os.replace(self.folder / "..data_tmp", self.folder / "..data")
        for name in files:
            if not (self.folder / name).is_symlink():
                (self.folder / name).symlink_to(f"..data/{name}")
        for old in self.folder.glob("..2026_*"):
            if old != versioned:
                shutil.rmtree(old)


@pytest.mark.slow
def test_a_configmap_is_reloaded_on_each_update(tmp_path, processes, chatra):
    setup = tmp_path / "setup"
    setup.mkdir()
    config_text = write_setup(setup, chatra=chatra).read_text()
    config_text = config_text.replace("rules: rules.d", "rules: ../rules")
    config_text = config_text.replace("sqlite:///", "sqlite:///../data/")
    (tmp_path / "data").mkdir()
    config_map = ConfigMap(tmp_path / "config")
    config_map.update({"rulekit.yaml": config_text})
    rules_map = ConfigMap(tmp_path / "rules")
    rules_map.update({"rules.yaml": greeting(1)})
    process = processes(tmp_path / "config" / "rulekit.yaml").wait_ready()
    for n in range(2, 6):
        version = health(process)["rules_version"]
        rules_map.update({"rules.yaml": greeting(n)})
        wait_for(lambda v=version: health(process)["rules_version"] != v, timeout=20)
    httpx.post(process.webhook_url, content=chat_started(1))
    wait_for(lambda: len(chatra.sent) == 1, timeout=20)
    assert chatra.sent[0]["text"] == "Greeting 5, Visitor 1"
    version = health(process)["rules_version"]
    config_map.update({"rulekit.yaml": config_text.replace("rules: ../rules", "rules: ../none")})
    wait_for(lambda: health(process)["last_reload"]["ok"] is False, timeout=20)  # the config too
    assert health(process)["rules_version"] == version


@pytest.mark.slow
def test_a_rules_folder_deleted_and_created_again_is_watched_again(tmp_path, processes):
    config = write_setup(tmp_path, greeting(1))
    process = processes(config).wait_ready()
    version = health(process)["rules_version"]
    rules = tmp_path / "rules.d"
    shutil.rmtree(rules)
    wait_for(lambda: health(process)["last_reload"]["ok"] is False, timeout=20)
    assert health(process)["rules_version"] == version  # the old rules stay
    rules.mkdir()
    (rules / "rules.yaml").write_text(greeting(2))
    wait_for(lambda: health(process)["rules_version"] != version, timeout=20)
    version = health(process)["rules_version"]
    (rules / "rules.yaml").write_text(greeting(3))  # watched in the new folder too
    wait_for(lambda: health(process)["rules_version"] != version, timeout=20)
    assert health(process)["last_reload"]["ok"]


def test_the_watch_plan_follows_names_and_ignores_what_tools_leave(tmp_path):
    (tmp_path / "releases" / "41" / "rules.d").mkdir(parents=True)
    (tmp_path / "releases" / "41" / "rulekit.yaml").write_text("")
    (tmp_path / "current").symlink_to("releases/41")
    config = tmp_path / "current" / "rulekit.yaml"
    rules = tmp_path / "current" / "rules.d"
    plan = WatchPlan.of(config, rules)
    assert str(rules) in plan.folders and str(tmp_path / "current") in plan.folders
    for path in ("rulekit.yaml", "rules.d", "rules.d/a.yaml", "rules.d/..data", "..data"):
        assert plan.relevant(None, str(tmp_path / "current" / path)), path
    assert plan.relevant(None, str(tmp_path / "releases" / "41" / "rulekit.yaml"))
    for path in ("rules.d/._a.yaml", "rules.d/.a.yaml.swp", "rules.d/a.yaml~", "x.yaml", "db"):
        assert not plan.relevant(None, str(tmp_path / "current" / path)), path
    (tmp_path / "releases" / "42" / "rules.d").mkdir(parents=True)
    os.replace(tmp_path / "current", tmp_path / "old")
    (tmp_path / "current").symlink_to("releases/42")
    assert WatchPlan.of(config, rules).identity != plan.identity


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file names must be UTF-8")
def test_a_file_name_that_is_no_utf8_does_not_end_the_watch(tmp_path, processes):
    """watchfiles ends its watch on a name it cannot decode (an archive from another system
    unpacked beside the rules): the daemon never reloaded on a change again."""
    config = write_setup(tmp_path, greeting(1))
    process = processes(config).wait_ready()
    version = health(process)["rules_version"]
    rules = tmp_path / "rules.d"
    Path(os.fsdecode(bytes(rules) + b"/notes-\xfc.txt")).write_text("not rules")
    (rules / "rules.yaml").write_text(greeting(2))
    wait_for(lambda: health(process)["rules_version"] != version, timeout=20)
    version = health(process)["rules_version"]
    (rules / "rules.yaml").write_text(greeting(3))
    wait_for(lambda: health(process)["rules_version"] != version, timeout=20)
