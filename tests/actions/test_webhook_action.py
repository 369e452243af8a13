"""The webhook action: config-named targets, JSON-safe bodies, signatures a receiver verifies,
and the classification of every answer, against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
from action_helpers import make_context, make_event, run
from scaffold import REPO, write

from rulekit.actions.webhook import Webhook, WebhookParams, WebhooksIntegration, retry_after
from rulekit.config import load_config
from rulekit.engine.engine import Engine
from rulekit.errors import (
    MAX_RETRY_AFTER,
    ActionError,
    PermanentActionError,
    RetryableActionError,
    ValidationErrors,
)
from rulekit.plugins import load_plugins
from rulekit.testing.fakehttp import FakeService, Response

SECRET = "whsec-0123456789abcdef"
TOKEN = "crm-token-9876543210"
NOW = 1_750_000_000


def receiver_verify():
    """The receiver example of docs/configuration.md, as documented."""
    text = (REPO / "docs" / "configuration.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 12  # "a 10-line example"
    namespace: dict = {}
    exec(compile(code, "configuration.md", "exec"), namespace)
    return namespace["verify"]


def action_for(service: FakeService, path: str = "/hooks/rulekit?key=abc", **target) -> Webhook:
    settings = WebhooksIntegration.model_validate(
        {
            "crm": {
                "url": service.base_url + path,
                "secret": SECRET,
                "headers": {"Authorization": f"Bearer {TOKEN}"},
                **target,
            }
        }
    )
    action = Webhook(settings)
    action.clock = lambda: NOW
    return action


def call(action: Webhook, params: WebhookParams, delivery: str | None = "job-1"):
    async def scenario():
        return await action.execute(params, make_context(delivery=delivery))

    return run(action, scenario)


def failure(action: Webhook, params: WebhookParams) -> ActionError:
    with pytest.raises(ActionError) as caught:
        call(action, params)
    return caught.value


def test_default_body_is_the_versioned_event_signed_as_documented(fake_service):
    action = action_for(fake_service)
    result = call(action, WebhookParams(to="crm"))
    assert result == {"status": 200, "body": "{}"}
    [request] = fake_service.requests
    assert request.method == "POST"
    assert request.path == "/hooks/rulekit?key=abc"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-rulekit-delivery"] == "job-1"
    assert request.headers["x-rulekit-timestamp"] == str(NOW)
    document = request.json
    assert document["version"] == 1
    assert document["event"] == "created" and document["channel"] == "online-chat"
    assert document["client"]["name"] == "Mia"
    assert document["message"]["text"] == "hello"
    assert "raw" not in document
    assert set(document) == {
        "version", "id", "channel", "event", "occurred_at", "origin", "recovered",
        "conversation", "client", "message", "agent",
    }  # fmt: skip
    verify = receiver_verify()
    headers = httpx.Headers(request.headers)
    assert verify(SECRET.encode(), headers, request.body, now=NOW + 10)
    # a changed body, another key, an old or missing timestamp: refused
    assert not verify(SECRET.encode(), headers, request.body + b" ", now=NOW)
    assert not verify(b"other", headers, request.body, now=NOW)
    assert not verify(SECRET.encode(), headers, request.body, now=NOW + 301)
    assert not verify(SECRET.encode(), httpx.Headers({}), request.body, now=NOW)


def test_each_attempt_is_signed_anew_with_the_same_delivery_id(fake_service):
    action = action_for(fake_service)
    params = WebhookParams(to="crm", body={"a": 1})
    call(action, params)
    action.clock = lambda: NOW + 60
    call(action, params)
    first, second = fake_service.requests
    assert first.headers["x-rulekit-delivery"] == second.headers["x-rulekit-delivery"]
    assert first.headers["x-rulekit-timestamp"] != second.headers["x-rulekit-timestamp"]
    assert first.headers["x-rulekit-signature"] != second.headers["x-rulekit-signature"]
    verify = receiver_verify()
    assert verify(SECRET.encode(), httpx.Headers(second.headers), second.body, now=NOW + 60)


def test_the_delivery_id_is_signed_so_a_replay_under_another_id_does_not_verify(fake_service):
    """Receivers de-duplicate on X-Rulekit-Delivery: a request captured within the timestamp's
    tolerance and sent again under a new delivery id must not verify, else it is a new call."""
    action = action_for(fake_service)
    body = b'{"a":1}'
    call(action, WebhookParams(to="crm", body={"a": 1}))
    [request] = fake_service.requests
    assert request.body == body
    signed = f"{NOW}.job-1.".encode() + body
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert request.headers["x-rulekit-signature"] == expected
    verify = receiver_verify()
    headers = httpx.Headers(request.headers)
    assert verify(SECRET.encode(), headers, body, now=NOW)
    replayed = httpx.Headers({**headers, "X-Rulekit-Delivery": "job-2"})
    assert not verify(SECRET.encode(), replayed, body, now=NOW)
    unsigned = httpx.Headers({k: v for k, v in headers.items() if k != "x-rulekit-delivery"})
    assert not verify(SECRET.encode(), unsigned, body, now=NOW)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Rulekit-Timestamp", "\u00b2"),  # a digit to str.isdigit, not to int()
        ("X-Rulekit-Timestamp", "9" * 5000),  # over int()'s digit limit
        ("X-Rulekit-Signature", "sha256=\u00e9"),  # compare_digest refuses non-ASCII str
    ],
)
def test_the_documented_receiver_refuses_hostile_headers_without_raising(fake_service, name, value):
    action = action_for(fake_service)
    call(action, WebhookParams(to="crm", body={"a": 1}))
    [request] = fake_service.requests
    names = ("X-Rulekit-Timestamp", "X-Rulekit-Delivery", "X-Rulekit-Signature")
    headers = {n: request.headers[n.lower()] for n in names} | {name: value}  # (latin-1 text)
    assert receiver_verify()(SECRET.encode(), headers, request.body, now=NOW) is False


HOSTILE = 'Mia", "admin": true, "x": "} ] \\ \n \u2028 <b>&'


def rules_engine(
    tmp_path: Path,
    rules: str,
    url: str = "https://crm.example/hook",
    secret: str = "s3cret-0123456789abcdef",
) -> Engine:
    config = write(
        tmp_path / "rulekit.yaml",
        f"""
        integrations:
          webhooks:
            crm: {{url: "{url}", secret: "{secret}"}}
            billing: {{url: "https://billing.example/x", secret: "{secret}"}}
        """,
    )
    rules_dir = write(tmp_path / "rules.d" / "r.yaml", rules).parent
    return Engine.from_path(rules_dir, config)


def test_values_in_a_json_body_cannot_change_its_structure(tmp_path, fake_service):
    engine = rules_engine(
        tmp_path,
        """
        - name: hook
          on: {event: created}
          do:
            - webhook:
                to: crm
                body: {who: "{{ client.name }}", said: "Re: {{ message.text }}", n: 2, ok: true}
        """,
    )
    event = make_event(client={"id": "c1", "name": HOSTILE}, message={"text": HOSTILE})
    [planned] = engine.evaluate(event)
    action = action_for(fake_service)
    call(action, planned.model)
    assert fake_service.requests[0].json == {
        "who": HOSTILE,
        "said": f"Re: {HOSTILE}",
        "n": 2,
        "ok": True,
    }


def test_values_in_a_text_body_are_escaped_for_its_content_type(tmp_path):
    engine = rules_engine(
        tmp_path,
        """
        - name: json text
          on: {event: created}
          do:
            - webhook:
                {to: crm, content_type: application/json, text: '{"who": "{{ client.name }}"}'}
            - webhook:
                to: crm
                content_type: application/x-www-form-urlencoded
                text: "who={{ client.name }}&n=1"
            - webhook: {to: crm, content_type: text/html, text: "<p>{{ client.name }}</p>"}
            - webhook: {to: crm, text: "plain {{ client.name }}"}
        """,
    )
    plan = engine.evaluate(make_event(client={"name": HOSTILE}))
    json_text, form, page, plain = (p.params["text"] for p in plan)
    assert json.loads(json_text) == {"who": HOSTILE}
    assert httpx.QueryParams(form) == httpx.QueryParams({"who": HOSTILE, "n": "1"})
    assert "<b>" not in page and "&lt;b&gt;&amp;" in page
    assert plain == f"plain {HOSTILE}"


@pytest.mark.parametrize(
    "content_type",
    ["application/jsonl", "application/x-ndjson", "application/json-seq", "application/jsonlines"],
)
def test_values_in_json_lines_cannot_add_records(tmp_path, content_type):
    """A JSON Lines text is JSON texts a line each: its values were put in as they are (only a
    type ending in "json" was escaped), and a line break in a client's name started a record
    of the client's own."""
    engine = rules_engine(
        tmp_path,
        f"""
        - name: lines
          on: {{event: created}}
          do:
            - webhook:
                to: crm
                content_type: {content_type}
                text: |-
                  {{"who": "{{{{ client.name }}}}"}}
                  {{"n": 2}}
        """,
    )
    hostile = 'Mia"}\n{"admin": true, "x": "'
    [text] = (p.params["text"] for p in engine.evaluate(make_event(client={"name": hostile})))
    assert [json.loads(line) for line in text.split("\n")] == [{"who": hostile}, {"n": 2}]


