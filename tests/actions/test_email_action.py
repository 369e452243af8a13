"""The email action against a real SMTP server on loopback (aiosmtpd): plain, STARTTLS and
implicit TLS with a certificate made for the test, refused logins, dropped connections, and
what reaches the message from client data."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from action_helpers import make_config, make_context, make_event, run
from scaffold import write

from rulekit.actions.email import Email, EmailParams, SmtpIntegration
from rulekit.actions.email_message import MAX_SUBJECT
from rulekit.actions.pacing import Limit, Pace
from rulekit.config import load_config
from rulekit.engine.engine import Engine
from rulekit.errors import ActionError, PermanentActionError, RetryableActionError, ValidationErrors
from rulekit.event import Event
from rulekit.plugins import load_plugins

# the SMTP client and server come with the install: an environment made before they were
# added skips these tests instead of failing to collect them (reinstall with ".[test]")
pytest.importorskip("aiosmtplib")
pytest.importorskip("aiosmtpd")
from rulekit.testing.fake_smtp import FakeSmtp

PASSWORD = "smtp-pw-Zq81xLk0"
HOSTILE_NAME = "Mia\r\nBcc: victim@evil.example <b>&"


def smtp_settings(server: FakeSmtp, **options) -> SmtpIntegration:
    return SmtpIntegration.model_validate(
        {
            "host": "127.0.0.1",
            "port": server.port,
            "security": "none",
            "from": "Support <support@shop.example>",
            **options,
        }
    )


def send(action: Email, params: EmailParams, event: Event | None = None, **context):
    async def scenario():
        return await action.execute(params, make_context(event, **context))

    return run(action, scenario)


def failure(action: Email, params: EmailParams) -> ActionError:
    with pytest.raises(ActionError) as caught:
        send(action, params)
    return caught.value


PARAMS = EmailParams(to=["ops@shop.example"], subject="New chat", text="hello")


def engine_for(
    tmp_path: Path,
    rules: str,
    smtp: str = "{host: 127.0.0.1, security: none, from: bot@shop.example}",
) -> Engine:
    config = write(
        tmp_path / "rulekit.yaml",
        f"""
        groups: [support, sales]
        agents:
          - {{email: ann@shop.example, groups: [support], channels: [online-chat]}}
          - {{email: bob@other.example, groups: [support], channels: []}}
          - {{email: cara@shop.example, groups: [sales], channels: [online-chat]}}
        integrations:
          smtp: {smtp}
        """,
    )
    return Engine.from_path(write(tmp_path / "rules.d" / "r.yaml", rules).parent, config)


def test_client_data_cannot_inject_headers_and_is_escaped_in_html(tmp_path):
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: created}
          do:
            - email:
                to: [ops@shop.example]
                subject: "New chat from {{ client.name }}"
                text: "{{ client.name }} wrote: {{ message.text }}"
                html: '<p><b>{{ client.name }}</b> <a href="{{ client.custom.site }}">site</a></p>'
        """,
    )
    event = make_event(client={"name": HOSTILE_NAME, "custom": {"site": "https://mia.example"}})
    [planned] = engine.evaluate(event)
    with FakeSmtp() as server:
        action = Email(smtp_settings(server))
        result = send(action, planned.model, event)
    assert result["sent"] is True and result["to"] == ["ops@shop.example"]
    [received] = server.messages
    assert received.recipients == ["ops@shop.example"]  # no Bcc smuggled in
    message = received.message
    assert message["Subject"] == "New chat from Mia  Bcc: victim@evil.example <b>&"
    assert message["Bcc"] is None and message["To"] == "ops@shop.example"
    assert message["From"] == "Support <support@shop.example>"
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = message.get_body(("html",)).get_content()
    assert text.startswith(
        "Mia\r\nBcc: victim@evil.example <b>& wrote: hello".replace("\r\n", "\n")
    )
    assert "<b>Mia\nBcc: victim@evil.example &lt;b&gt;&amp;</b>" in html.replace("\r\n", "\n")
    assert 'href="https://mia.example"' in html


