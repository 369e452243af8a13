"""``play_sound``: a sound notification on the agents' console."""

from __future__ import annotations


from pydantic import Field

from rulekit.actions.base import Action, ActionContext
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry

BUNDLED_SOUNDS = ("bell", "chime", "alert")


class PlaySoundParams(StrictModel):
    sound: str = Field("bell", description="A bundled sound (bell, chime, alert) or a custom one.")
    to: str = Field(
        "assignee",
        description="Who hears it: assignee, everyone, group:<name> or an agent's email.",
    )


class PlaySound(Action):
    """Publish a sound to the agents' console, targeted at an agent, a group or everyone."""

    name = "play_sound"
    description = "play a sound on the agents' console"
    Params = PlaySoundParams

    def describe(self, params: PlaySoundParams, context: ActionContext) -> str:  # type: ignore[override]
        return f"play sound {params.sound!r} for {params.to}"


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(PlaySound)