@pytest.mark.parametrize(
    ("template", "value", "refusal"),
    [
        ('<a href="{{ message.text }}">site</a>', "javascript:alert(1)", "link target"),
        ('<iframe src="{{ message.text }}"></iframe>', " java\tscript:alert(1)", "link target"),
        ('<form action="{{ message.text }}"></form>', "data:text/html,x", "link target"),
        ("<p class={{ message.text }}>hi</p>", "x onmouseover=alert(1)", "quoted attribute"),
        ("<p {{ message.text }}>hi</p>", "onmouseover=alert(1)", "quoted attribute"),
        ("<b onclick=\"go('{{ message.text }}')\">x</b>", "');alert(1);('", "event handler"),
    ],
)
@pytest.mark.parametrize("content_type", ["text/html", "application/xhtml+xml"])
def test_values_in_an_html_text_are_escaped_where_they_land(
    tmp_path, template, value, refusal, content_type
):
    """HTML entities everywhere left a value free to add an attribute (unquoted, where a space
    ends it), to make a javascript: link, and to write script into an event handler (whose
    entities the browser decodes before running it): a receiver showing the page ran the
    client's script. HTML texts are read as an email's HTML is."""
    rules = f"""
        - name: page
          on: {{event: created}}
          do:
            - webhook: {{to: crm, content_type: {content_type}, text: {json.dumps(template)}}}
        """
    engine = rules_engine(tmp_path, rules)
    plan = engine.evaluate(make_event(client={"name": "Mia"}, message={"text": value}))
    assert not plan.actions and refusal in plan.errors[0]
    fine = engine.evaluate(make_event(client={"name": "Mia"}, message={"text": "https://a.b/"}))
    if refusal == "link target":
        assert len(fine.actions) == 1