def test_a_client_value_that_renders_empty_does_not_keep_the_email_from_the_team(tmp_path):
    # a client without a name, a message without text (an attachment alone): the team's
    # email was not planned at all ("text: String should have at least 1 character")
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: created}
          do:
            - email:
                to: [ops@shop.example]
                subject: "{{ message.text }}"
                text: "{{ client.name }}"
        """,
    )
    event = make_event(client={"name": None}, message={"text": ""})
    [planned] = engine.evaluate(event)
    with FakeSmtp() as server:
        assert send(Email(smtp_settings(server)), planned.model, event)["sent"] is True
    [received] = server.messages
    assert received.message["Subject"] == ""


ENCODED_BREAK = "=?utf-8?q?hi=0D=0ABcc:_victim@evil.example=0D=0A=0D=0AFake_body?="
"""An RFC 2047 encoded word that decodes to a line break, a Bcc, a blank line and a body."""


def test_an_encoded_word_from_client_data_cannot_make_headers_or_a_body(tmp_path):
    """The mail library decodes an encoded word in a subject it is given and wrote what it
    decoded as it was: a client's message made a Bcc header and a body of its own under the
    sender's name. ``=?`` becomes ``= ?``: the subject shows as typed, and says no more."""
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: created}
          do:
            - email: {to: [ops@shop.example], subject: "Chat: {{ message.text }}", text: real}
        """,
    )
    event = make_event(message={"text": f"x {ENCODED_BREAK} =={ENCODED_BREAK}"})
    [planned] = engine.evaluate(event)
    with FakeSmtp() as server:
        send(Email(smtp_settings(server)), planned.model, event)
    [received] = server.messages
    message = received.message
    shown = ENCODED_BREAK.replace("=?", "= ?")
    assert message["Subject"] == f"Chat: x {shown} =={shown}"
    assert message["Bcc"] is None and received.recipients == ["ops@shop.example"]
    headers = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version"]
    assert sorted(message.keys()) == sorted([*headers, "Content-Type", "Content-Transfer-Encoding"])
    assert message.get_content().strip() == "real"
    assert b"Fake body" not in received.data and b"\r\nBcc:" not in received.data


def test_client_values_reach_the_mail_without_bidi_controls(tmp_path):
    """Subject, text and HTML: a client named with an override reorders nothing the admin wrote
    and shows as it was typed; the template's own marks stay."""
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: created}
          do:
            - email:
                to: [ops@shop.example]
                subject: "New chat from {{ client.name }} (\u200fsupport)"
                text: "{{ client.name }} wrote: {{ message.text }}"
                html: '<p><b>{{ client.name }}</b>: {{ message.text|e }}</p>'
        """,
    )
    name, said = "evil\u202etxt.exe\u2067", "\u202bsee\u200e \u061cinvoice.pdf\u2069"
    event = make_event(client={"name": name}, message={"id": "m1", "text": said})
    [planned] = engine.evaluate(event)
    with FakeSmtp() as server:
        send(Email(smtp_settings(server)), planned.model, event)
    [received] = server.messages
    message = received.message
    assert message["Subject"] == "New chat from eviltxt.exe (\u200fsupport)"
    text = message.get_body(("plain",)).get_content()
    assert text.startswith("eviltxt.exe wrote: see invoice.pdf")
    assert "<b>eviltxt.exe</b>: see invoice.pdf</p>" in message.get_body(("html",)).get_content()


def test_a_nul_in_a_client_message_reaches_the_team_as_a_replacement_character(tmp_path):
    """A message may not hold NUL (RFC 5322), and a strict server refuses the whole message
    for one, for good: a client's text quoting one still goes, with U+FFFD in its place."""
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: created}
          do:
            - email:
                to: [ops@shop.example]
                subject: "New chat"
                text: "{{ client.name }} wrote: {{ message.text }}"
                html: '<p>{{ message.text|e }}</p>'
        """,
    )
    event = make_event(client={"name": "Ann"}, message={"id": "m1", "text": "a\x00b"})
    [planned] = engine.evaluate(event)
    with FakeSmtp() as server:
        send(Email(smtp_settings(server)), planned.model, event)
    [received] = server.messages
    assert b"\x00" not in received.data
    message = received.message
    assert message.get_body(("plain",)).get_content().startswith("Ann wrote: a\ufffdb")
    assert "<p>a\ufffdb</p>" in message.get_body(("html",)).get_content()


def test_a_long_subject_from_client_data_is_cut(tmp_path):
    """A subject holding a client's message of 100,000 characters took the mail library
    seconds of CPU to fold into header lines, blocking the daemon at every attempt: a subject
    is cut to MAX_SUBJECT characters, in the dry run as in what is sent."""
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: created}
          do:
            - email: {to: [ops@shop.example], subject: "Chat: {{ message.text }}", text: t}
        """,
    )
    event = make_event(message={"text": "aé " * 33_000, "author": "client"})
    [planned] = engine.evaluate(event)
    with FakeSmtp() as server:
        send(Email(smtp_settings(server)), planned.model, event)
    subject = server.messages[0].message["Subject"]
    assert len(subject) == MAX_SUBJECT and subject.startswith("Chat: aé aé") and subject[-1] == "…"
    described = Email(smtp_settings(server)).describe(planned.model, make_context(event))
    assert f"subject {subject!r};" in described


