"""play_sound: targeting, the live stream, bundled and custom sounds, the host player."""

from __future__ import annotations

import asyncio
import os
import sys
import wave

from action_helpers import make_config, make_context, make_event

from rulekit.actions.play_sound import (
    BUNDLED_SOUNDS,
    SOUNDS_DIR,
    PlaySound,
    PlaySoundParams,
    SoundsIntegration,
)
from rulekit.event import Event


def play(params: PlaySoundParams, event=None, config=None, action=None, **context_fields):
    published: list[dict] = []

    async def publish(message: dict) -> None:
        published.append(message)

    context = make_context(event or make_event(), config or make_config(), publish=publish)
    for name, value in context_fields.items():
        setattr(context, name, value)
    result = asyncio.run((action or PlaySound()).execute(params, context))
    return result, published


def test_bundled_sounds_are_small_wav_files():
    for name in BUNDLED_SOUNDS:
        path = SOUNDS_DIR / f"{name}.wav"
        assert path.stat().st_size < 30_000
        with wave.open(str(path)) as sound:
            assert sound.getnframes() / sound.getframerate() > 0.3


def test_the_assignee_hears_it_by_directory_email():
    event = make_event(conversation={"assignee": "ann@EXAMPLE.com"})
    result, published = play(PlaySoundParams(sound="chime"), event)
    assert published == [
        {
            "type": "sound",
            "sound": "chime",
            "to": ["Ann@Example.com"],
            "event_id": event.id,
            "channel": event.channel,
        }
    ]
    assert result == {"sound": "chime", "to": ["Ann@Example.com"], "published": True}


def test_an_assignment_earlier_in_the_plan_wins_over_the_event():
    event = make_event(conversation={"assignee": "ann@example.com"})
    assigned = Event(
        channel="online-chat",
        event="assigned",
        origin="rulekit",
        conversation={"id": "conv-1", "assignee": "dan@example.com"},
    )
    _, published = play(PlaySoundParams(), event, emitted=[assigned])
    assert published[0]["to"] == ["dan@example.com"]


def test_unassigned_conversations_ring_their_group_with_access():
    event = make_event(conversation={"group": "support"})
    _, published = play(PlaySoundParams(sound="bell"), event)
    assert published[0]["to"] == ["Ann@Example.com", "Cara@example.COM", "eve@example.com"]
    _, published = play(PlaySoundParams(), make_event())  # no group anywhere: everyone
    assert published[0]["to"] == ["*"]


def test_groups_agents_and_everyone():
    _, published = play(PlaySoundParams(to="group:sales"))
    assert published[0]["to"] == ["Cara@example.COM", "dan@example.com"]
    _, published = play(PlaySoundParams(to="DAN@example.com"))
    assert published[0]["to"] == ["dan@example.com"]
    _, published = play(PlaySoundParams(to="everyone", sound="alert"))
    assert published[0]["to"] == ["*"]


def test_without_a_live_stream_nothing_is_published_and_the_result_says_why():
    context = make_context()
    result = asyncio.run(PlaySound().execute(PlaySoundParams(to="everyone"), context))
    assert result == {
        "sound": "bell",
        "to": ["*"],
        "published": False,
        "reason": "no live stream to publish to",
    }


def test_check_rejects_unknown_sounds_and_targets(tmp_path):
    config = make_config()
    assert PlaySound.check(PlaySoundParams(sound="bel"), ["online-chat"], config) == [
        "unknown sound 'bel' (did you mean 'bell'?); available: alert, bell, chime"
    ]
    assert PlaySound.check(PlaySoundParams(to="group:sale"), ["online-chat"], config) == [
        "unknown group 'sale' (did you mean 'sales'?)"
    ]
    assert PlaySound.check(PlaySoundParams(to="zed@example.com"), [], config) == [
        "agent 'zed@example.com' is not in the agent directory"
    ]
    assert PlaySound.check(PlaySoundParams(to="somebody"), [], config) == [
        "to: 'somebody' is not assignee, everyone, group:<name> or an email"
    ]
    assert PlaySound.check(PlaySoundParams(), [], config) == []