def test_a_value_outside_a_json_string_is_refused(tmp_path):
    engine = rules_engine(
        tmp_path,
        """
        - name: unquoted
          on: {event: created}
          do:
            - webhook: {to: crm, content_type: application/json, text: '{"n": {{ client.name }}}'}
        """,
    )
    plan = engine.evaluate(make_event(client={"name": '1, "admin": true'}))
    assert not plan.actions
    assert "must be inside a string" in plan.errors[0]


def test_unknown_and_templated_targets_are_load_errors(tmp_path):
    with pytest.raises(ValidationErrors) as caught:
        rules_engine(
            tmp_path,
            """
            - name: typo
              on: {event: created}
              do:
                - webhook: {to: crn}
            - name: templated
              on: {event: created}
              do:
                - webhook: {to: "{{ client.custom.hook }}"}
            - name: cased
              on: {event: created}
              do:
                - webhook: {to: CRM}
            """,
        )
    text = str(caught.value)
    assert "unknown webhook target 'crn' (did you mean 'crm'?)" in text
    assert "unknown webhook target 'CRM' (did you mean 'crm'?)" in text
    assert "billing, crm" in text
    assert "`to` is not a template" in text


def test_check_warns_about_plain_http_to_another_host(tmp_path):
    rules = """
    - name: hook
      on: {event: created}
      do: [{webhook: {to: crm}}]
    """
    remote = rules_engine(tmp_path / "a", rules, url="http://crm.example/hook")
    [warning] = remote.ruleset.warnings
    assert "plain http:// to crm.example" in str(warning)
    local = ("http://127.0.0.1:9/hook", "http://localhost/x", "http://[::1]/", "https://a.b")
    for url in (*local, "http://127.8.0.1/", "http://LocalHost:81/"):
        assert not rules_engine(tmp_path / url.replace("/", "_"), rules, url=url).ruleset.warnings
    # the system's resolver looks these up in DNS (only localhost itself is in /etc/hosts),
    # which may answer with any machine's address
    for url in ("http://crm.localhost/", "http://localhost./x"):
        [warning] = rules_engine(tmp_path / url.replace("/", "_"), rules, url=url).ruleset.warnings
        assert "plain http:// to" in str(warning)