def test_a_value_cannot_make_a_javascript_link(tmp_path):
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: created}
          do:
            - email:
                to: [a@shop.example]
                subject: s
                text: t
                html: '<a href="{{ client.custom.site }}">x</a>'
        """,
    )
    plan = engine.evaluate(make_event(client={"custom": {"site": "javascript:alert(1)"}}))
    assert not plan.actions and "javascript" in plan.errors[0]


def test_a_text_part_is_always_sent(tmp_path):
    with FakeSmtp() as server:
        send(Email(smtp_settings(server)), PARAMS)
    message = server.messages[0].message
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "hello"


def test_starttls_with_a_login(server_tls, certificate):
    with FakeSmtp(username="bot", password=PASSWORD, tls=server_tls) as server:
        action = Email(
            smtp_settings(
                server,
                security="starttls",
                username="bot",
                password=PASSWORD,
                ca_file=str(certificate[0]),
            )
        )
        result = send(action, PARAMS)
    assert result["sent"] is True
    [received] = server.messages
    assert received.tls is True and received.login == "bot"


def test_implicit_tls(server_tls, certificate):
    with FakeSmtp(tls=server_tls, implicit_tls=True) as server:
        send(Email(smtp_settings(server, security="tls", ca_file=str(certificate[0]))), PARAMS)
    assert server.messages[0].tls is True


def test_the_ca_file_is_read_once_per_configuration(server_tls, certificate, tmp_path):
    """Making a TLS context reads and parses the CA certificates (some 30 ms of the event
    loop's time): it was made at every call; now at the first of the configuration."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(certificate[0].read_bytes())
    with FakeSmtp(tls=server_tls) as server:
        action = Email(smtp_settings(server, security="starttls", ca_file=str(ca_file)))
        send(action, PARAMS)
        ca_file.write_text("not a certificate")
        send(action, PARAMS)
        error = failure(Email(action.settings), PARAMS)  # a reload reads it again
    assert len(server.messages) == 2
    assert (
        isinstance(error, PermanentActionError) and "cannot read the SMTP ca_file" in error.message
    )


def test_an_untrusted_certificate_is_final(server_tls):
    with FakeSmtp(tls=server_tls) as server:
        error = failure(Email(smtp_settings(server, security="starttls")), PARAMS)
    assert isinstance(error, PermanentActionError)
    assert "not trusted" in error.message
    assert not server.messages


def test_a_server_without_starttls_gets_nothing_and_it_is_final():
    """``security: starttls`` is required, not opportunistic: a server that does not offer it
    gets neither the login nor the message, and retrying cannot change that."""
    with FakeSmtp() as server:
        action = Email(
            smtp_settings(server, security="starttls", username="bot", password=PASSWORD)
        )
        error = failure(action, PARAMS)
    assert isinstance(error, PermanentActionError)
    assert "does not offer STARTTLS" in error.message
    assert not server.logins and not server.messages
    assert PASSWORD not in error.message


def test_a_refused_login_is_final_clear_and_never_shows_the_password(
    server_tls, certificate, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + PASSWORD
    with FakeSmtp(username="bot", password=PASSWORD, tls=server_tls) as server:
        action = Email(
            smtp_settings(
                server,
                security="starttls",
                username="bot",
                password=wrong,
                ca_file=str(certificate[0]),
            )
        )
        error = failure(action, PARAMS)
    assert isinstance(error, PermanentActionError)
    assert error.message.startswith(
        "the SMTP server 127.0.0.1 refused the username and password (535"
    )
    assert set(server.logins) == {"bot"} and not server.messages
    forms = [wrong, base64.b64encode(wrong.encode()).decode()]
    forms.append(base64.b64encode(f"\0bot\0{wrong}".encode()).decode())
    for form in forms:
        assert form not in error.message
        assert form not in caplog.text
        assert form not in action.describe(PARAMS, make_context())


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("451 4.3.0 Try again later", RetryableActionError),
        ("554 5.7.1 Rejected as spam", PermanentActionError),
    ],
)
def test_smtp_4xx_is_retried_and_5xx_is_final(reply, kind):
    with FakeSmtp() as server:
        server.fail(reply)
        error = failure(Email(smtp_settings(server)), PARAMS)
    assert type(error) is kind
    assert reply.split(" ", 1)[1] in error.message
    assert error.status == int(reply[:3])


