"""``slack``: post a message to a Slack channel (``chat.postMessage``), through slack-sdk's
:class:`~slack_sdk.web.async_client.AsyncWebClient`.

One client (and one HTTP session) per action instance. slack-sdk's own retries are off: the
dispatcher retries, with pacing, from the classified error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator

from rulekit.actions.answers import (
    AnswerTooLarge,
    answer_status,
    bounded_response_class,
    forget_answer,
    lost_answer,
    unreadable,
)
from rulekit.actions.base import Action, ActionContext
from rulekit.actions.pacing import Limit, Pace
from rulekit.actions.rates import retry_after
from rulekit.actions.slack_markup import escape_params
from rulekit.actions.slack_text import fit_blocks, fit_text
from rulekit.errors import (
    ActionError,
    PermanentActionError,
    RetryableActionError,
    service_wait,
)
from rulekit.escapes import escape_link_target, escape_mrkdwn
from rulekit.expr.markup import Interpolations
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.secrets import redact

if TYPE_CHECKING:
    import aiohttp
    from slack_sdk.web.async_client import AsyncWebClient

__all__ = [
    "Slack",
    "SlackIntegration",
    "SlackParams",
    "escape_link_target",  # the escapers live in slack_markup; importable from here too
    "escape_mrkdwn",
]

SDK_LOGGER = "rulekit.sdk.slack"
"""The client's logger. slack-sdk builds its debug lines (the request's parameters and headers)
on every call whenever its logger's *own* level is unset, whatever the handlers keep; so the
client is given this logger, set to the level its parent (``rulekit.sdk``) logs at: its debug
lines quote the messages sent and Slack's answers, so the daemon's log configuration keeps
that parent at ``info`` unless content may be logged."""

TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
"""Slack error codes that say "try again later" rather than "this will never work"."""


_SERVICE = Pace("slack", None, scope="service")
"""What every call waits for besides its channel: a pause of the whole app (a 429 that held
more than one channel)."""


class SlackIntegration(StrictModel):
    token: SecretStr | None = Field(None, description="A bot token (xoxb-...), from ${ENV}.")
    base_url: str = Field("https://slack.com/api/", description="The Web API's base URL.")


class SlackParams(StrictModel):
    channel: str = Field(
        description="A channel id or name (#support).", json_schema_extra={"minLength": 1}
    )
    text: str = Field(min_length=1, description="The message, in Slack mrkdwn.")
    blocks: list[dict[str, Any]] | None = Field(None, description="Optional Block Kit blocks.")
    attachments: list[dict[str, Any]] | None = Field(
        None, description="Optional (legacy) attachments."
    )

    @field_validator("channel")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        # a template that rendered nothing is refused as the plan is made, as an empty text
        # is: Slack would only refuse the call (channel_not_found)
        if not value.strip():
            raise ValueError("the channel is empty")
        return value


class Slack(Action):
    name = "slack"
    description = "post a message to a Slack channel"
    Params = SlackParams
    integration = "slack"
    Integration = SlackIntegration
    markup = True
    read_by_people = True
    limits = {"channel": Limit(1, 1.0)}  # about one message a second per channel
    connections = 64
    """Connections the client keeps open to the Web API."""
    bounds_calls = True  # the whole call is under asyncio.timeout(self.timeout) in execute

    def __init__(self, settings: Any = None, **options: Any) -> None:
        super().__init__(settings, **options)
        self._client: AsyncWebClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.clock = time.time
        """Unix seconds now: what a Retry-After given as a date is counted from."""
        self._limited: dict[str, float] = {}  # channel -> end of its Retry-After (loop time)
        self._url = ""
        self._headers: dict[str, str] = {}

    @classmethod
    def escape(cls, values: Interpolations, params: dict[str, Any]) -> dict[str, Any]:
        """``text``, ``blocks`` and ``attachments`` read as Slack reads them (see
        :mod:`rulekit.actions.slack_markup`)."""
        return escape_params(values, params)

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        if self.settings is None:
            return "Slack is not configured"
        if not self._token():
            return "the Slack token is empty"
        return None

    def destination(self, params: SlackParams) -> str:  # type: ignore[override]
        return f"slack:{params.channel}"

    def pacing(self, params: SlackParams) -> list[Pace]:  # type: ignore[override]
        return [Pace(self.destination(params), self.limits["channel"]), _SERVICE]

    def describe(self, params: SlackParams, context: ActionContext) -> str:  # type: ignore[override]
        blocks = f" with {len(params.blocks)} blocks" if params.blocks else ""
        text, fitted = _fitted(params)
        cut = (
            " (truncated to Slack's limits)"
            if fitted != params.blocks or text != params.text
            else ""
        )
        return f"post to Slack {params.channel}{blocks}{cut}: {text!r}"

    # execution -----------------------------------------------------------------------------
    async def execute(self, params: SlackParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        import aiohttp
        import slack_sdk.errors as sdk_errors  # (a package: ``from`` would cost more per call)

        problem = self.unavailable()
        if problem:
            raise PermanentActionError(problem)
        # values are already escaped where they were interpolated (see ``escape``); texts
        # over Slack's limits are cut (see slack_text), rather than the message refused
        text, blocks = _fitted(params)
        truncated = text != params.text or blocks != params.blocks
        arguments: dict[str, Any] = {"channel": params.channel, "text": text}
        if blocks:
            arguments["blocks"] = blocks
        if params.attachments:
            arguments["attachments"] = params.attachments
        client = self._web_client()
        forget_answer()
        try:
            async with asyncio.timeout(self.timeout):
                if self._url:
                    # the client's own sender, not api_call: api_call builds the URL, the
                    # headers (the user agent too) and a response object again on every call,
                    # and looks the method up in its lists of deprecated ones; ours are the
                    # same every time
                    request = {"headers": self._headers, "json": arguments}
                    answer = await client._request(
                        http_verb="POST", api_url=self._url, req_args=request
                    )
                else:  # an SDK without those pieces: its public call (raises SlackApiError)
                    response = await client.api_call("chat.postMessage", json=arguments)
                    answer = {"status_code": 200, "data": response.data, "headers": {}}
        except TimeoutError:
            message = f"Slack did not answer within {self.timeout:g} s"
            raise lost_answer(message) or RetryableActionError(message) from None
        except AnswerTooLarge as exc:
            raise unreadable(f"Slack: {exc}", exc.status) from None
        except sdk_errors.SlackApiError as exc:
            raise self._classify(exc.response, params.channel) from None
        except aiohttp.ClientError as exc:
            message = redact(f"Slack: {type(exc).__name__}: {exc}", [self._token()])
            raise lost_answer(message) or RetryableActionError(message) from None
        except sdk_errors.SlackClientError as exc:
            raise PermanentActionError(redact(f"Slack: {exc}", [self._token()])) from None
        except Exception as exc:
            # an answer the client could not read (not UTF-8: a UnicodeDecodeError): by its
            # status, as any unreadable answer (a 2xx is final: the post may have gone through)
            status = answer_status()
            if status is None:
                raise  # no answer behind it: a bug, which the dispatcher reports as one
            what = f"Slack: an answer that could not be read ({type(exc).__name__})"
            raise unreadable(what, status) from None
        data = answer["data"]
        if answer["status_code"] != 200 or type(data) is not dict or not data.get("ok"):
            # what AsyncSlackResponse.validate refuses, told apart as for a SlackApiError
            raise self._classify(_Answer(answer), params.channel)
        result = {"ts": data.get("ts"), "channel": data.get("channel")}
        if truncated:
            result["truncated"] = True
        return result

    async def aclose(self) -> None:
        session, self._session, self._client = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    def _token(self) -> str:
        token = getattr(self.settings, "token", None)
        return token.get_secret_value() if token is not None else ""

    def _web_client(self) -> AsyncWebClient:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        # the first call, or a new event loop (a test's asyncio.run): the old session died
        # with its loop
        import aiohttp
        from slack_sdk.web.async_client import AsyncWebClient

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections),
            response_class=bounded_response_class(),  # no answer is read past MAX_ANSWER
            # no timer of aiohttp's own: the call is bounded as a whole, in ``execute``
            timeout=aiohttp.ClientTimeout(),
        )
        self._client = client = AsyncWebClient(
            token=self._token(),
            base_url=self.settings.base_url,  # type: ignore[union-attr]
            timeout=max(1, round(self.timeout)),
            session=self._session,
            retry_handlers=[],
            logger=_sdk_logger(),
        )
        client.headers["User-Agent"] = _user_agent()  # (its constructor writes its own)
        self._url, self._headers = _prebuilt(client)
        self._loop = loop
        return client

    def _classify(self, response: Any, channel: str) -> ActionError:
        # an answer that is not JSON reaches here as aiohttp's response: its status is .status
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        data = response.data if isinstance(getattr(response, "data", None), dict) else {}
        # read as Slack writes it, and nothing else: an answer that is not Slack's (a proxy's
        # JSON, a fault) is classified by its status as well, never taken for a bug here
        if status and 200 <= status < 300 and "ok" not in data:
            # not Slack's answer (no JSON, no "ok"), to a post that may have gone through
            return unreadable("Slack chat.postMessage: an answer that is not Slack's", status)
        error = data.get("error")
        error = error if isinstance(error, str) and error else "no error code"
        metadata = data.get("response_metadata")
        details = metadata.get("messages") if isinstance(metadata, dict) else None
        details = details if isinstance(details, list) else []
        message = f"Slack chat.postMessage failed: {error}"
        if details:
            message += f" ({'; '.join(map(str, details))})"
        if status and status != 200:
            message += f" (HTTP {status})"
        message = redact(message, [self._token()])
        if status == 429 or error == "ratelimited":
            headers = {k.lower(): v for k, v in dict(response.headers or {}).items()}
            wait = retry_after(headers.get("retry-after"), self.clock())
            scope = self._limit_scope(channel, wait or 0.0)
            return RetryableActionError(message, retry_after=wait, scope=scope, status=429)
        if status is not None and status >= 500:
            # Slack down (a 503 in maintenance) may say when to come back: every channel waits
            # that long, rather than spend its attempts on the outage
            headers = {k.lower(): v for k, v in dict(response.headers or {}).items()}
            wait = retry_after(headers.get("retry-after"), self.clock())
            scope = "service" if wait else "destination"
            return RetryableActionError(message, retry_after=wait, scope=scope, status=status)
        if error in TRANSIENT_ERRORS or status == 408:  # (a proxy's: the request came slowly)
            return RetryableActionError(message, status=status)
        return PermanentActionError(message, status=status)

    def _limit_scope(self, channel: str, seconds: float) -> str:
        """Slack does not say what a 429 throttles: one channel (about a message a second),
        or the app's posts in the workspace as a whole. Two channels limited at once mean the
        whole app: then every channel pauses."""
        now = asyncio.get_running_loop().time()
        self._limited = {key: end for key, end in self._limited.items() if end > now}
        others = [key for key in self._limited if key != channel]
        # the pause as the dispatcher keeps it (an hour at most): a Retry-After of years would
        # make every later limit of another channel count as the whole app's
        self._limited[channel] = now + (service_wait(seconds) or 0.0)
        return "service" if others else "destination"


def _fitted(params: SlackParams) -> tuple[str, list[dict[str, Any]] | None]:
    """The text and blocks of ``params`` cut to Slack's limits."""
    blocks = fit_blocks(params.blocks) if params.blocks else params.blocks
    return fit_text(params.text), blocks


