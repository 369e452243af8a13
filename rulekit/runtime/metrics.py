"""The daemon's Prometheus metrics (``GET /metrics``).

One :class:`Metrics` per daemon, on its own registry: two daemons in one process (tests) never
share counters.
"""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Info, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
MAX_EVENT_NAMES = 50
"""Event names counted apart per channel (``rulekit_events_processed_total``); the names after
them, and any longer than :data:`MAX_EVENT_NAME` characters, are counted as ``other``."""
MAX_EVENT_NAME = 64
OTHER_EVENTS = "other"


class _KeptChildren:
    """``labels(...)`` that keeps the labelled children it returned: prometheus_client checks,
    converts and looks up the values under a lock on every call, and the ingest, processor and
    dispatcher ask for a child several times per webhook. (Children are never removed.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[tuple[Any, ...], Any] = {}

    def labels(self, *values: Any, **named: Any) -> Any:
        if named:
            return super().labels(*values, **named)  # type: ignore[misc]
        child = self._kept.get(values)
        if child is None:
            child = self._kept[values] = super().labels(*values)  # type: ignore[misc]
        return child


class Counter(_KeptChildren, prometheus_client.Counter):
    """A counter whose labelled children are kept (:class:`_KeptChildren`)."""


class Histogram(_KeptChildren, prometheus_client.Histogram):
    """A histogram whose labelled children are kept (:class:`_KeptChildren`)."""


class Metrics:
    """Counters, gauges and histograms the ingest, processor, dispatcher and reloader update."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.webhooks = Counter(
            "rulekit_webhooks_total",
            "Webhook requests answered, by channel and HTTP status.",
            ["channel", "status"],
            registry=registry,
        )
        self.events_received = Counter(
            "rulekit_events_received_total",
            "Webhook bodies persisted to the inbox (redeliveries not counted).",
            ["channel"],
            registry=registry,
        )
        self._event_names: dict[str, set[str]] = {}
        self.events_processed = Counter(
            "rulekit_events_processed_total",
            "Normalized events evaluated and recorded, by channel and event name.",
            ["channel", "event"],
            registry=registry,
        )
        self.events_failed = Counter(
            "rulekit_events_failed_total",
            "Inbox items set aside because the provider or engine failed on them.",
            ["channel"],
            registry=registry,
        )
        self.rule_matched = Counter(
            "rulekit_rule_matched_total",
            "Events recorded whose conditions held for a rule, by rule.",
            ["rule"],
            registry=registry,
        )
        self.actions = Counter(
            "rulekit_actions_total",
            "Action attempts by rule, action and outcome (done, retry, dead).",
            ["rule", "action", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "rulekit_action_retries_total",
            "Action attempts that will be retried.",
            ["action"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "rulekit_dead_letters_total",
            "Action jobs dead-lettered (out of retries, or a permanent failure).",
            ["action"],
            registry=registry,
        )
        self.inbox_depth = Gauge(
            "rulekit_inbox_pending",
            "Inbox items claimed by the last processing round (0 when caught up).",
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "rulekit_outbox_pending",
            "Action jobs this daemon holds: executing or waiting for their turn or retry.",
            registry=registry,
        )
        self.store_round_trips = Counter(
            "rulekit_store_round_trips",
            "Round trips to the database server (PostgreSQL): statements, BEGINs and commits.",
            registry=registry,
        )
        self.latency = Histogram(
            "rulekit_webhook_to_action_seconds",
            "From a webhook's arrival to its action's successful completion.",
            ["action"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reload_errors = Counter(
            "rulekit_reload_errors_total",
            "Reloads refused because the new rules or config were invalid.",
            registry=registry,
        )
        self.reloads = Counter(
            "rulekit_reloads_total", "Successful reloads of rules and config.", registry=registry
        )
        self.rules_loaded = Gauge(
            "rulekit_rules_loaded", "Rules in the active set.", registry=registry
        )
        self.rules_version = Info(
            "rulekit_rules_version", "The active rules' content hash.", registry=registry
        )
        self.last_reload_ok = Gauge(
            "rulekit_last_reload_success",
            "1 when the last reload attempt succeeded, 0 when it was refused.",
            registry=registry,
        )
        self.watch_up = Gauge(
            "rulekit_watch_up",
            "1 while the rules and config files are watched for changes, 0 while the watch "
            "fails (a save is not reloaded until it is back) or is off (--no-watch).",
            registry=registry,
        )

        self.signin_refused = Counter(
            "rulekit_console_signin_refused_total",
            "Console sign-ins refused with 429 by the throttle: the address must wait "
            "(reason=address) or every address must (reason=global).",
            ["reason"],
            registry=registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def event_processed(self, channel: str, event: str) -> None:
        """Count an event evaluated and recorded. Its name is a label: the ``webhook`` channel
        takes any name its sender writes, and each label's series is kept for good, so a
        channel's names beyond :data:`MAX_EVENT_NAMES` (and long ones) count as ``other``
        rather than grow the daemon's memory and ``/metrics`` without end."""
        names = self._event_names.setdefault(channel, set())
        if event not in names:
            if len(names) >= MAX_EVENT_NAMES or len(event) > MAX_EVENT_NAME:
                event = OTHER_EVENTS
            else:
                names.add(event)
        self.events_processed.labels(channel, event).inc()