@pytest.mark.parametrize(
    ("url", "secret", "warned"),
    [
        # a short signing secret: one request the receiver logged lets anyone find it offline
        ("https://crm.example/hook", "s3cret", "shorter than 16 characters"),
        # a scheme on the other's port: every call fails (a TLS error, or a hang)
        ("https://crm.example:80/hook", "s3cret-0123456789abcdef", "https:// on port 80"),
        ("http://127.0.0.1:443/hook", "s3cret-0123456789abcdef", "http:// on port 443"),
    ],
)
def test_check_warns_about_target_mistakes(tmp_path, url, secret, warned):
    rules = """
    - name: hook
      on: {event: created}
      do: [{webhook: {to: crm}}]
    """
    [warning] = rules_engine(tmp_path, rules, url=url, secret=secret).ruleset.warnings
    assert warned in str(warning)
    assert secret not in str(warning)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"url": "ftp://x.example/"}, "must start with https://"),
        ({"url": "https://user:pw@x.example/"}, "credentials in `headers`"),
        ({"url": "https:///nohost"}, "needs a host"),
        ({"url": "https://x.example/a b"}, "spaces or control characters"),
        # hosts the HTTP client cannot connect to failed every call (an IDNAError or an
        # InvalidURL taken for a bug), or looked its name up to no avail at each attempt
        ({"url": "https://xn--/h"}, "is not a host name"),
        ({"url": "https://exa\u00adm.example/h"}, "is not a host name"),
        ({"url": "https://256.1.1.1/h"}, "is not an IP address"),
        ({"url": "http://a..b/h"}, "is not a host name"),
        ({"url": "https://-crm.example/h"}, "is not a host name"),
        # other spellings of an address (decimal, hex, octal, short): the lint, and whoever
        # reads the config, would take them for names
        ({"url": "http://2130706433/h"}, "is not an IP address"),
        ({"url": "http://0x7f.0.0.1/h"}, "is not an IP address"),
        ({"url": "http://0177.0.0.1/h"}, "is not an IP address"),
        ({"url": "http://127.1/h"}, "is not an IP address"),
        # read differently by this check (host ::3) and by the HTTP client (host c)
        ({"url": "https://c:.ea[::3]1/h"}, "brackets hold an IPv6 address"),
        ({"url": "https://[::1]x/h"}, "brackets hold an IPv6 address"),
        # the HTTP client encodes a name outside ASCII whole: no "_" in any of its labels
        ({"url": "https://crm_1.bücher.example/h"}, "IDNA 2008 does not take"),
        ({"headers": {"X-Rulekit-Signature": "x"}}, "is set by rulekit"),
        ({"headers": {"Bad Name": "x"}}, "not a valid header name"),
        ({"headers": {"Content-Type": "text/html"}}, "the content type is the rule's"),
        ({"headers": {"content-TYPE": "text/html"}}, "the content type is the rule's"),
        ({"headers": {"X-A": "a\r\nInjected: 1"}}, "control characters"),
        ({"headers": {"Authorization": "Bearer tök-123456789"}}, "beyond ASCII"),
        ({"headers": {"X-A": "a\u2028b"}}, "beyond ASCII"),
        ({"headers": {"X-A": "token "}}, "begins or ends with a space"),
        ({"headers": {"X-A": " token"}}, "begins or ends with a space"),
        ({"rate_limit": "fast"}, "is not a rate"),
        ({"method": "DELETE"}, "Input should be"),
    ],
)
def test_targets_are_checked_when_the_config_loads(tmp_path, target, message):
    body = {"url": "https://x.example/", "secret": "s", **target}
    path = write(tmp_path / "rulekit.yaml", "x: 1\n")
    path.write_text(json.dumps({"integrations": {"webhooks": {"crm": body}}}))
    with pytest.raises(ValidationErrors) as caught:
        load_config(path, load_plugins(entry_points=False))
    assert message in str(caught.value)
    assert "integrations.webhooks.crm" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "kind", "status"),
    [
        (Response(500, {"error": "boom"}), RetryableActionError, 500),
        (Response(503, "down"), RetryableActionError, 503),
        (Response(408, "slow"), RetryableActionError, 408),
        (Response(404, {"error": "no such hook"}), PermanentActionError, 404),
        (Response(401, "bad token"), PermanentActionError, 401),
        (Response(302, "", {"Location": "http://169.254.169.254/"}), PermanentActionError, 302),
    ],
)
def test_answers_are_classified_and_keep_status_and_body(fake_service, answer, kind, status):
    fake_service.script(answer)
    error = failure(action_for(fake_service), WebhookParams(to="crm"))
    assert type(error) is kind
    assert error.status == status
    assert f"HTTP {status}: {json.dumps(answer.body)}" in error.message
    assert len(fake_service.requests) == 1  # a redirect is not followed


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    "header", ["7", " 7 ", format_datetime(datetime.fromtimestamp(NOW + 7, UTC), usegmt=True)]
)
def test_429_and_503_are_retried_after_their_retry_after(fake_service, status, header):
    """Seconds or an HTTP date (counted from the action's clock, so the wait is exact)."""
    fake_service.script(Response(status, "slow down", {"Retry-After": header}))
    error = failure(action_for(fake_service), WebhookParams(to="crm"))
    assert isinstance(error, RetryableActionError)
    assert error.retry_after == 7
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 30) == 30
    assert retry_after("soon", NOW) is None and retry_after("inf", NOW) is None


