"""What the console shows a viewer of the team the rules read deciding about an event.

The trace of an event whose rules read ``team`` keeps the emails they read: the agents online
(``team.online``, ``team.online_in('sales')``) and whatever email a rule passed to
``team.open_count()``. The event list, a conversation's events and the live feed word it
(:func:`rulekit.team.seen_summary`) for each viewer as the console's presence shows the team:

* an agent of the directory is named only to a viewer who may see them
  (:meth:`~rulekit.server.console.sessions.Viewer.may_see_agent`: the admin, the agent
  themselves, the agents sharing a channel with them);
* an email that is no agent's (a client's, passed by a rule) is named only when it is the
  event's own client's: the console shows a client only to the agents of the client's channel,
  and the event reaches only those. Any other email is named to the admin only.

The others are counted, not named (``online in sales: 1 other``).

The same rule holds wherever else the console shows who acted (:meth:`TeamView.event`,
:meth:`TeamView.conversation`, :meth:`TeamView.thread_entry`): an event's ``agent``, its
message's author, the conversation's ``assignee`` and ``last_agent`` (also in ``changed``). An
agent of the directory the viewer may not see is not named there (an agent who answered from
the provider's own app, without rulekit's access to the channel; one whose access was
withdrawn): what they wrote stays, as the conversation's, by "an agent". An agent who is in no
directory entry is the provider's, acting in the viewer's channel, and stays named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rulekit.directory import Directory
from rulekit.server.console.sessions import Viewer
from rulekit.team import seen_summary

AGENT_FIELDS = ("assignee", "last_agent")
"""The fields of a conversation that hold an agent's email."""

READ = "team_read"
"""The live feed's key for what the rules read of ``team`` (with the event's client's email),
which each console stream words as ``team`` for its viewer and never sends as it is."""


@dataclass(frozen=True)
class TeamView:
    """The team as ``viewer`` may see it in the console, by the current directory."""

    viewer: Viewer
    directory: Directory

    def summary(self, seen: Any, client_email: Any) -> list[str]:
        """The lines of ``team`` for an event whose rules read ``seen`` and whose client's
        email is ``client_email``: the emails the viewer may not see counted, not named."""
        return seen_summary(seen, None if self.viewer.admin else self._shows(client_email))

    def _shows(self, client_email: Any) -> Callable[[str], bool]:
        client = client_email.strip().lower() if isinstance(client_email, str) else ""

        def shows(email: str) -> bool:
            key = str(email).strip().lower()
            agent = self.directory.get(key)
            if agent is not None:
                return self.viewer.may_see_agent(agent)
            return bool(client) and key == client

        return shows

    def message(self, message: dict[str, Any]) -> dict[str, Any]:
        """A live-feed message as the viewer receives it: what the rules read of ``team``
        (:data:`READ`) worded as its ``team``."""
        if READ not in message:
            return message
        shown = {key: value for key, value in message.items() if key != READ}
        read = message[READ]
        if isinstance(read, Mapping):
            lines = self.summary(read.get("seen"), read.get("client_email"))
            if lines:
                shown["team"] = lines
        return shown

    # who acted ------------------------------------------------------------------------------
    def hides(self, email: Any) -> bool:
        """Whether ``email`` is an agent of the directory the viewer may not see."""
        if self.viewer.admin or not isinstance(email, str):
            return False
        agent = self.directory.get(email.strip())
        return agent is not None and not self.viewer.may_see_agent(agent)

    def conversation(self, conversation: Any) -> Any:
        """A conversation (as JSON) without the agents the viewer may not see; an assignee
        left out leaves ``assignee_hidden: true`` (someone is assigned: it is not unassigned)."""
        if not isinstance(conversation, dict) or not any(
            self.hides(conversation.get(name)) for name in AGENT_FIELDS
        ):
            return conversation
        shown = {
            key: None if key in AGENT_FIELDS and self.hides(value) else value
            for key, value in conversation.items()
        }
        if self.hides(conversation.get("assignee")):
            shown["assignee_hidden"] = True
        return shown

    def event(self, data: dict[str, Any]) -> dict[str, Any]:
        """An event's data as the viewer is shown it: the agents they may not see unnamed (its
        ``agent`` keeps only ``known``; its message's author stays ``agent``)."""
        if self.viewer.admin:
            return data
        shown = dict(data)
        agent = data.get("agent")
        if isinstance(agent, dict) and self.hides(agent.get("email")):
            shown["agent"] = {
                key: value if key == "known" else None for key, value in agent.items()
            }
        message = data.get("message")
        if isinstance(message, dict) and self.hides(message.get("agent")):
            shown["message"] = {**message, "agent": None}
        if "conversation" in data:
            shown["conversation"] = self.conversation(data["conversation"])
        changed = data.get("changed")
        if isinstance(changed, dict):
            shown["changed"] = {
                key: self._change(value) if key in AGENT_FIELDS else value
                for key, value in changed.items()
            }
        return shown

    def _change(self, change: Any) -> Any:
        if not isinstance(change, dict):
            return change
        return {
            key: None if key in ("from", "to") and self.hides(value) else value
            for key, value in change.items()
        }

    def action(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A job of the conversation's actions without the agents the viewer may not see in
        its result (``assign``'s ``assigned``, ``play_sound``'s ``to``: any value, or item of
        a list, that is such an agent's email)."""
        result = entry.get("result")
        if self.viewer.admin or not isinstance(result, dict):
            return entry
        shown = {key: self._unnamed(value) for key, value in result.items()}
        return entry if shown == result else {**entry, "result": shown}

    def _unnamed(self, value: Any) -> Any:
        if isinstance(value, list):
            return [None if self.hides(item) else item for item in value]
        return None if self.hides(value) else value

    def thread_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A message of the thread without its author's name when the viewer may not see them."""
        if not self.hides(entry.get("agent")):
            return entry
        return {**entry, "agent": None, "agent_name": None}
