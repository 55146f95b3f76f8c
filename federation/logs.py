"""Logging: one set-up for the whole process, text or JSON lines, and a redaction guard.

``setup_logging`` installs a single handler on the root logger; every logger of the service
(and uvicorn's, which propagate to it) writes through it. Context travels as ``extra=`` keys
(``cluster``, ``kind``, ``object``, ``status``, ``attempt``, ``retry``...; ``name`` and
``message`` are taken by the LogRecord itself): the text format appends
them as ``key=value``, the JSON format makes them fields.

The redaction guard runs on every piece of text that leaves the process (message, extra values,
exception text): the API token and every credential found in the kubeconfig (registered with
:func:`register_secret` / :func:`register_kubeconfig_secrets`) are replaced, and so is anything
shaped like a bearer token, a JWT, a private key or a ``token:``/``password:`` field, so that a
credential that was never registered (an exception text quoting a header) is still caught.

The helpers at the end (:func:`cluster_state`, :func:`watch_restarted`, :func:`write_failed`)
give the cluster lines one wording and one set of fields wherever they are emitted.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")
REDACTED = "[redacted]"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# (uvicorn's color_message is its message again, with terminal colour codes.)
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "color_message",
}

# Shapes of credentials, for text that was never registered as a secret.
_PATTERNS = [
    # Authorization headers and "Bearer x" / "token x" wherever they appear.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}"), r"\1\2" + REDACTED),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:token\s+)?)[^\s'\",}]+"),
     r"\1" + REDACTED),
    # key: value / key=value / "key": "value" for credential-looking keys (kubeconfig users).
    (re.compile(
        r"(?i)(['\"]?\b(?:token|auth[_-]?token|password|passwd|secret|client-key-data|"
        r"id-token|refresh-token|access-token)['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
     r"\1" + REDACTED),
    # JSON Web Tokens (Kubernetes service-account tokens are JWTs).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+"), REDACTED),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
     REDACTED),
]

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# Shorter strings would redact ordinary words; no real credential is this short.
_MIN_SECRET = 6


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line (the API token, a kubeconfig credential)."""
    if value and len(value) >= _MIN_SECRET:
        with _secrets_lock:
            _secrets.add(value)


def register_kubeconfig_secrets(paths: Iterable[str | Path]) -> None:
    """Register every credential of every user entry in these kubeconfig files (unreadable or
    malformed files are skipped: loading the config reports them)."""
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        users = doc.get("users") if isinstance(doc, dict) else None
        for entry in users or []:
            user = entry.get("user") if isinstance(entry, dict) else None
            for value in _credentials(user):
                register_secret(value)


# Keys of a kubeconfig user entry (or its auth-provider config) whose values are credentials.
_CREDENTIAL_KEYS = frozenset({
    "token", "password", "client-key-data", "client-secret", "id-token", "refresh-token",
    "access-token",
})


def _credentials(value: Any) -> Iterable[str]:
    if isinstance(value, list):
        for item in value:
            yield from _credentials(item)
    if not isinstance(value, Mapping):
        return
    for key, item in value.items():
        if key in _CREDENTIAL_KEYS and isinstance(item, str):
            yield item
        elif key == "tokenFile" and isinstance(item, str):
            yield from _file_text(item)
        else:
            yield from _credentials(item)


def _file_text(path: str) -> Iterable[str]:
    try:
        yield Path(path).expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError):
        return


def redact(text: str) -> str:
    """``text`` with every registered secret and credential-shaped string replaced."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")}


def _clean(value: Any) -> Any:
    """A JSON-safe, redacted copy of an extra value."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return redact(str(value))


def _timestamp(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> key=value ...`` (the default)."""

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        fields = " ".join(f"{k}={_text_value(_clean(v))}" for k, v in _extras(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {message}"
        if fields:
            line += f" [{fields}]"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return json.dumps(text) if (" " in text or not text) else text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, every extra key, and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, _clean(value))
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


# Loggers that log request headers or bodies at DEBUG (the kubernetes client, urllib3, httpx
# and httpcore): kept at WARNING whatever the level, so a debug run shows no credential even
# before the redaction guard.
_CHATTY = ("kubernetes", "urllib3", "httpx", "httpcore", "hpack")


def setup_logging(level: str = "info", fmt: str = "text", *,
                  stream: Any = None) -> logging.Handler:
    """Route every logger through one redacting handler on ``stream`` (stderr by default)."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn's loggers write to the root handler (uvicorn is started with log_config=None).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    return handler


# -- the cluster lines ---------------------------------------------------------------------

CLUSTER_LOG = logging.getLogger("federation.cluster")
# States a cluster moves through, as /clusters shows them.
REACHABLE, FAILING, CIRCUIT_OPEN = "reachable", "failing", "circuit-open"
_STATE_LEVEL = {REACHABLE: logging.INFO, FAILING: logging.WARNING, CIRCUIT_OPEN: logging.ERROR}


def cluster_state(cluster: str, previous: str | None, state: str, *,
                  error: str | None = None, logger: logging.Logger = CLUSTER_LOG) -> None:
    """A cluster changed state (reachable -> failing -> circuit-open -> reachable). Call it on
    the change only, not on every probe; ``error`` is the one-line reason, as in /clusters."""
    recovered = state == REACHABLE and previous not in (None, REACHABLE)
    what = "recovered" if recovered else state
    message = f"cluster {cluster}: {previous or 'unknown'} -> {state}"
    if recovered:
        message += " (recovered)"
    if error:
        message += f": {error}"
    logger.log(_STATE_LEVEL.get(state, logging.WARNING), message, extra={
        "cluster": cluster, "state": state, "previous": previous, "event": what,
        **({"error": error} if error else {}),
    })


def watch_restarted(cluster: str, kind: str, reason: str, *, relist: bool,
                    logger: logging.Logger = CLUSTER_LOG) -> None:
    """A watch ended and is being restarted; ``relist`` when its resourceVersion was too old
    (410) or unknown, so the cache lists again."""
    then = "listing again" if relist else "resuming from the last resourceVersion"
    logger.warning(f"cluster {cluster}: watch of {kind} restarted ({reason}); {then}", extra={
        "cluster": cluster, "kind": kind, "event": "watch-restart", "reason": reason,
        "relist": relist,
    })


def write_failed(cluster: str, kind: str, name: str, *, status: int | None, attempt: int,
                 retry: bool, error: str, logger: logging.Logger = CLUSTER_LOG) -> None:
    """A Kubernetes write failed; ``status`` is the HTTP status (None: no answer), ``retry``
    whether another attempt follows (WARNING) or the write is given up (ERROR)."""
    then = "will retry" if retry else "giving up"
    logger.log(
        logging.WARNING if retry else logging.ERROR,
        f"cluster {cluster}: write of {kind} {name} failed "
        f"(status {status if status is not None else 'none'}, attempt {attempt}, {then}): {error}",
        extra={"cluster": cluster, "kind": kind, "object": name, "status": status,
               "attempt": attempt, "retry": retry, "event": "write-failed"},
    )