def test_custom_sounds_come_from_the_config(tmp_path):
    (tmp_path / "door.wav").write_bytes((SOUNDS_DIR / "bell.wav").read_bytes())
    config = make_config(sounds=SoundsIntegration(files={"door": "door.wav", "gone": "gone.wav"}))
    config.path = tmp_path / "rulekit.yaml"
    assert PlaySound.check(PlaySoundParams(sound="door"), [], config) == []
    [problem] = PlaySound.check(PlaySoundParams(sound="gone"), [], config)
    assert problem.startswith("the file of sound 'gone' does not exist:")
    _, published = play(PlaySoundParams(sound="door", to="everyone"), config=config)
    assert published[0]["sound"] == "door"


def test_the_host_player_runs_without_a_shell(tmp_path):
    out = tmp_path / "played.txt"
    script = "import sys; open(sys.argv[2], 'w').write(sys.argv[1])"
    settings = SoundsIntegration(player=[sys.executable, "-c", script, "{file}", str(out)])
    result, _ = play(PlaySoundParams(sound="alert", to="everyone"), action=PlaySound(settings))
    assert result["host"] == {"played": True}
    assert out.read_text() == str(SOUNDS_DIR / "alert.wav")


def test_a_failing_host_player_is_reported_in_the_result():
    failing = SoundsIntegration(player=[sys.executable, "-c", "import sys; sys.exit(3)", "{file}"])
    result, published = play(PlaySoundParams(to="everyone"), action=PlaySound(failing))
    assert published and result["host"]["played"] is False
    assert result["host"]["error"].startswith("exit status 3")
    missing = SoundsIntegration(player=["/nonexistent/player", "{file}"])
    result, _ = play(PlaySoundParams(to="everyone"), action=PlaySound(missing))
    assert result["host"]["error"].startswith("cannot run '/nonexistent/player'")


def test_the_player_must_name_the_file():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="must name the file"):
        SoundsIntegration(player=["aplay"])


def test_the_host_player_gets_no_configured_secret_in_its_environment(tmp_path, monkeypatch):
    """A sound player needs no bot token: the variables that hold a configured secret (the
    whole value, or within it) are left out of its environment; the rest is passed on."""
    import json

    from rulekit.actions.slack import SlackIntegration

    token = "xoxb-1234-secret-token"
    monkeypatch.setenv("SLACK_BOT_TOKEN", token)
    monkeypatch.setenv("NOTIFY_URL", f"https://hooks.example/?token={token}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")  # what a player does need
    out = tmp_path / "environment.json"
    script = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[2], 'w'))"
    settings = SoundsIntegration(player=[sys.executable, "-c", script, "{file}", str(out)])
    config = make_config(slack=SlackIntegration(token=token))
    result, _ = play(PlaySoundParams(to="everyone"), config=config, action=PlaySound(settings))
    assert result["host"] == {"played": True}
    environment = json.loads(out.read_text())
    assert "SLACK_BOT_TOKEN" not in environment and "NOTIFY_URL" not in environment
    assert token not in out.read_text()
    assert environment["XDG_RUNTIME_DIR"] == "/run/user/1000"
    assert environment["PATH"] == os.environ["PATH"]


def test_reading_the_assignee_waits_off_the_event_loop(tmp_path):
    """``to: assignee`` reads the stored conversation in a worker thread: while another
    connection holds the SQLite file's write lock (a ``rulekit`` command, a backup), the call
    waits and the daemon's event loop goes on. Before, the read ran on the loop, which stood
    still until the lock was released (or the busy timeout passed)."""
    import sqlite3
    import threading

    from rulekit.event import Conversation
    from rulekit.store.sqlite import SQLiteStore

    path = tmp_path / "rulekit.sqlite3"
    store = SQLiteStore(path)
    with store.transaction() as state:
        state.save_conversation(
            "online-chat", "k", Conversation(id="conv-1", assignee="anna@shop.example")
        )
    blocker = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release() -> None:
        blocker.execute("ROLLBACK")
        released.set()

    async def main() -> tuple[int, dict]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while not released.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(ticker())
        context = make_context(make_event(), make_config(), store=store)
        call = asyncio.create_task(PlaySound().execute(PlaySoundParams(to="assignee"), context))
        threading.Timer(1.0, release).start()
        result = await call
        await beat
        return ticks, result

    try:
        ticks, result = asyncio.run(main())
    finally:
        blocker.close()
        store.close()
    assert result["to"] == ["anna@shop.example"]
    assert ticks > 10  # the loop went on while the lock was held (blocked: one tick or two)