def test_every_recipient_refused_one_of_them_for_now_is_retried():
    """Nothing was sent when every recipient was refused: one greylisted (450) among refused
    ones (550) gets the message on a later attempt; it was a final failure, and the greylisted
    recipient never got it."""
    params = EmailParams(to=["ann@a.example", "bob@b.example"], subject="s", text="t")
    with FakeSmtp() as server:
        server.refuse("ann@a.example", "450 4.2.0 Greylisted, try again later")
        server.refuse("bob@b.example", "550 5.1.1 No such user", times=2)
        action = Email(smtp_settings(server))
        error = failure(action, params)
        assert isinstance(error, RetryableActionError) and error.status == 450
        assert "refused every recipient" in error.message
        result = send(action, params)
    assert result["sent"] is True and list(result["refused"]) == ["bob@b.example"]
    assert [m.recipients for m in server.messages] == [["ann@a.example"]]


def test_the_audit_keeps_the_start_and_end_of_a_long_server_reply():
    """A reply may be 32 KB (many lines), and each recipient refused has one: the result the
    audit keeps had them whole."""
    lines = [f"250-{'queued ' * 60}{n}" for n in range(60)]
    refusal = "\r\n".join([*(f"550-{'gone ' * 80}" for _ in range(60)), "550 5.1.1 unknown"])
    params = EmailParams(to=["ann@a.example", "bob@b.example"], subject="s", text="t")
    with FakeSmtp() as server:
        server.fail("\r\n".join([*lines, "250 2.0.0 queued as 4XyZ"]))
        server.refuse("bob@b.example", refusal)
        result = send(Email(smtp_settings(server)), params)
    assert result["sent"] is True
    assert len(result["reply"]) <= 300 < len("".join(lines))
    assert result["reply"].startswith("queued queued") and result["reply"].endswith("4XyZ")
    [(refused, said)] = result["refused"].items()
    assert refused == "bob@b.example" and len(said) <= 300 and said.endswith("unknown")


def test_a_dropped_connection_is_retried_and_the_retry_is_delivered():
    with FakeSmtp() as server:
        server.drop()
        action = Email(smtp_settings(server))
        error = failure(action, PARAMS)
        assert isinstance(error, RetryableActionError)
        assert send(action, PARAMS)["sent"] is True
    assert len(server.messages) == 1


def test_a_closed_port_is_retried():
    with FakeSmtp() as server:
        settings = smtp_settings(server)
    error = failure(Email(settings), PARAMS)
    assert isinstance(error, RetryableActionError)


