"""How the ``email`` action reaches its SMTP server, and what it calls itself there.

* The server's address (:func:`open_socket`): the name is looked up with the loop's
  ``getaddrinfo`` (the daemon's :class:`~rulekit.server.lookups.Lookups`: off the default
  executor, one lookup at a time per name) and each address is tried in turn; aiosmtplib gets
  the connected socket and the configured name, so TLS still checks the certificate against the
  name, never the address. aiosmtplib gave the name to ``loop.create_connection``, which under
  uvloop (the daemon's loop) looks it up itself in libuv's thread pool, past the daemon's
  lookups: a mail server's name whose DNS never answered took one more thread at every attempt.
  The lookup and each connection attempt have the step ``timeout``.
* The name given in EHLO (:func:`ehlo_name`): the configured ``helo_name``, else the domain of
  the ``from`` address. aiosmtplib's default is the machine's fully qualified name, which tells
  every mail server the machine's own name (and its headers pass it on to every recipient), and
  which it looks up at every connection in a thread of the default executor, where a lookup
  that never answers holds one.
* A failed exchange (:func:`drop_connection`) resets its connection: nothing it had not yet
  sent is sent later.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING

from rulekit.actions.email_message import domain_of, sender_address
from rulekit.errors import RetryableActionError

if TYPE_CHECKING:
    import aiosmtplib

NEUTRAL_NAME = "rulekit.invalid"
"""The EHLO name when ``from`` has no domain a mail server could be told (never in practice)."""

RESET = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on, 0 s: closing the socket resets the connection, dropping what it holds."""

_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


def helo_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be said in EHLO: it must be a domain name (letters, digits, dots and
    hyphens) or an address literal (``[192.0.2.1]``)."""
    if name.startswith("[") and name.endswith("]"):
        inner = name[1:-1]
        allowed = _NAME_CHARACTERS | frozenset(":")
        if inner and len(name) <= 255 and all(c in allowed for c in inner):
            return None
        return "is not an address literal ([192.0.2.1])"
    if not name or len(name) > 253 or any(c not in _NAME_CHARACTERS for c in name):
        return "is not a domain name (letters, digits, dots and hyphens, at most 253)"
    if name.startswith(".") or name.endswith(".") or ".." in name:
        return "is not a domain name (an empty label)"
    return None


def ehlo_name(helo_name: str | None, sender: str) -> str:
    """The name rulekit gives in EHLO: ``helo_name``, else ``sender``'s domain in ASCII."""
    if helo_name:
        return helo_name
    try:
        # in A-labels as the sender's address is sent (IDNA 2008, not Python's 2003 codec)
        ascii_name = domain_of(sender_address(sender))
    except ValueError:
        return NEUTRAL_NAME
    if not ascii_name.isascii():
        return NEUTRAL_NAME
    return NEUTRAL_NAME if helo_name_problem(ascii_name) else ascii_name


async def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A socket connected to ``host``'s first address that answers, ``host`` looked up with
    the loop's ``getaddrinfo``; the lookup and each attempt within ``timeout`` seconds.
    Nothing was sent when it fails: :class:`RetryableActionError`."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise RetryableActionError(
            f"SMTP {host}: the name was not looked up within {timeout:g} s: nothing was sent"
        ) from None
    except OSError as exc:
        raise RetryableActionError(
            f"SMTP {host}: the name was not found ({exc}): nothing was sent"
        ) from None
    tried: list[str] = []
    for family, kind, proto, _canonical, address in found:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, address)
        except (OSError, TimeoutError) as exc:
            sock.close()
            why = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            tried.append(f"{address[0]}: {why}")
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise RetryableActionError(
        f"SMTP {host} port {port}: no connection ({'; '.join(tried) or 'no address'}): "
        "nothing was sent"
    )


def drop_connection(
    client: aiosmtplib.SMTP | None,
    transport: asyncio.BaseTransport | None,
    sock: socket.socket | None,
) -> None:
    """End a failed exchange at once: its ``transport`` aborted, what was not yet written
    dropped, even when the client has already closed it (aiosmtplib closes a connection
    whose reply did not come in time, and a closed transport still writes what it holds: the
    rest of a message, its final dot included, once the server reads again), and so is what
    the system still holds to send (the connection is reset: ``SO_LINGER`` 0); ``sock``
    closed when no client took it."""
    if transport is not None:
        with contextlib.suppress(OSError, AttributeError):  # (already closed: nothing held)
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, RESET
            )
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    if client is not None:
        client.close()
    if sock is not None:
        sock.close()
