"""A recorded store holding a client's personal data in every form a real daemon stores it.

A daemon (real HTTP, real store) receives two Chatra webhooks of one client and one of another;
its rules render the client's data into Slack mrkdwn, Telegram HTML and Telegram MarkdownV2,
read the client's open conversations (``team.open_count(client.email)``: the trace keeps the
email as a key) and reply through Chatra; one Telegram send and the Chatra reply fail once with
errors quoting the escaped text. :func:`forms_of` lists the forms to look for afterwards, built
here with the standard library and the action modules' escapers (not with the code under test).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
from daemons import SAMPLE, Server, wait_for, write_setup
from rulekit_chatra.testing import FakeChatra

from rulekit.escapes import escape_html, escape_markdown_v2, escape_mrkdwn
from rulekit.testing.fake_slack import FakeSlack
from rulekit.testing.fake_telegram import FakeTelegram, error

CLIENT = "jane0client0id0000000000000000000000000"
OTHER = "bob00client0id0000000000000000000000000"
NAME = "O'Brien <ob@x.io> & Co_ Zoë"
EMAIL = "Ob.Brien+VIP@Example.io"
PHONE = "+353 (1) 555-0199"
NOTES = 'Prefers *email*; allergic to <peanuts> & "dust"'
PLAN = "Gold_Tier [2024]"
ACCOUNT = "ACCT-77/ß-é"
IP = "198.51.100.23"
CITY = "Dún Laoghaire"
PAGE = "https://shop.example.com/checkout?email=Ob.Brien%2BVIP%40Example.io&ref=O%27Brien"
FIRST = "Hi, I'm *bold* and want a refund for order #77 — café"
SECOND = "My address is 12 Rue de l'Église (2nd floor), call me!"
BOB_NAME = "Bob Roe-Unique"
BOB_TEXT = "bob says *hello* nicely"

PERSONAL = {
    "name": NAME,
    "email": EMAIL,
    "phone": PHONE,
    "notes": NOTES,
    "plan": PLAN,
    "account": ACCOUNT,
    "ip": IP,
    "city": CITY,
    "page": PAGE,
    "first message": FIRST,
    "second message": SECOND,
}
"""Jane's personal values, by what they are."""

HTML_CHAT, MARKDOWN_CHAT = "-100111", "-100222"

RULES = f"""\
- name: Tell the team
  on: {{channel: online-chat, event: [created, message]}}
  do:
    - slack:
        channel: "#support"
        text: >-
          {{{{ client.name }}}} ({{{{ client.email|upper }}}}, {{{{ client.phone }}}})
          on {{{{ conversation.page }}}} from {{{{ client.ip }}}}: {{{{ message.text }}}}
          notes {{{{ client.notes }}}} plan {{{{ client.custom.plan }}}}
    - telegram:
        chat_id: "{HTML_CHAT}"
        parse_mode: HTML
        text: >-
          <b>{{{{ client.name }}}}</b> {{{{ client.email|lower }}}}: {{{{ message.text }}}}
          {{{{ client.custom.account }}}} {{{{ client.notes }}}} {{{{ client.phone }}}}
    - telegram:
        chat_id: "{MARKDOWN_CHAT}"
        parse_mode: MarkdownV2
        text: >-
          *{{{{ client.name }}}}* {{{{ client.email }}}}: {{{{ message.text }}}}
          {{{{ client.notes }}}} {{{{ client.custom.plan }}}} {{{{ client.city }}}}
          [page]({{{{ conversation.page }}}})
- name: Greet
  on: {{channel: online-chat, event: created}}
  if: ["team.open_count(client.email) >= 0"]
  cooldown: 1h
  do:
    - autoreply: {{text: "Hello {{{{ client.name }}}}, you wrote: {{{{ message.text }}}}"}}
"""


def forms_of(value: str) -> dict[str, str]:
    """The forms of ``value`` a store may hold, by name: raw, escaped for each markup, URL- and
    JSON-encoded (and JSON-encoded markup forms), in upper and lower case."""
    forms = {
        "raw": value,
        "telegram html": escape_html(value),
        "html with quotes": html.escape(value, quote=True),
        "markdown v2": escape_markdown_v2(value),
        "slack mrkdwn": escape_mrkdwn(value),
        "url": quote(value, safe=""),
        "url form": quote_plus(value),
        "url path": quote(value),
    }
    for name, form in list(forms.items()):
        forms[f"json ascii of {name}"] = json.dumps(form)[1:-1]
        forms[f"json of {name}"] = json.dumps(form, ensure_ascii=False)[1:-1]
        forms[f"json slash of {name}"] = json.dumps(form)[1:-1].replace("/", "\\/")
    for name, form in list(forms.items()):
        forms[f"upper {name}"] = form.upper()
        forms[f"lower {name}"] = form.lower()
    return forms