def _prebuilt(client: AsyncWebClient) -> tuple[str, dict[str, str]]:
    """What ``api_call`` would build for chat.postMessage with a JSON body (its URL and
    headers), built once; ``("", {})`` when this version of the SDK lacks the private pieces
    that build them, or its client the sender they feed (then ``api_call`` is used)."""
    try:
        from slack_sdk.web.internal_utils import _get_headers, _get_url

        if not callable(getattr(client, "_request", None)):
            return "", {}
        url = _get_url(client.base_url, "chat.postMessage")
        headers = _get_headers(
            headers=dict(client.headers),
            token=client.token,
            has_json=True,
            has_files=False,
            request_specific_headers=None,
        )
    except (ImportError, TypeError):
        return "", {}
    return url, headers


class _Answer:
    """An answer of the Web API that is not ``ok``, read as a ``SlackApiError``'s response."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.status_code = answer["status_code"]
        self.data = answer["data"]
        self.headers = answer["headers"]


def _user_agent() -> str:
    """What the client calls itself: rulekit and the SDK's version. slack-sdk's own user agent
    adds the Python version and the host's system and kernel release (``Linux/6.1.0-18``),
    which tell Slack, and whoever reads its request logs, more about the host than a post
    needs."""
    from slack_sdk.version import __version__

    return f"rulekit slackclient/{__version__}"


def _sdk_logger() -> logging.Logger:
    logger = logging.getLogger(SDK_LOGGER)
    logger.setLevel(logging.getLogger(SDK_LOGGER.rpartition(".")[0]).getEffectiveLevel())
    return logger


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Slack)
