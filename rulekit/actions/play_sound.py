"""``play_sound``: a sound notification for agents.

The sound is published to the daemon's live stream (``context.publish``), which the agents'
console plays in the browser, addressed with ``to:``:

* ``assignee`` (the default) — the conversation's responsible agent; when nobody is assigned
  yet, the agents of its group (else everyone) who have access to the channel;
* ``group:<name>`` — the agents of a group who have access to the channel;
* an agent's email;
* ``everyone`` — every agent with access to the event's channel (``"*"``); the console never
  plays a sound for an agent who may not handle its channel.

Bundled sounds: ``bell``, ``chime``, ``alert`` (small WAV files next to this module). The
``sounds`` integration adds custom files and, optionally, a host player command that plays the
sound on the machine rulekit runs on as well (run without a shell, ``{file}`` replaced). The
player gets the daemon's environment without the variables that hold a configured secret
(:func:`rulekit.secrets.without_secrets`): a sound player needs no bot token.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from rulekit.actions.assign import default_group
from rulekit.actions.base import Action, ActionContext
from rulekit.config import Config
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.secrets import secret_values, without_secrets

BUNDLED_SOUNDS = ("bell", "chime", "alert")
SOUNDS_DIR = Path(__file__).resolve().parent / "sounds"
EVERYONE = "*"


class SoundsIntegration(StrictModel):
    """``integrations: {sounds: ...}``: custom sounds and the host player."""

    files: dict[str, str] = Field(
        default_factory=dict,
        description="Custom sounds: name -> audio file (relative to the config file).",
    )
    player: list[str] | None = Field(
        None,
        description='A command that plays a file on the host, e.g. ["aplay", "-q", "{file}"].',
    )

    @field_validator("player")
    @classmethod
    def _player(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not any("{file}" in arg for arg in value)):
            raise ValueError('the player command must name the file as "{file}"')
        return value


class PlaySoundParams(StrictModel):
    sound: str = Field("bell", description="A bundled sound (bell, chime, alert) or a custom one.")
    to: str = Field(
        "assignee",
        description="Who hears it: assignee, everyone, group:<name> or an agent's email.",
    )


def sound_names(config: Config) -> list[str]:
    """Every sound a rule may name with this config."""
    return sorted({*BUNDLED_SOUNDS, *_custom_files(config)})


def sound_file(name: str, config: Config) -> Path | None:
    """The audio file of a sound (a custom file wins over a bundled one of the same name)."""
    custom = _custom_files(config).get(name)
    if custom is not None:
        path = Path(custom)
        return path if path.is_absolute() else config.base_dir / path
    if name in BUNDLED_SOUNDS:
        return SOUNDS_DIR / f"{name}.wav"
    return None


def _custom_files(config: Config) -> dict[str, str]:
    settings = config.integrations.get("sounds")
    return dict(getattr(settings, "files", None) or {})


class PlaySound(Action):
    """Publish a sound to the agents' console, targeted at an agent, a group or everyone."""

    name = "play_sound"
    description = "play a sound on the agents' console"
    Params = PlaySoundParams
    integration = "sounds"
    Integration = SoundsIntegration

    @classmethod
    def sounds(cls, config: Config) -> dict[str, Path]:
        found = {name: sound_file(name, config) for name in sound_names(config)}
        return {name: path for name, path in found.items() if path is not None}

    @classmethod
    def check(cls, params: PlaySoundParams, channels: list[str], config: Config) -> list[str]:  # type: ignore[override]
        from rulekit.errors import did_you_mean

        problems = []
        names = sound_names(config)
        if "{" not in params.sound:
            path = sound_file(params.sound, config)
            if path is None:
                problems.append(
                    f"unknown sound {params.sound!r}{did_you_mean(params.sound, names)}; "
                    f"available: {', '.join(names)}"
                )
            elif not path.is_file():
                problems.append(f"the file of sound {params.sound!r} does not exist: {path}")
        target = params.to
        if "{" not in target and target not in ("assignee", "everyone"):
            if target.startswith("group:"):
                group = target.removeprefix("group:")
                known = config.directory.groups
                if known and group not in known:
                    problems.append(f"unknown group {group!r}{did_you_mean(group, known)}")
            elif "@" in target:
                if config.directory.get(target) is None:
                    problems.append(f"agent {target!r} is not in the agent directory")
            else:
                problems.append(
                    f"to: {target!r} is not assignee, everyone, group:<name> or an email"
                )
        return problems

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        return None  # bundled sounds need no configuration

    def describe(self, params: PlaySoundParams, context: ActionContext) -> str:  # type: ignore[override]
        to = self.recipients(params, context)
        who = "everyone" if to == [EVERYONE] else ", ".join(to) or "nobody"
        host = " and on the host" if self._player() else ""
        return f"play sound {params.sound!r} for {params.to} ({who}){host}"

    async def execute(self, params: PlaySoundParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        from rulekit.errors import PermanentActionError

        path = sound_file(params.sound, context.config)
        if path is None:
            raise PermanentActionError(f"unknown sound {params.sound!r}")
        # in a worker thread: ``to: assignee`` reads the stored conversation, and waiting for
        # the store (a write lock another process holds) must not hold up the event loop
        to = await asyncio.to_thread(self.recipients, params, context)
        message = {
            "type": "sound",
            "sound": params.sound,
            "to": to,
            "event_id": context.event.id,
            "channel": context.event.channel,
        }
        result: dict[str, Any] = {"sound": params.sound, "to": to, "published": False}
        if context.publish is not None and to:
            published = context.publish(message)
            if inspect.isawaitable(published):
                await published
            result["published"] = True
        elif not to:
            result["reason"] = "nobody to play it for"
        else:
            result["reason"] = "no live stream to publish to"
        player = self._player()
        if player:
            result["host"] = await self._play_on_host(player, path, context.config)
        return result

    # targeting -----------------------------------------------------------------------------
    def recipients(self, params: PlaySoundParams, context: ActionContext) -> list[str]:
        """The agents' emails (as the directory writes them) who hear the sound, or ``["*"]``."""
        directory = context.config.directory
        channel = context.event.channel
        target = params.to
        if target == "everyone":
            return [EVERYONE]
        if target.startswith("group:"):
            return [a.email for a in directory.eligible(channel, target.removeprefix("group:"))]
        if target != "assignee":
            agent = directory.get(target)
            return [agent.email] if agent else [target]
        assignee = self._assignee(context)
        if assignee:
            agent = directory.get(assignee)
            return [agent.email if agent else assignee]
        group = context.event.conversation.group or default_group(context.config, channel)
        if group is None:
            return [EVERYONE]
        return [a.email for a in directory.eligible(channel, group)]

    @staticmethod
    def _assignee(context: ActionContext) -> str | None:
        """The assignee as of now: an ``assign`` earlier in the same plan wins over the store,
        which wins over the event (it may be stale)."""
        conversation_id = context.event.conversation.id
        for emitted in reversed(context.emitted):
            if emitted.event == "assigned" and emitted.conversation.id == conversation_id:
                return emitted.conversation.assignee
        if context.store is not None and conversation_id:
            with context.store.transaction() as state:
                try:
                    found = state.find_conversation(context.event.channel, conversation_id)
                except NotImplementedError:
                    found = None
            if found is not None:
                return found[1].assignee
        return context.event.conversation.assignee

    # the host player -----------------------------------------------------------------------
    def _player(self) -> list[str] | None:
        return getattr(self.settings, "player", None)

    async def _play_on_host(self, player: list[str], path: Path, config: Config) -> dict[str, Any]:
        command = [arg.replace("{file}", str(path)) for arg in player]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=without_secrets(os.environ, secret_values(config)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return {"played": False, "error": f"cannot run {command[0]!r}: {exc.strerror}"}
        try:
            async with asyncio.timeout(self.timeout):
                _, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return {"played": False, "error": f"the player took over {self.timeout:g} s"}
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip()[-200:]
            return {"played": False, "error": f"exit status {process.returncode}: {detail}"}
        return {"played": True}


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(PlaySound)
