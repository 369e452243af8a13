"""The team as conditions and templates see it: ``team.online``, ``team.online_in('support')``,
``team.open_count(email)`` and ``team.tracked``.

The evaluation worker has no store: what the store knew of the team (who is online, how many
open conversations each agent holds) travels with the request as :class:`TeamFacts`, read by the
daemon where it reads cooldown marks. The engine shows each event a :class:`Team` over those
facts, the agent directory and the event's channel; the team remembers what a rule read of it,
so that the trace can say which presence the decision used.

Before any agent has ever signed in to the console, presence is not tracked: every agent with
access to the channel counts as online — as ``assign``, whose ``only_online`` is false by
default then, treats them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rulekit.directory import AgentEntry, Directory
from rulekit.errors import TemplateError, did_you_mean


@dataclass(frozen=True)
class TeamFacts:
    """What the store knew of the team when the event was prepared.

    ``presence`` is each agent's presence by lower-cased email (``online``, ``away``,
    ``offline``), or None while presence is not tracked (nobody ever signed in; in a dry run
    without an ``online:`` list): then everyone counts as online. ``open`` is the number of open
    conversations assigned to each agent, by lower-cased email."""

    presence: Mapping[str, str] | None = None
    open: Mapping[str, int] = field(default_factory=dict)
    stored: bool = False
    """Whether ``presence`` is the store's, which keeps whoever ever signed in: the
    :class:`Team` reads in it only the agents of the current directory (an agent a reload
    removed is nobody online, and no sign that presence is tracked). A dry run's ``online:``
    and a trace's facts are taken as they are said."""

    @classmethod
    def of(cls, presence: Mapping[str, str], open_counts: Mapping[str, int]) -> TeamFacts:
        """From the store's answers: an empty presence (nobody ever signed in) is not
        tracked."""
        return cls(dict(presence) or None, dict(open_counts), stored=True)

    @classmethod
    def simulated(cls, online: frozenset[str] | None, open_counts: Mapping[str, int]) -> TeamFacts:
        """A dry run's: ``online`` (lower-cased emails) are online, everyone else offline;
        None: everyone is online."""
        presence = None if online is None else dict.fromkeys(online, "online")
        return cls(presence, dict(open_counts))

    @classmethod
    def recorded(cls, seen: Any) -> TeamFacts | None:
        """The facts as far as a trace's ``team`` (what the rules read) tells them: who was
        online, the open counts read; None when the trace has none (``rulekit why
        --excluded`` and ``replay`` evaluate recorded events again with them)."""
        if not isinstance(seen, Mapping) or not seen:
            return None
        counted = seen.get("open")
        open_counts: dict[str, int] = dict(counted) if isinstance(counted, Mapping) else {}
        if not seen.get("tracked"):
            return cls(None, open_counts)
        online = [*(seen.get("online") or [])]
        for emails in (seen.get("online_in") or {}).values():
            online.extend(emails)
        return cls({str(email).lower(): "online" for email in online}, open_counts)


class Team:
    """``team`` in conditions and templates: the agents with access to the event's channel,
    in the directory's order, as the facts of the event's request say."""

    READABLE = frozenset({"online", "online_in", "open_count", "tracked"})
    """What rules may read of it (the sandbox shows nothing else)."""

    __slots__ = ("_channel", "_directory", "_facts", "_presence", "seen")

    def __init__(self, facts: TeamFacts, directory: Directory, channel: str) -> None:
        self._facts = facts
        self._directory = directory
        presence = facts.presence
        if presence is not None and facts.stored:
            presence = directory.presence_of_agents(presence) or None
        self._presence = presence
        """Who is online, away or offline; None: presence is not tracked (everyone online)."""
        self._channel = channel
        self.seen: dict[str, Any] = {}
        """What rules read, as they saw it (for the trace); empty when nothing was read."""

    def _note(self, key: str, value: Any) -> None:
        if not self.seen:
            self.seen["tracked"] = self._presence is not None
        self.seen[key] = value

    def _online(self, agents: list[AgentEntry]) -> list[str]:
        # lower-cased, as presence keeps them: `conversation.assignee|lower in team.online`
        emails = [agent.email.lower() for agent in agents]
        presence = self._presence
        if presence is None:
            return emails
        return [email for email in emails if presence.get(email) == "online"]

    @property
    def tracked(self) -> bool:
        """Whether presence is tracked (an agent has ever signed in to the console)."""
        self._note("tracked", self._presence is not None)
        return self._presence is not None

    @property
    def online(self) -> list[str]:
        """The emails (lower-cased) of the agents with access to the channel who are
        online."""
        found = self._online(self._directory.eligible(self._channel))
        self._note("online", found)
        return found

    def online_in(self, group: Any) -> list[str]:
        """The emails of the agents of ``group`` with access to the channel who are online."""
        groups = self._directory.groups
        if not isinstance(group, str) or (groups and group not in groups):
            raise TemplateError(unknown_group(group, groups))
        found = self._online(self._directory.eligible(self._channel, group))
        self._note("online_in", {**self.seen.get("online_in", {}), group: found})
        return found

    def open_count(self, email: Any) -> int:
        """How many open conversations are assigned to the agent ``email`` (any case; 0 for
        nobody)."""
        if email is not None and not isinstance(email, str):
            raise TemplateError(f"open_count() takes an agent's email, not {type(email).__name__}")
        key = (email or "").strip().lower()
        count = self._facts.open.get(key, 0) if key else 0
        if key:
            self._note("open", {**self.seen.get("open", {}), key: count})
        return count

    def __repr__(self) -> str:
        return f"Team(channel={self._channel!r})"