@pytest.mark.parametrize(
    ("header", "wait"),
    [("99999999999", MAX_RETRY_AFTER), ("1e300", MAX_RETRY_AFTER), ("-5", 0.0),
     ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER), ("soon", None)],
)  # fmt: skip
def test_an_odd_retry_after_is_bounded(fake_service, header, wait):
    """A Retry-After of years (a bug, or a hostile receiver) would pause the target until a
    restart: it pauses it for at most an hour."""
    fake_service.script(Response(429, "slow down", {"Retry-After": header}))
    error = failure(action_for(fake_service), WebhookParams(to="crm"))
    assert isinstance(error, RetryableActionError)
    assert error.retry_after == wait


def test_a_timeout_is_retried(fake_service):
    fake_service.script(Response(200, {}, delay=2))
    error = failure(action_for(fake_service, timeout=0.2), WebhookParams(to="crm"))
    assert isinstance(error, RetryableActionError)
    assert "did not answer within 0.2 s" in error.message


def test_a_closed_port_is_retried():
    with FakeService() as service:
        action = action_for(service)
    error = failure(action, WebhookParams(to="crm"))
    assert isinstance(error, RetryableActionError)


def test_secrets_never_reach_errors_or_the_dry_run(fake_service):
    echo = f"you sent {TOKEN} to /hooks/rulekit?key=abc signed {SECRET}"
    fake_service.script(Response(400, echo))
    action = action_for(fake_service)
    error = failure(action, WebhookParams(to="crm"))
    for secret in (TOKEN, SECRET, "/hooks/rulekit", "key=abc"):
        assert secret not in error.message
    assert "you sent ***" in error.message
    line = action.describe(WebhookParams(to="crm", body={"a": 1}), make_context())
    assert line.startswith(f"POST {fake_service.base_url}/*** (webhook crm) [Content-Type: ")
    assert "Authorization: ***" in line
    assert "X-Rulekit-Signature: sha256=<HMAC of each attempt>" in line
    assert line.endswith(': {"a":1}')
    for secret in (TOKEN, SECRET, "/hooks/rulekit", "key=abc"):
        assert secret not in line
    assert secret not in repr(action) and SECRET not in repr(action.settings)


