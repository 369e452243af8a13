"""The client records of a Chatra channel's events: what Chatra sent of a visitor, over what
was known of them, for the fields the channel's ``client_data`` takes.

A field Chatra left out keeps its known value, ``custom`` data is merged key by key, and a
record nothing changed is the known record itself (most webhooks of a chat), so that the
normalizer saves a client only when it changed and ``client_updated`` compares records.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rulekit.countries import country_code
from rulekit.event import Client
from rulekit.models import trusted_instance, whole_builder

from .payload import ChatraClient
from .settings import CLIENT_FIELDS, ChatraSettings

_build_client = whole_builder(Client)
_EVERY_CLIENT_FIELD_GIVEN = frozenset(Client.model_fields.keys() - {"country_code"})


@dataclass(frozen=True)
class ClientRecords:
    """Makes the client records of one channel, as its settings say."""

    settings: ChatraSettings

    def record(self, data: ChatraClient, known: Client | None) -> Client:
        """The client record: what Chatra sent now, over what was known, for the configured
        ``client_data`` fields only. A field Chatra left out keeps its known value; an
        unchanged record is ``known`` itself."""
        if known is None:
            if self._takes_every_field:  # (the usual settings, for a new visitor: written out)
                return _build_client(
                    {
                        "id": data.id,
                        "name": data.name,
                        "display_name": data.display_name,
                        "email": data.email,
                        "phone": data.phone,
                        "notes": data.notes,
                        "ip": data.ip,
                        "browser": data.browser,
                        "os": data.os,
                        "language": data.language,
                        "browser_language": data.browser_language,
                        "country": data.country,
                        "country_code": None,  # derived from ``country`` by the build
                        "city": data.city,
                        "last_visit": data.last_visit,
                        "custom": data.custom,
                    },
                    _EVERY_CLIENT_FIELD_GIVEN,
                )
        elif self._unchanged(data, known):
            return known
        elif self._takes_every_field:  # (the usual settings: written out, as for a new one)
            had = known.__dict__
            client = _build_client(
                {
                    "id": data.id,
                    "name": had["name"] if data.name is None else data.name,
                    "display_name": data.display_name or had["display_name"],
                    "email": had["email"] if data.email is None else data.email,
                    "phone": had["phone"] if data.phone is None else data.phone,
                    "notes": had["notes"] if data.notes is None else data.notes,
                    "ip": had["ip"] if data.ip is None else data.ip,
                    "browser": had["browser"] if data.browser is None else data.browser,
                    "os": had["os"] if data.os is None else data.os,
                    "language": had["language"] if data.language is None else data.language,
                    "browser_language": had["browser_language"]
                    if data.browser_language is None
                    else data.browser_language,
                    "country": had["country"] if data.country is None else data.country,
                    "country_code": None,  # derived from ``country`` by the build
                    "city": had["city"] if data.city is None else data.city,
                    "last_visit": had["last_visit"] if data.last_visit is None else data.last_visit,
                    "custom": {**had["custom"], **data.custom},
                },
                _EVERY_CLIENT_FIELD_GIVEN,
            )
            return known if had == client.__dict__ else client
        names, sent_of, _ = self._compared
        sent = sent_of(data)
        custom = self._client_data[1]
        if known is None:
            values = dict(zip(names, sent, strict=True))
            if custom:
                values["custom"] = data.custom
            values["display_name"] = data.display_name
        else:
            had = known.__dict__
            values = {
                name: had[name] if value is None else value
                for name, value in zip(names, sent, strict=True)
            }
            if custom:
                values["custom"] = {**known.custom, **data.custom}
            values["display_name"] = data.display_name or known.display_name
        client = trusted_instance(Client, values)  # derives country_code from country
        if known is not None and had == client.__dict__:
            return known
        return client

    def _unchanged(self, data: ChatraClient, known: Client) -> bool:
        """Whether :meth:`record` would make ``known`` again (most webhooks of a chat): checked
        without making a record."""
        had = known.__dict__
        if (data.display_name or had["display_name"]) != had["display_name"]:
            return False
        if self._takes_every_field:  # (the usual settings: each field compared, written out)
            if not (
                data.id == had["id"]
                and (data.name is None or data.name == had["name"])
                and (data.email is None or data.email == had["email"])
                and (data.phone is None or data.phone == had["phone"])
                and (data.notes is None or data.notes == had["notes"])
                and (data.ip is None or data.ip == had["ip"])
                and (data.browser is None or data.browser == had["browser"])
                and (data.os is None or data.os == had["os"])
                and (data.language is None or data.language == had["language"])
                and (
                    data.browser_language is None
                    or data.browser_language == had["browser_language"]
                )
                and (data.country is None or data.country == had["country"])
                and (data.city is None or data.city == had["city"])
                and (data.last_visit is None or data.last_visit == had["last_visit"])
            ):
                return False
        else:
            _, sent_of, held_of = self._compared
            sent = sent_of(data)
            held = held_of(had)
            if sent != held:  # (else all the same, compared at once; a webhook leaving some out)
                for value, old in zip(sent, held, strict=True):  # (in ``_compared``'s order)
                    if value is not None and value != old:
                        return False
        if self._other_fields and any(had[name] is not None for name in self._other_fields):
            return False  # fields not taken (any longer) are dropped
        if had["country_code"] != (country_code(had["country"]) if had["country"] else None):
            return False
        known_custom = had["custom"]
        if not self._client_data[1]:
            return not known_custom
        sent_custom = data.custom
        # every key sent, with its value (usually none)
        return not sent_custom or sent_custom.items() <= known_custom.items()

    @functools.cached_property
    def _takes_every_field(self) -> bool:
        """Whether ``client_data`` takes every field Chatra can supply (the default)."""
        return set(self.settings.client_data) >= set(CLIENT_FIELDS)

    @functools.cached_property
    def _other_fields(self) -> tuple[str, ...]:
        """Client fields :meth:`record` leaves unset (``country_code`` is derived)."""
        taken = {*self._client_data[0], "id", "display_name", "custom", "country_code"}
        return tuple(name for name in Client.model_fields if name not in taken)

    @functools.cached_property
    def _compared(self) -> tuple[tuple[str, ...], Callable[[Any], Any], Callable[[Any], Any]]:
        """``id`` and the ``client_data`` fields, with what gets their values, as a tuple, from
        a read client and from a record's ``__dict__``."""
        names = ("id", *self._client_data[0])
        if len(names) == 1:  # (the getters give a value, not a tuple, for one name)
            return names, lambda data: (data.id,), lambda had: (had["id"],)
        return names, operator.attrgetter(*names), operator.itemgetter(*names)

    @functools.cached_property
    def _client_data(self) -> tuple[tuple[str, ...], bool]:
        """The ``client_data`` fields, ``custom`` apart (merged, not replaced)."""
        wanted = self.settings.client_data
        return tuple(name for name in wanted if name != "custom"), "custom" in wanted