def unknown_group(group: Any, groups: list[str]) -> str:
    """The problem with a group name the directory does not know, with a did-you-mean."""
    hint = did_you_mean(str(group), groups)
    return f"unknown group {group!r}{hint} (configured: {', '.join(groups) or 'none'})"


def describe_seen(seen: Mapping[str, Any], shows: Callable[[str], bool] | None = None) -> list[str]:
    """What a trace's ``team`` says, in words, one line per fact read (``rulekit why``, the
    dry run, the console).

    ``shows`` says which emails the reader may see (all when None). The others are counted,
    never named, so that a line stays true to what the rules read: a list names them as ``N
    others`` (``online in sales: anna@example.com, 1 other``), and the open counts of emails left
    out make one line, ``open conversations of N others: not shown``."""

    def listed(emails: list[str]) -> str:
        shown = [email for email in emails if shows is None or shows(email)]
        left_out = len(emails) - len(shown)
        return ", ".join([*shown, *([others(left_out)] if left_out else [])]) or "nobody"

    lines = []
    if not seen.get("tracked"):
        lines.append("presence not tracked: everyone with access counts as online")
    if "online" in seen:
        lines.append(f"online: {listed(seen['online'])}")
    for group, emails in (seen.get("online_in") or {}).items():
        lines.append(f"online in {group}: {listed(emails)}")
    left_out = 0
    for email, count in (seen.get("open") or {}).items():
        if shows is None or shows(email):
            lines.append(f"open conversations of {email}: {count}")
        else:
            left_out += 1
    if left_out:
        lines.append(f"open conversations of {others(left_out)}: not shown")
    return lines


def others(count: int) -> str:
    """``1 other``, ``2 others``: emails a reader may not see, counted."""
    return f"{count} other{'' if count == 1 else 's'}"


def seen_summary(seen: Any, shows: Callable[[str], bool] | None = None) -> list[str]:
    """What the console shows of a trace's ``team`` (as ``team`` of an entry of its event
    list and of its live feed): :func:`describe_seen`'s lines, naming only the emails
    ``shows`` accepts (the console's viewer may see); none when the rules read nothing of
    ``team``."""
    return describe_seen(seen, shows) if isinstance(seen, Mapping) and seen else []


def unknown_groups(node: Any, groups: list[str]) -> list[str]:
    """Problems with group names written as constants in ``team.online_in('...')`` calls of an
    expression's node tree, with a did-you-mean (none when the directory lists no groups)."""
    from jinja2 import nodes

    if not groups:
        return []
    problems = []
    calls = [node] if isinstance(node, nodes.Call) else []
    for call in [*calls, *node.find_all(nodes.Call)]:
        target = call.node
        if not (
            isinstance(target, nodes.Getattr)
            and target.attr == "online_in"
            and isinstance(target.node, nodes.Name)
            and target.node.name == "team"
        ):
            continue
        if len(call.args) != 1 or call.kwargs:
            problems.append("team.online_in() takes one argument, a group's name")
        elif isinstance(call.args[0], nodes.Const) and call.args[0].value not in groups:
            problems.append(unknown_group(call.args[0].value, groups))
    return problems
