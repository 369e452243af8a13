"""``slack``: post a message to a Slack channel (``chat.postMessage``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr

from rulekit.actions.base import Action, ActionContext
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to (``&``, ``<``, ``>``), so a
    value like ``<!channel>`` is shown, not obeyed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackIntegration(StrictModel):
    token: SecretStr | None = Field(None, description="A bot token (xoxb-...), from ${ENV}.")
    base_url: str = Field("https://slack.com/api/", description="The Web API's base URL.")


class SlackParams(StrictModel):
    channel: str = Field(description="A channel id or name (#support).")
    text: str = Field(min_length=1, description="The message, in Slack mrkdwn.")
    blocks: list[dict[str, Any]] | None = Field(None, description="Optional Block Kit blocks.")


class Slack(Action):
    name = "slack"
    description = "post a message to a Slack channel"
    Params = SlackParams
    integration = "slack"
    Integration = SlackIntegration
    markup_fields = ("text",)

    @classmethod
    def escaper(cls, params: dict[str, Any]):
        return escape_mrkdwn

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        if self.settings is None:
            return "Slack is not configured"
        token = self.settings.token  # type: ignore[attr-defined]
        if token is None or not token.get_secret_value():
            return "the Slack token is empty"
        return None

    def destination(self, params: SlackParams) -> str:  # type: ignore[override]
        return f"slack:{params.channel}"

    def describe(self, params: SlackParams, context: ActionContext) -> str:  # type: ignore[override]
        return f"post to Slack {params.channel}: {params.text!r}"


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Slack)