HOOK_TOKEN = "a1b2c3d4e5f6g7h8"
BASE64_TOKEN = "tok/en+98765/4321="


@pytest.mark.parametrize(
    "echo",
    [
        f"no route for {quote('/hooks/T01/B02/' + HOOK_TOKEN + '?key=k3y-0123456', safe='')}",
        f"hook {HOOK_TOKEN} was revoked",  # a token of the path, alone
        "bad key K3Y-0123456",  # a token of the query, alone, upper-cased
        f"bad token {quote_plus(BASE64_TOKEN)}",
        f"bad token {quote(BASE64_TOKEN, safe='').lower()}",  # %2f, not %2F
    ],
)
def test_secrets_quoted_in_another_form_never_reach_errors(fake_service, echo):
    """A receiver rarely quotes what it got as it was sent: percent-encoded, JSON-escaped,
    upper-cased, a path's token alone. Each form is hidden in the error (kept in the audit and
    the dead letters, shown by the console)."""
    fake_service.script(Response(404, echo))
    action = action_for(
        fake_service,
        path=f"/hooks/T01/B02/{HOOK_TOKEN}?key=k3y-0123456",
        headers={"Authorization": f"Bearer {BASE64_TOKEN}"},
    )
    error = failure(action, WebhookParams(to="crm"))
    shown = json.loads(error.message.split("HTTP 404: ", 1)[1].replace("***", "MASK"))
    assert "MASK" in shown, error.message
    for secret in (HOOK_TOKEN, "k3y-0123456", "K3Y-0123456", "98765", "%2F", "%2f"):
        assert secret not in error.message


def test_redact_hides_json_escaped_and_encoded_forms() -> None:
    from rulekit.secrets import redact

    # JSON with "/" escaped, as PHP writes it
    assert redact('{"e": "bad tok\\/en+98765\\/4321="}', [BASE64_TOKEN]) == '{"e": "bad ***"}'
    assert redact("tok%2Fen%2B98765%2F4321%3D", [BASE64_TOKEN]) == "***"
    assert redact("Tok/En+98765/4321=", [BASE64_TOKEN]) == "***"
    assert redact("nothing here", [BASE64_TOKEN, None, ""]) == "nothing here"


def test_an_empty_secret_would_fail_and_is_never_sent(fake_service):
    action = action_for(fake_service, secret="")
    assert action.unavailable() == "the secret of webhook target(s) 'crm' is empty"
    error = failure(action, WebhookParams(to="crm"))
    assert isinstance(error, PermanentActionError)
    assert not fake_service.requests
    assert Webhook(None).unavailable() == "webhooks are not configured (integrations: webhooks)"