def leftovers(text: str) -> list[tuple[str, str]]:
    """Which (value, form) of Jane's personal values ``text`` still holds (case-insensitive)."""
    folded = text.casefold()
    return [
        (what, form_name)
        for what, value in PERSONAL.items()
        for form_name, form in forms_of(value).items()
        if form.casefold() in folded
    ]


def webhook(client_id: str, name: str, message_id: str, text: str, **client: Any) -> bytes:
    body = json.loads(json.dumps(SAMPLE))
    body["message"] = {"id": message_id, "type": "client", "text": text, "createdAt": 1741943525000}
    body["client"].update(
        {"id": client_id, "chatId": f"chat-{message_id}", "displayedName": name, **client}
    )
    return json.dumps(body).encode()


def fragment(client_id: str, message_id: str, text: str) -> bytes:
    body = json.loads(webhook(client_id, NAME, message_id, text))
    body["eventName"] = "chatFragment"
    body["messages"] = [body.pop("message")]
    body.pop("chatStartedPage")
    return json.dumps(body).encode()


@dataclass
class Recorded:
    """The recorded site: its config (for CLI runs) and the running daemon."""

    config: Path
    server: Server


def record(
    tmp_path: Path, serve: Callable[..., Server], storage: str | None = None
) -> tuple[Recorded, Callable[[], None]]:
    """Run a daemon until Jane's and Bob's webhooks are fully processed; the daemon keeps
    running (the second value stops it and its fakes)."""
    chatra, slack, telegram = FakeChatra(), FakeSlack(), FakeTelegram()
    for fake in (chatra, slack, telegram):
        fake.start()
    config = write_setup(tmp_path, RULES, chatra=chatra, slack=slack, telegram=telegram)
    if storage is not None:
        text = config.read_text().replace("sqlite:///rulekit.sqlite3", storage)
        config.write_text(text)
    server = serve(config)
    # failures whose errors quote the escaped client text
    telegram.fail(error(500, f"Bad Gateway while sending {escape_html(NAME)}"), chat=HTML_CHAT)
    # Chatra's refusal echoes the whole greeting: the client's name and what they wrote
    chatra.fail(500, json.dumps({"text": f"Hello {NAME}, you wrote: {FIRST}"}))
    jane_info = {
        "name": NAME,
        "email": EMAIL,
        "phone": PHONE,
        "notes": NOTES,
        "plan": PLAN,
        "account": ACCOUNT,
    }
    first = json.loads(webhook(CLIENT, NAME, "msgJane1", FIRST, info=jane_info, ip=IP, city=CITY))
    first["chatStartedPage"] = {"link": PAGE, "title": "Checkout"}
    for body in (json.dumps(first).encode(), fragment(CLIENT, "msgJane2", SECOND)):
        assert httpx.post(server.webhook_url, content=body).status_code == 200
    # Jane's sends first, so that the scripted failures are hers: 2 events x 3 sends and a
    # greeting (one refused, then sent); then Bob's
    wait_for(lambda: len(slack.messages(accepted=True)) == 2, timeout=30)
    wait_for(lambda: len(telegram.messages(accepted=True)) == 4, timeout=30)
    wait_for(lambda: len(chatra.sent) == 2, timeout=30)
    bob = webhook(OTHER, BOB_NAME, "msgBob1", BOB_TEXT)
    assert httpx.post(server.webhook_url, content=bob).status_code == 200
    wait_for(lambda: len(slack.messages(accepted=True)) == 3, timeout=30)
    wait_for(lambda: len(telegram.messages(accepted=True)) == 6, timeout=30)
    wait_for(lambda: len(chatra.sent) == 3, timeout=30)

    def settled() -> bool:
        with server.daemon.store.transaction() as state:
            return not state.inbox_items(status="pending") and not state.jobs(status="pending")

    wait_for(settled, timeout=30)

    def stop() -> None:
        server.stop()
        for fake in (chatra, slack, telegram):
            fake.stop()

    return Recorded(config, server), stop
