"""Why a connection failed, in the operator's words. The exception's class alone can mislead:
httpx-aiohttp's transport maps every aiohttp connection error, a refused connection included,
to httpx.ConnectTimeout; the cause it chains says what happened."""

from __future__ import annotations

import errno
import socket
import ssl


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 10:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def why_unreachable(exc: BaseException) -> str:
    """A short reason: connection refused, host name not found, the TLS problem, or (nothing
    more precise being known) the exception's class name."""
    for cause in _chain(exc):
        if isinstance(cause, ConnectionRefusedError) or (
                isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED):
            return "connection refused"
        if isinstance(cause, socket.gaierror) or "DNSError" in type(cause).__name__:
            return "host name not found"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: certificate not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause}"
    return type(exc).__name__