def test_the_action_is_a_built_in_plugin_listed_with_its_parameters():
    plugins = load_plugins(entry_points=False)
    assert plugins.actions.entries["webhook"].plugin == "rulekit.actions.webhook"
    from rulekit.cli.commands import describe_plugins
    from rulekit.rules.schema import rules_schema

    listed = [
        action
        for plugin in describe_plugins(plugins)["plugins"]
        for action in plugin["actions"]
        if action["name"] == "webhook"
    ]
    assert listed[0]["integration"] == "webhooks"
    assert set(listed[0]["parameters"]) == {"to", "body", "text", "content_type"}
    assert "params_webhook" in rules_schema(plugins)["$defs"]
    assert re.search(r"`webhook`", (REPO / "docs" / "rules.md").read_text())


def test_the_daemon_log_redacts_nested_target_secrets(tmp_path):
    from rulekit.runtime.logs import secret_values

    path = write(
        tmp_path / "rulekit.yaml",
        f"""
        integrations:
          webhooks:
            crm:
              url: https://crm.example/hooks/abcdef123456
              secret: {SECRET}
              headers: {{Authorization: "Bearer {TOKEN}"}}
        """,
    )
    found = secret_values(load_config(path, load_plugins(entry_points=False)))
    assert {SECRET, f"Bearer {TOKEN}", "https://crm.example/hooks/abcdef123456"} <= set(found)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=XyZ",
        "Multipart/mixed; boundary=b",
        "message/http",
        "text/csv",
        "application/yaml",
        "text/markdown",
    ],
)
def test_values_cannot_go_into_a_text_whose_structure_has_no_escape(tmp_path, content_type):
    """A value in a multipart text could write the boundary and add a form field of its own
    (a client named ``Mia\\r\\n--XyZ\\r\\nContent-Disposition: ...; name="is_admin"``), with
    nothing to escape it; in CSV a row, in YAML a key. A text of a type rulekit has no escape
    for holds no values (a load error); one without values may go as it is."""
    form = '--XyZ\r\nContent-Disposition: form-data; name="who"\r\n\r\n{{ client.name }}\r\n--XyZ--'
    with pytest.raises(ValueError, match="cannot hold values"):
        WebhookParams(to="crm", content_type=content_type, text=form)
    WebhookParams(to="crm", content_type=content_type, text=form.replace("{{ client.name }}", "x"))
    rules = f"""
        - name: multipart
          on: {{event: created}}
          do:
            - webhook: {{to: crm, content_type: "{content_type}", text: {json.dumps(form)}}}
        """
    with pytest.raises(ValidationErrors, match=r"r\.yaml:4: .*cannot hold values"):
        rules_engine(tmp_path, rules)


@pytest.mark.parametrize(
    ("content_type", "valid"),
    [
        ("application/json", True),
        ("application/vnd.api+json; charset=utf-8", True),
        ("text/plain", True),
        ("json", False),
        ("text/plain\r\nX-Injected: 1", False),
        ("text/plain; a=b\nc", False),
        ("te xt/plain", False),
        ("/plain", False),
        # what the HTTP client cannot send failed every call (a UnicodeEncodeError, a bug's
        # traceback, or an illegal header value), never the load
        ("text/plain; name=é", False),
        ("text/plain;\u2028charset=utf-8", False),
        ("text/plain; x=\x85", False),
        ("text/plain; charset=utf-8 ", False),
        ("text/plain; charset=utf-8\t", False),
    ],
)
def test_content_types_are_checked(content_type, valid):
    make = lambda: WebhookParams(to="crm", text="x", content_type=content_type)  # noqa: E731
    if valid:
        make()
    else:
        with pytest.raises(ValueError, match="is not a content type"):
            make()


