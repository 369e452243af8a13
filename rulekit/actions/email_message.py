"""What an ``email`` call sends: who it goes to, and the message, safe from header injection.

* Recipients (:func:`recipients`): each ``to`` item is an address, ``assignee``, ``group:<name>``
  (its agents with access to the event's channel) or ``client`` (the client's email, when
  known). Every address, whoever supplied it, must be one plain ``local@domain``
  (:func:`rulekit.addresses.address_problem`): no display name, comma, angle bracket, space,
  control or bidi character, so a client's "email" cannot add recipients or headers.
* Headers (:func:`header_text`): CR, LF and every other line break or control character in a
  subject becomes a space; the message is still sent. So does an encoded word's opening
  ``=?`` become ``= ?``: the mail library decodes an RFC 2047 encoded word in a value it is
  given, and writes what it decodes out as it is, so a client's
  ``=?utf-8?q?hi=0D=0ABcc:_x@evil.example?=`` was a line break in the message's headers
  (any header, or a blank line and a body of the client's making, under the sender's name);
  neither can a recipient's mail program decode one into something else than was typed. A
  subject is cut to
  :data:`MAX_SUBJECT` characters (:func:`subject_line`): a client's message of 100,000
  characters in it would take the mail library seconds of CPU to fold into header lines, in
  the daemon's event loop, at every attempt.
* Domains (:func:`ascii_domain`): a recipient's domain outside ASCII (``bücher.example``) is
  sent as its ASCII form (``xn--bcher-kva.example``, IDNA 2008 with UTS 46 mapping), which
  every server takes: one without SMTPUTF8 (Amazon SES, many relays) refused the whole message
  for such an address, at every attempt; and the domain's pacing is one, whichever form it
  was written in.
* The message (:func:`build_message`): a ``text/plain`` part always, and the ``html`` as an
  alternative when there is one. A NUL character (which a message may not hold, RFC 5322; a
  strict server refuses the whole message for it, for good) becomes U+FFFD in both
  (:func:`body_text`): a client's message quoting one still reaches the team.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from rulekit.addresses import address_problem, ascii_domain, mailbox
from rulekit.event import Event

SPECIAL_RECIPIENTS = ("assignee", "client")
GROUP_PREFIX = "group:"


def recipient_problem(item: str) -> str | None:
    """Why a ``to`` item is none of: an address, ``assignee``, ``client``, ``group:<name>``."""
    if item in SPECIAL_RECIPIENTS:
        return None
    if item.startswith(GROUP_PREFIX):
        return None if item[len(GROUP_PREFIX) :].strip() else "`group:` needs a group name"
    problem = address_problem(item)
    if problem:
        return f"{item!r} is not an address, assignee, client or group:<name> (it {problem})"
    return None


def header_text(text: str) -> str:
    """``text`` fit for a header: line breaks and other control characters become spaces."""
    return "".join(
        " " if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" else c for c in text
    )


MAX_SUBJECT = 255
"""Characters of a subject sent; a longer one is cut and ends with ``…``."""


ENCODED_WORD = "=?"
"""What opens an RFC 2047 encoded word: never in a header value rulekit writes."""


def subject_line(text: str) -> str:
    """``text`` as a subject: :func:`header_text`, no encoded word (``=?`` becomes ``= ?``),
    cut to :data:`MAX_SUBJECT` characters."""
    text = header_text(text[: MAX_SUBJECT + 1]).replace(ENCODED_WORD, "= ?")
    return text if len(text) <= MAX_SUBJECT else text[: MAX_SUBJECT - 1] + "…"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass
class Recipients:
    """Who a message goes to, and why anyone asked for was left out."""

    addresses: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def add(self, address: str | None, what: str) -> None:
        if not address:
            self.left_out.append(f"{what}: no email known")
            return
        address = address.strip()
        problem = address_problem(address)
        if problem:
            self.left_out.append(f"{what}: the address {problem}")
            return
        address = ascii_domain(address)
        if address.lower() not in {a.lower() for a in self.addresses}:
            self.addresses.append(address)


def recipients(
    items: Iterable[str], event: Event, emitted: Iterable[Event], directory: object
) -> Recipients:
    """Resolve ``to`` items for ``event``. The assignee is the one an ``assign`` earlier in the
    same plan chose (``emitted``), else the conversation's."""
    conversation = event.conversation
    for other in reversed(list(emitted)):
        if other.event == "assigned" and other.conversation.id == conversation.id:
            conversation = other.conversation
            break
    found = Recipients()
    for item in items:
        if item == "assignee":
            found.add(conversation.assignee, "assignee")
        elif item == "client":
            found.add(event.client.email, "client")
        elif item.startswith(GROUP_PREFIX):
            group = item[len(GROUP_PREFIX) :].strip()
            agents = directory.eligible(event.channel, group)  # type: ignore[attr-defined]
            if not agents:
                found.left_out.append(f"group {group}: nobody with access to {event.channel}")
            for agent in agents:
                found.add(agent.email, f"group {group}")
        else:
            found.add(item, item)
    return found


def message_id(sender: str, delivery: str | None) -> str:
    """The Message-ID of a message from ``sender``: for an outbox job, made of its
    ``delivery`` id (:func:`~rulekit.actions.base.delivery_id`), the same on every attempt, so
    a message sent again after its server took it and the answer was lost is the same message
    to the recipients' mail systems (which drop a repeated Message-ID); random otherwise."""
    domain = domain_of(sender_address(sender)) or None
    if delivery is None:
        return email.utils.make_msgid(domain=domain)
    return f"<rulekit.{delivery}@{domain or 'rulekit.invalid'}>"


def sender_address(sender: str) -> str:
    """The address of ``sender`` (the config's ``from``) as sent: its domain in ASCII
    (:func:`~rulekit.addresses.ascii_domain`), as every recipient's: a server without SMTPUTF8
    refused every message from bot@bücher.example."""
    return ascii_domain(mailbox(sender)[1])


def message_sender(sender: str) -> str:
    """The From of a message from ``sender`` (the config's ``from``): the one mailbox it was
    read as (:func:`~rulekit.addresses.mailbox`), written from its parts, the name quoted
    where it needs to be, whatever comment or spelling it had, the address
    :func:`sender_address`."""
    name = mailbox(sender)[0]
    return str(Address(display_name=header_text(name), addr_spec=sender_address(sender)))


def build_message(
    sender: str,
    to: list[str],
    subject: str,
    text: str,
    html: str | None,
    *,
    delivery: str | None = None,
) -> EmailMessage:
    """The message: headers cleaned, a text part always, the HTML as an alternative; its
    Message-ID stable for one ``delivery`` (:func:`message_id`)."""
    message = EmailMessage()
    message["From"] = message_sender(sender)
    message["To"] = ", ".join(to)
    message["Subject"] = subject_line(subject)
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = message_id(sender, delivery)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders do not answer
    message.set_content(body_text(text))
    if html is not None:
        message.add_alternative(body_text(html), subtype="html")
    return message


def body_text(text: str) -> str:
    """``text`` fit for a message's body: each NUL character replaced by U+FFFD."""
    return text.replace("\x00", "\ufffd")
