"""What an SMTP failure means for the ``email`` action: retried (4xx replies, timeouts, lost
connections, odd replies) or final (5xx replies, a refused login, an untrusted certificate, a
server without what the settings require), and how it is told: with the server's words, the
password never among them (``clean``)."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from rulekit.errors import ActionError, PermanentActionError, RetryableActionError


def classify(exc: Exception, host: str, clean: Callable[[str], str]) -> ActionError:
    """The action error ``exc`` is, from SMTP server ``host``; ``exc`` itself is raised when
    it is none of the failures an SMTP exchange can meet (a bug keeps its traceback)."""
    from aiosmtplib import errors

    if isinstance(exc, ActionError):
        return exc
    if isinstance(exc, errors.SMTPAuthenticationError) and exc.code >= 500:
        return PermanentActionError(
            clean(
                f"the SMTP server {host} refused the username and password "
                f"({exc.code} {exc.message})"
            ),
            status=exc.code,
        )
    if isinstance(exc, errors.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        message = clean(f"SMTP {host} refused every recipient: {text}")
        # nothing was sent: one recipient's "later" is worth another try, whatever the others said
        later = [code for code in codes if 400 <= code < 500]
        if later:
            return RetryableActionError(message, status=later[0])
        return PermanentActionError(message, status=codes[0] if codes else None)
    if isinstance(exc, errors.SMTPResponseException) and exc.code >= 400:
        message = clean(f"SMTP {host}: {exc.code} {exc.message}")
        if exc.code < 500:
            return RetryableActionError(message, status=exc.code)
        return PermanentActionError(message, status=exc.code)
    if isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, errors.SMTPConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    ):
        return PermanentActionError(clean(f"the certificate of SMTP {host} is not trusted: {exc}"))
    if isinstance(exc, errors.SMTPNotSupported):
        return PermanentActionError(clean(f"SMTP {host}: {exc}"))
    if isinstance(exc, errors.SMTPException) and not isinstance(
        exc, errors.SMTPServerDisconnected | errors.SMTPTimeoutError
    ):
        # what the server offers does not change between attempts
        said = str(exc).lower()
        if "starttls extension not supported" in said:
            return PermanentActionError(
                f"the SMTP server {host} does not offer STARTTLS, which `security: "
                "starttls` requires: nothing was sent (use tls, or fix the server)"
            )
        if "no suitable authentication method" in said:
            return PermanentActionError(
                f"the SMTP server {host} offers no login method rulekit can use "
                "(PLAIN, LOGIN or CRAM-MD5): nothing was sent"
            )
    if isinstance(exc, TimeoutError | OSError | errors.SMTPException):
        # timeouts, refused or dropped connections, odd replies: worth another try
        return RetryableActionError(clean(f"SMTP {host}: {type(exc).__name__}: {exc}"))
    raise exc
