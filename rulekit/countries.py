"""Country names to ISO 3166-1 alpha-2 codes.

Chat services send a visitor's country as a **name** ("Germany"), while admins think in codes
(``client.country_code == 'DE'``). :func:`country_code` reads a name (ISO's short, official or
common name, in any case, with or without accents), an alpha-2 or alpha-3 code, or one of the
everyday names ISO does not use ("Russia", "Turkey", "Ivory Coast", ...). The table comes from
``pycountry`` (ISO's own data, maintained), built once on first use.
"""

from __future__ import annotations

import functools
import unicodedata

ALIASES = {
    "russia": "RU",
    "turkey": "TR",
    "macedonia": "MK",
    "republic of macedonia": "MK",
    "palestine": "PS",
    "ivory coast": "CI",
    "cape verde": "CV",
    "swaziland": "SZ",
    "vatican": "VA",
    "vatican city": "VA",
    "brunei": "BN",
    "kosovo": "XK",  # not in ISO 3166-1; the user-assigned code everyone uses
    "dr congo": "CD",
    "democratic republic of the congo": "CD",
    "republic of the congo": "CG",
    "micronesia": "FM",
    "the netherlands": "NL",
    "holland": "NL",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "uk": "GB",
    "usa": "US",
    "united states of america": "US",
    "east timor": "TL",
    "burma": "MM",
    "south korea": "KR",
    "north korea": "KP",
    "korea": "KR",
    "saint martin": "MF",
    "sint maarten": "SX",
    "us virgin islands": "VI",
    "british virgin islands": "VG",
    # the forms of geolocation databases and of CLDR's short names
    "congo, kinshasa": "CD",
    "congo - kinshasa": "CD",
    "congo, brazzaville": "CG",
    "congo - brazzaville": "CG",
    "korea, south": "KR",
    "korea, north": "KP",
    "macau": "MO",
    "vatican city state": "VA",
    "aland": "AX",
    "pitcairn islands": "PN",
    "caribbean netherlands": "BQ",
    "heard and mcdonald islands": "HM",
    "saint vincent and grenadines": "VC",
    "palestinian territories": "PS",
    "palestinian territory": "PS",
    "libyan arab jamahiriya": "LY",
    "macedonia, the former yugoslav republic of": "MK",
    "kosova": "XK",
    "xk": "XK",
}
"""Everyday names ISO 3166-1 does not list, as geolocation services and chat widgets send them."""


_APOSTROPHES = str.maketrans(dict.fromkeys("\u2018\u2019\u00b4\u02bc`", "'"))


def _key(name: str) -> str:
    """``name`` folded for lookup: no accents, lower case, single spaces, one apostrophe,
    ``&`` as ``and``, ``St.`` as ``saint``, no dots (``U.S.A.``), no leading ``The`` nor
    trailing ``, The``."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    plain = plain.casefold().translate(_APOSTROPHES).replace("&", " and ")
    words = []
    for word in plain.replace(" ,", ",").split():
        parts = word.split(".")
        if len(parts) > 2 and all(len(part) <= 1 for part in parts):
            words.append("".join(parts))  # "U.S.A." is "usa"
        else:
            words.extend(part for part in " ".join(parts).split())
    words = ["saint" if word == "st" and index == 0 else word for index, word in enumerate(words)]
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    key = " ".join(words)
    return key[: -len(", the")] if key.endswith(", the") else key


@functools.cache
def _table() -> dict[str, str]:
    import pycountry  # ISO's data: imported on the first lookup, not when rulekit starts

    table: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        for attribute in ("name", "official_name", "common_name", "alpha_2", "alpha_3"):
            value = getattr(country, attribute, None)
            if value:
                table.setdefault(_key(value), code)
        short = _key(country.name)
        if ", " in short:  # "Korea, Republic of" also as "Republic of Korea"
            head, tail = short.split(", ", 1)
            table.setdefault(f"{tail} {head}", code)
        if short.endswith(")") and " (" in short:  # "Falkland Islands (Malvinas)"
            table.setdefault(short[: short.index(" (")], code)
    table.update((_key(alias), code) for alias, code in ALIASES.items())
    return table


def country_code(name: str | None) -> str | None:
    """The ISO 3166-1 alpha-2 code of the country called ``name``; ``None`` when unknown."""
    if not name or len(name) > 100:
        return None
    return _lookup(name)


@functools.lru_cache(maxsize=1024)
def _lookup(name: str) -> str | None:
    # Visitors come from a few countries: folding the same name again is most of a lookup.
    table = _table()
    key = _key(name)
    found = table.get(key)
    if found is None and key.endswith(")") and " (" in key:
        # "Iran (Islamic Republic of)" is ISO's "Iran, Islamic Republic of"; "Myanmar (Burma)"
        # is Myanmar
        head, _, tail = key[:-1].partition(" (")
        found = table.get(f"{head}, {tail}") or table.get(head)
    return found