def test_recipients_resolve_assignee_group_and_client():
    config = make_config()
    event = make_event(
        conversation={"assignee": "eve@example.com"},
        client={"id": "c", "email": "mia@client.example"},
    )
    assigned = event.model_copy(deep=True, update={"event": "assigned"})
    assigned.conversation.assignee = "dan@example.com"
    with FakeSmtp() as server:
        action = Email(smtp_settings(server))
        params = EmailParams(
            to=["assignee", "group:support", "boss@example.com"], subject="s", text="t"
        )
        result = send(action, params, event, config=config)
        # an assign earlier in the plan decides who the assignee is
        send(
            action,
            EmailParams(to=["assignee"], subject="s", text="t"),
            event,
            config=config,
            emitted=[assigned],
        )
        send(action, EmailParams(to=["client"], subject="s", text="t"), event, config=config)
    # group support: only the agents with access to the channel (bob has none)
    assert result["to"] == [
        "eve@example.com",
        "Ann@Example.com",
        "Cara@example.COM",
        "boss@example.com",
    ]
    assert [m.recipients for m in server.messages][1:] == [
        ["dan@example.com"],
        ["mia@client.example"],
    ]


@pytest.mark.parametrize(
    "email",
    [
        None,
        "mia@client.example\r\nBcc: x@evil.example",
        "a@b.example, c@d.example",
        "<a@b.example>",
        # decoded by the mail library in the To header: a line break, then a Bcc
        "=?utf-8?q?a=0D=0ABcc=3A_victim=40evil.example?=@client.example",
    ],
)
def test_a_missing_or_malformed_client_email_sends_nothing(email):
    event = make_event(client={"id": "c", "email": email})
    with FakeSmtp() as server:
        result = send(
            Email(smtp_settings(server)), EmailParams(to=["client"], subject="s", text="t"), event
        )
    assert result["sent"] is False and "client" in result["reason"]
    assert not server.messages


def test_a_client_email_with_any_space_or_invisible_character_is_left_out_not_retried():
    """The SMTP client refuses an address holding any Unicode space on its command line (a
    ValueError, which no attempt would get past): such an address, and one with a character
    that shows nothing, is left out like any malformed one, whoever supplied it."""
    spaces = [chr(c) for c in range(0x80, 0x3001) if chr(c).isspace()]
    assert "\u00a0" in spaces and "\u3000" in spaces
    odd = [*spaces, "\u200b", "\u2060", "\ufeff", "\u00ad"]
    with FakeSmtp() as server:
        action = Email(smtp_settings(server))
        for char in odd:
            for address in (f"mia{char}@client.example", f"mia@client{char}x.example"):
                event = make_event(client={"id": "c", "email": address})
                result = send(action, EmailParams(to=["client"], subject="s", text="t"), event)
                assert result["sent"] is False, address
                assert "client: the address holds spaces" in result["reason"]
        result = send(
            action,
            EmailParams(to=["client"], subject="s", text="t"),
            make_event(client={"id": "c", "email": "mïa@client.example"}),
        )
    assert result["sent"] is True  # a letter outside ASCII is not a space
    assert [m.recipients for m in server.messages] == [["mïa@client.example"]]


def test_an_internationalized_domain_is_sent_in_ascii_to_a_server_without_smtputf8():
    """A server without SMTPUTF8 (Amazon SES, many relays) refused the whole message for a
    client's address at bücher.example, at every attempt: the domain goes as its A-labels,
    one domain to pace whichever form it was written in; a domain that is no valid
    internationalized name goes as it is."""
    to_client = EmailParams(to=["client"], subject="s", text="t")
    event = make_event(client={"id": "c", "email": "mia@Bücher.example"})
    both = EmailParams(to=["a@bücher.example", "b@xn--bcher-kva.example"], subject="s", text="t")
    with FakeSmtp(smtputf8=False) as server:
        action = Email(smtp_settings(server))
        result = send(action, to_client, event)
        paces = action.call_pacing(both, make_context())
    assert result["sent"] is True and result["to"] == ["mia@xn--bcher-kva.example"]
    [received] = server.messages
    assert received.recipients == ["mia@xn--bcher-kva.example"]
    assert received.message["To"] == "mia@xn--bcher-kva.example"
    assert [pace.key for pace in paces] == ["email:xn--bcher-kva.example"]
    with FakeSmtp() as server:
        action = Email(smtp_settings(server))
        odd = make_event(client={"id": "c", "email": "mia@\u2603\ufe0f.example"})
        assert send(action, to_client, odd)["sent"] is True
    assert server.messages[0].recipients == ["mia@\u2603\ufe0f.example"]


