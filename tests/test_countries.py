"""Country names as chat services send them, to ISO 3166-1 alpha-2 codes; and the hint for
rules that compare a country's name with a code."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from scaffold import make_event, write

from rulekit.cli.main import cli
from rulekit.countries import country_code
from rulekit.event import Client


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Germany", "DE"),
        ("germany", "DE"),
        ("  United   Kingdom ", "GB"),
        ("United States", "US"),
        ("Korea, Republic of", "KR"),
        ("Republic of Korea", "KR"),
        ("South Korea", "KR"),
        ("Russian Federation", "RU"),
        ("Russia", "RU"),
        ("Côte d'Ivoire", "CI"),
        ("Cote d\u2019Ivoire", "CI"),
        ("Ivory Coast", "CI"),
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Viet Nam", "VN"),
        ("Vietnam", "VN"),
        ("Czechia", "CZ"),
        ("Czech Republic", "CZ"),
        ("Kosovo", "XK"),
        # the forms of geolocation databases, CLDR and the UN
        ("The Gambia", "GM"),
        ("Bahamas, The", "BS"),
        ("Bosnia & Herzegovina", "BA"),
        ("St. Lucia", "LC"),
        ("St Kitts and Nevis", "KN"),
        ("St. Vincent & Grenadines", "VC"),
        ("U.S.", "US"),
        ("U.S.A.", "US"),
        ("U.S. Virgin Islands", "VI"),
        ("Congo - Kinshasa", "CD"),
        ("Congo (Brazzaville)", "CG"),
        ("Congo", "CG"),
        ("Myanmar (Burma)", "MM"),
        ("Korea (South)", "KR"),
        ("Iran (Islamic Republic of)", "IR"),
        ("Falkland Islands", "FK"),
        ("Cote d`Ivoire", "CI"),
        ("Sao Tome & Principe", "ST"),
        ("Macau", "MO"),
        ("Palestinian Territories", "PS"),
        ("Anonymous Proxy", None),
        ("Europe", None),
        ("DE", "DE"),
        ("deu", "DE"),
        ("Atlantis", None),
        ("", None),
        (None, None),
        ("x" * 10_000, None),
    ],
)
def test_country_names_become_codes(name: str | None, code: str | None) -> None:
    assert country_code(name) == code


def test_the_client_carries_the_code_of_its_country() -> None:
    assert Client(country="Austria").country_code == "AT"
    assert Client().country_code is None
    assert Client(country="Atlantis").country_code is None
    # given explicitly (a provider that sends codes), it is kept
    assert Client(country="Austria", country_code="CH").country_code == "CH"
    # stored events come back the same
    event = make_event(client={"country": "Spain"})
    assert type(event).model_validate(event.public()).client.country_code == "ES"


def test_check_warns_when_a_rule_compares_the_country_name_with_a_code(tmp_path: Any) -> None:
    rules = write(
        tmp_path / "rules.yaml",
        """
        - name: germans
          on: {channel: online-chat}
          if:
            - any: ["client.country == 'DE'", "client.country in ['AT', 'CH'] or true"]
            - client.country == 'Germany'
            - client.country_code == 'DE'
            - client.country|upper != 'FR'
            - "'it' == trigger.client.country|lower"
            - client.country|default('DE') == 'Germany'
          do:
            - play_sound: {sound: bell}
        """,
    )
    result = CliRunner().invoke(cli, ["check", str(rules)])
    assert result.exit_code == 0, result.output
    assert result.output.count("compares client.country") == 4
    assert "compares client.country with 'FR'" in result.output
    assert "compares client.country with 'it'" in result.output
    assert "rules.yaml:4: [0].if[0].any[0]: rule 'germans' compares client.country with 'DE'" in (
        result.output
    )
    assert "compares client.country with 'AT', 'CH'" in result.output
    assert "use client.country_code" in result.output
    strict = CliRunner().invoke(cli, ["check", "--strict", str(rules)])
    assert strict.exit_code == 1