@pytest.mark.parametrize(
    "variable, proxy",
    [
        ("HTTP_PROXY", "{proxy}"),
        ("http_proxy", "{proxy}"),
        ("ALL_PROXY", "{proxy}"),
        ("ALL_PROXY", "socks5://127.0.0.1:9"),  # (a SOCKS client is not even installed)
    ],
)
def test_a_proxy_in_the_environment_never_gets_the_call(fake_service, monkeypatch, variable, proxy):
    # a proxy set for something else (pip, a package manager) would get the call in clear,
    # URL token, Authorization and signature included, even for a target on this machine
    # (which `rulekit check` calls safe on plain http://), and reach its own machine's port
    with FakeService() as elsewhere:
        monkeypatch.setenv(variable, proxy.format(proxy=elsewhere.base_url))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        result = call(action_for(fake_service), WebhookParams(to="crm"))
        assert result["status"] == 200
        assert len(fake_service.requests) == 1
        assert elsewhere.requests == []


ADDED_BY_THE_HTTP_CLIENT = {"host", "content-length", "accept", "connection"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {TOKEN}"},
        # a target's own spelling of a header rulekit sets replaces it: never two of one name
        {"user-agent": "CrmConnector/2", "ACCEPT-ENCODING": "gzip"},
    ],
)
def test_the_dry_run_lists_each_header_the_call_sends_once(fake_service, headers):
    action = action_for(fake_service, headers=headers)
    params = WebhookParams(to="crm", body={"a": 1})
    line = action.describe(params, make_context(delivery="job-1"))
    listed = line.split(" [", 1)[1].split("]: ", 1)[0].split(", ")
    call(action, params)
    (request,) = fake_service.requests
    sent = [name.lower() for name, _value in request.header_lines]
    names = [name for name in sent if name not in ADDED_BY_THE_HTTP_CLIENT]
    assert len(names) == len(set(names))  # one of each
    assert sorted(names) == sorted(item.split(": ", 1)[0].lower() for item in listed)
    for name, value in headers.items():
        assert request.headers[name.lower()] == value
        assert f"{name}: ***" in listed


def test_a_target_header_given_twice_is_a_config_error():
    with pytest.raises(ValueError, match="'x-key' is given twice"):
        WebhooksIntegration.model_validate(
            {
                "crm": {
                    "url": "https://crm.example/h",
                    "secret": SECRET,
                    "headers": {"X-Key": "a", "x-key": "b"},
                }
            }
        )


def https_call(server_tls: ssl.SSLContext) -> dict:
    """A call to a target served over TLS (the test's certificate) on loopback."""
    from aiohttp import web

    settings = {"secret": SECRET}
    action = Webhook(WebhooksIntegration.model_validate({}))

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def scenario():
        app = web.Application()
        app.router.add_post("/hook", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
        await site.start()
        port = runner.addresses[0][1]
        url = f"https://127.0.0.1:{port}/hook"
        action.settings = WebhooksIntegration.model_validate({"crm": {"url": url, **settings}})
        try:
            return await action.execute(WebhookParams(to="crm"), make_context(delivery="job-1"))
        finally:
            await runner.cleanup()

    return run(action, scenario)


def test_an_untrusted_certificate_is_final_and_says_so(server_tls):
    with pytest.raises(ActionError) as caught:
        https_call(server_tls)
    assert isinstance(caught.value, PermanentActionError)  # as the email action's
    assert "the certificate of 127.0.0.1 is not trusted" in caught.value.message
    assert "self-signed certificate" in caught.value.message


def test_a_certificate_of_a_ca_named_in_ssl_cert_file_is_trusted(
    server_tls, certificate, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    assert https_call(server_tls) == {"status": 200, "body": "ok"}


@pytest.mark.parametrize(
    "url",
    [
        "https://crm.example/h",
        "https://crm.example./h",
        "https://bücher.example/h",
        "https://xn--bcher-kva.example/h",
        "https://CRM.Example/h",
        "http://127.0.0.1:8080/h",
        "http://[::1]:8080/h",
        "https://[2001:db8::1]/h",
        "https://internal_crm.corp.example/h",
    ],
)
def test_target_hosts_are_names_or_addresses(url):
    WebhooksIntegration.model_validate({"crm": {"url": url, "secret": SECRET}})