def test_a_sender_at_an_internationalized_domain_is_sent_in_ascii_too():
    # a from at bücher.example: every message refused for good by a server without SMTPUTF8,
    # whatever its recipients; the domain goes as its A-labels in MAIL FROM, From and
    # Message-ID (and EHLO already)
    with FakeSmtp(smtputf8=False) as server:
        action = Email(smtp_settings(server, **{"from": "Bücher <bot@Bücher.example>"}))
        assert send(action, PARAMS, delivery="d1")["sent"] is True
    [received] = server.messages
    assert received.sender == "bot@xn--bcher-kva.example"
    [written] = received.message["From"].addresses
    assert (written.display_name, written.addr_spec) == ("Bücher", "bot@xn--bcher-kva.example")
    assert received.message["Message-ID"] == "<rulekit.d1@xn--bcher-kva.example>"
    assert received.helo == "xn--bcher-kva.example"


def test_sending_is_paced_per_recipient_domain():
    with FakeSmtp() as server:
        action = Email(smtp_settings(server, rate_limit="1/h"))

        async def scenario():
            await action.execute(PARAMS, make_context())
            pacer = action._paced()
            hour = Limit(1, 3600.0)
            return pacer.delay([Pace("email:shop.example", hour)]), pacer.delay(
                [Pace("email:other.example", hour)]
            )

        busy, free = run(action, scenario)
    assert busy > 3000 and free == 0


def test_emailing_the_client_is_client_facing(tmp_path):
    engine = engine_for(
        tmp_path,
        """
        - name: mail
          on: {event: message}
          do:
            - email: {to: client, subject: s, text: t}
            - email: {to: assignee, subject: s, text: t}
            - email: {to: client, subject: late, text: t, on_recovered: true}
        """,
    )
    plan = engine.evaluate(make_event(event="message", recovered=True))
    assert [a.skipped is not None for a in plan] == [True, False, False]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{to: [client, ann@shop.example], subject: s, text: t}", "`client` goes alone"),
        ('{to: ["{{ client.email }}"], subject: s, text: t}', "`to` is not a template"),
        (
            "{to: [not-an-address], subject: s, text: t}",
            "is not an address, assignee, client or group",
        ),
        ("{to: [group:nobody], subject: s, text: t}", "unknown group 'nobody'"),
        ("{to: [group:suport], subject: s, text: t}", "unknown group 'suport' in `to` (did you"),
        ("{to: [a@b.example], subject: s}", "text"),
    ],
)
def test_bad_recipients_are_load_errors(tmp_path, step, message):
    with pytest.raises(ValidationErrors) as caught:
        engine_for(tmp_path, f"- name: m\n  on: {{event: created}}\n  do:\n    - email: {step}\n")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("smtp", "message"),
    [
        ({"security": "none", "username": "u", "password": "p"}, "sends credentials in clear"),
        ({"security": "none", "password": "p"}, "sends credentials in clear"),
        ({"from": "a@b.example\r\nBcc: x@y.example"}, "line breaks"),
        ({"from": "nobody"}, "needs an address"),
        ({"from": "=?utf-8?q?S=0D=0ABcc:_x@y.example?= <a@b.example>"}, "encoded word"),
        # one mailbox, read as a mail program reads the From header
        ({"from": "Shop, Inc <s@shop.example>"}, 'quote the name ("Shop, Inc" <'),
        ({"from": "s@shop.example, other@evil.example"}, "one address; this has 2"),
        ({"from": '"Shop" <s@shop.example>, <other@evil.example>'}, "one address; this has 2"),
        ({"from": "other@evil.example <s@shop.example>"}, "is not Name <local@domain>"),
        ({"from": "Shop <s@shop.example>x"}, "is not Name <local@domain>"),
        ({"from": "Shop <s@shop.example"}, "is not Name <local@domain>"),
        ({"from": "Team: s@shop.example;"}, "not a group"),
        ({"from": "Shop (EU) <s@shop.example>"}, "holds a comment in parentheses"),
        ({"from": "s@shop.example (Shop)"}, "holds a comment in parentheses"),
        # what the mail library's parser fails on (an AttributeError, an IndexError)
        ({"from": "+.:<8@a.example"}, "is not Name <local@domain>"),
        ({"from": "EP88E/Wewr,<@"}, "is not Name <local@domain>"),
        ({"from": "8:,;@KRO%"}, "is not Name <local@domain>"),
        # a host no lookup can find was retried at every attempt, until the dead letter
        ({"host": "mail.example:587"}, "the port goes in `port`"),
        ({"host": "smtp://mail.example"}, "a name or an address, not a URL"),
        ({"host": "mail example"}, "is not a host name"),
        ({"host": " mail.example"}, "is not a host name"),
        ({"host": "[2001:db8::1]"}, "without brackets"),
        ({"host": "mail..example"}, "is not a host name"),
        ({"host": "-mail.example"}, "is not a host name"),
        ({"host": "xn--.example"}, "is not a host name"),
        ({"host": "256.1.1.1"}, "is not an IP address"),
        ({"host": "2130706433"}, "is not an IP address"),
    ],
)
def test_smtp_settings_are_checked_when_the_config_loads(tmp_path, smtp, message):
    import json

    body = {"host": "mail.example", "from": "bot@shop.example", **smtp}
    path = tmp_path / "rulekit.yaml"
    path.write_text(json.dumps({"integrations": {"smtp": body}}))
    with pytest.raises(ValidationErrors) as caught:
        load_config(path, load_plugins(entry_points=False))
    assert message in str(caught.value) and "integrations.smtp" in str(caught.value)
    assert "p" not in str(caught.value).split("integrations.smtp")[1].split(":")[0]


