"""A long message is the client's data wherever a record holds its beginning, and looking for
it costs what a short one does.

A service's error quotes what it was sent cut short (Telegram's description is kept to 300
characters): ``rulekit forget`` erases a record holding the beginning of the client's message,
not only one holding all of it. And the forms of a message of megabytes are not built whole:
they took 25 seconds and gigabytes, on the daemon's event loop, to log a failed job of its
event (and as long in ``rulekit forget``, holding the store's write lock)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import httpx
from daemons import wait_for, write_setup
from privacy_scenario import CLIENT, NAME, webhook
from scaffold import REPO
from test_forget_every_form import forget, sqlite_bytes

from rulekit.testing.fake_telegram import FakeTelegram, error

CHAT = "-100111"
TEXT = " ".join(f"parcel{n:04d}" for n in range(200))  # 2,199 characters
RULES = f"""\
- name: Tell the team
  on: {{channel: online-chat, event: created}}
  do:
    - telegram: {{chat_id: "{CHAT}", text: "{{{{ message.text }}}}"}}
"""


def test_forget_erases_a_record_quoting_the_beginning_of_a_long_message(tmp_path, serve):
    telegram = FakeTelegram()
    telegram.start()
    try:
        config = write_setup(tmp_path, RULES, telegram=telegram)
        server = serve(config)
        telegram.fail(error(500, f"Bad Gateway while sending {TEXT}"), chat=CHAT)
        body = webhook(CLIENT, NAME, "msgJane1", TEXT)
        assert httpx.post(server.webhook_url, content=body).status_code == 200
        wait_for(lambda: telegram.messages(accepted=True), timeout=30)

        def settled() -> bool:
            with server.daemon.store.transaction() as state:
                return not state.jobs(status="pending")

        wait_for(settled, timeout=30)
        before = sqlite_bytes(tmp_path)
        assert TEXT in before  # the params
        cut = before.replace(TEXT, "")
        assert TEXT[:200] in cut  # the test can fail: the error holds only the beginning
        forget(config)
        assert TEXT[:40] not in sqlite_bytes(tmp_path)
    finally:
        telegram.stop()


CAPPED = """
import resource
resource.setrlimit(resource.RLIMIT_CPU, (10, 10))
resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
from rulekit.audit.privacy import hide
from rulekit.event import Event
from rulekit.store.erasure import personal_values, scrub
from rulekit.store.forms import hidden_values

text = "héllo <b> & 'x' \\"y\\" refund/1 " * 140_000  # 4 MiB of UTF-8, every escape needed
event = Event.model_validate(
    {"channel": "c", "event": "created", "client": {"id": "x", "notes": text},
     "message": {"text": text}, "conversation": {"page": "https://x.io/?q=" + text[:1000]}}
)
hidden = hidden_values(event.public())
quote = "Telegram failed (HTTP 500): " + text[:300]
assert hide(quote, hidden) == "Telegram failed (HTTP 500): [hidden]", hide(quote, hidden)[:200]
personal = personal_values([event.client.model_dump(mode="json")], [event.public()])
assert scrub({"error": quote}, personal) == ({"error": "[forgotten]"}, 1)
"""


def test_the_forms_of_a_message_of_megabytes_are_built_at_once():
    """Within a CPU and an address-space cap (the old code needed 25 s and gigabytes)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CAPPED)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-2000:]}"
