"""JSON for the hot path: orjson (compiled) when installed, else the standard library.

Every Kubernetes response and watch event is parsed here, and every object body serialised;
orjson does both several times faster. Output is compact and keeps non-ASCII as UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; kept working without it
    orjson = None  # type: ignore[assignment]


def loads(data: bytes | str) -> Any:
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def dumps(value: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dumps_sorted(value: Any) -> bytes:
    """Canonical JSON: keys sorted, so equal values give equal bytes. For values that are kept:
    orjson's output keeps its whole working buffer (4 KiB at least), so it is copied to size."""
    if orjson is not None:
        return bytes(memoryview(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def dumps_text(value: Any) -> str:
    """Compact JSON as text, sized to its content: for JSON that is kept (rendered rules)."""
    if orjson is not None:
        return orjson.dumps(value).decode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