def test_the_dry_run_shows_the_message_without_the_password():
    settings = SmtpIntegration.model_validate(
        {
            "host": "mail.shop.example",
            "username": "bot",
            "password": PASSWORD,
            "from": "bot@shop.example",
        }
    )
    event = make_event(conversation={"assignee": "eve@example.com"})
    line = Email(settings).describe(
        EmailParams(to=["assignee", "client"][:1], subject="Hi\nthere", text="t", html="<b>h</b>"),
        make_context(event),
    )
    assert line == (
        "email to eve@example.com from bot@shop.example via mail.shop.example:587"
        " (starttls, as bot): subject 'Hi there'; text 't'; html '<b>h</b>'"
    )
    assert PASSWORD not in line
    assert Email(None).unavailable() == "SMTP is not configured (integrations: smtp)"
    assert (
        Email(settings.model_copy(update={"password": None})).unavailable()
        == "the SMTP password is empty"
    )


def test_recipients_greylisted_while_others_took_the_message_get_it_on_the_next_attempt():
    """The server takes the message for ann and says "later" to bob (greylisting): the call
    is a retry that knows ann has it, and the next attempt sends it to bob alone."""
    params = EmailParams(to=["ann@a.example", "bob@b.example"], subject="s", text="t")
    with FakeSmtp() as server:
        server.refuse("bob@b.example", "450 4.2.0 Greylisted, try again later")
        action = Email(smtp_settings(server))
        with pytest.raises(RetryableActionError) as caught:
            send(action, params, delivery="job-1")
        error = caught.value
        assert error.status == 450 and error.progress == {"accepted": ["ann@a.example"]}
        assert "Greylisted" in error.message
        result = send(action, params, progress=error.progress, delivery="job-1")
        assert send(action, params, progress={"accepted": ["ANN@a.example", "bob@b.example"]}) == {
            "sent": True, "to": [], "earlier": ["ann@a.example", "bob@b.example"], "reply": ""
        }  # fmt: skip
    assert result["sent"] is True and result["to"] == ["bob@b.example"]
    assert result["earlier"] == ["ann@a.example"]
    assert [m.recipients for m in server.messages] == [["ann@a.example"], ["bob@b.example"]]
    # one message: the second delivery is the first one's to the recipient who waited
    assert len({m.message["Message-ID"] for m in server.messages}) == 1


@pytest.mark.parametrize(
    ("sender", "name", "address"),
    [
        ('"Shop, Inc" <s@shop.example>', "Shop, Inc", "s@shop.example"),
        ("Shop Inc. <s@shop.example>", "Shop Inc.", "s@shop.example"),
        ("Магазин «Ёлка» <s@shop.example>", "Магазин «Ёлка»", "s@shop.example"),
        ('"Shop (EU)" <s@shop.example>', "Shop (EU)", "s@shop.example"),
        ("<s@shop.example>", "", "s@shop.example"),
    ],
)
def test_the_from_address_is_the_one_mailbox_configured_envelope_and_header(sender, name, address):
    with FakeSmtp() as server:
        send(Email(smtp_settings(server, **{"from": sender})), PARAMS)
        (message,) = server.messages
    assert message.sender == address  # MAIL FROM
    written = message.message["From"]
    assert [(a.display_name, a.addr_spec) for a in written.addresses] == [(name, address)]
    assert not written.defects


@pytest.mark.parametrize(
    "host", ["mail.example", "mail.example.", "127.0.0.1", "::1", "2001:db8::1", "müll.example"]
)
def test_smtp_hosts_are_names_or_addresses(host):
    settings = SmtpIntegration.model_validate({"host": host, "from": "bot@shop.example"})
    assert settings.host == host


@pytest.mark.parametrize(
    ("smtp", "warned"),
    [
        # STARTTLS waits for a greeting an implicit-TLS port never sends (every call times
        # out); implicit TLS on a port that greets in clear fails its handshake
        ("{host: mail.example, port: 465, from: bot@shop.example}", "port 465 is implicit TLS"),
        ("{host: mail.example, port: 587, security: tls, from: bot@shop.example}", "port 587"),
        ("{host: mail.example, port: 25, security: tls, from: bot@shop.example}", "port 25"),
    ],
)
def test_check_warns_about_a_port_that_does_not_speak_the_security_chosen(tmp_path, smtp, warned):
    rules = (
        "- name: m\n  on: {event: created}\n  do:\n"
        "    - email: {to: [a@b.example], subject: s, text: t}\n"
    )
    [warning] = engine_for(tmp_path, rules, smtp).ruleset.warnings
    assert warned in str(warning)


def test_check_warns_about_mail_in_clear_to_another_machine(tmp_path):
    # as for a webhook on plain http://: the messages (the client's data) travel unencrypted
    rules = (
        "- name: m\n  on: {event: created}\n  do:\n"
        "    - email: {to: [a@b.example], subject: s, text: t}\n"
    )
    remote = engine_for(
        tmp_path / "a", rules, "{host: mail.example, security: none, from: bot@shop.example}"
    )
    [warning] = remote.ruleset.warnings
    assert "security: none to mail.example" in str(warning)
    for index, smtp in enumerate(
        [
            "{host: 127.0.0.1, security: none, from: bot@shop.example}",
            "{host: localhost, security: none, from: bot@shop.example}",
            "{host: '::1', security: none, from: bot@shop.example}",
            "{host: mail.example, from: bot@shop.example}",
            "{host: mail.example, security: tls, from: bot@shop.example}",
        ]
    ):
        assert not engine_for(tmp_path / str(index), rules, smtp).ruleset.warnings


def test_names_with_idna_deviations_are_sent_as_idna_2008_writes_them():
    # IDNA 2003 (Python's codec, which the lookup and TLS used) writes straße.example as
    # strasse.example, another domain that someone else may own; IDNA 2008, as addresses are
    # sent, xn--strae-oqa.example
    with FakeSmtp() as server:
        action = Email(smtp_settings(server, **{"from": "bot@straße.example"}))
        send(action, PARAMS)
    [received] = server.messages
    assert received.helo == "xn--strae-oqa.example"
    assert received.sender == "bot@xn--strae-oqa.example"
    settings = SmtpIntegration.model_validate(
        {"host": "Mail.Straße.example", "from": "a@b.example"}
    )
    assert settings.ascii_host == "mail.xn--strae-oqa.example"
    assert (
        SmtpIntegration.model_validate({"host": "::1", "from": "a@b.example"}).ascii_host == "::1"
    )
