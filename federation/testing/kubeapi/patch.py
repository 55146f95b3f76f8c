"""JSON merge patches (RFC 7386) and JSON patches (RFC 6902), with the apiserver's error texts.
"""

from __future__ import annotations

import copy
from typing import Any

from .common import _short


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; never mutates its inputs."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class _PatchError(Exception):
    pass


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _PatchError(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list[Any], token: str, *, append_ok: bool = False) -> int:
    if append_ok and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise _PatchError(f"invalid array index: {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not append_ok):
        raise _PatchError(f"array index out of bounds: {i}")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise _PatchError(f"missing path component: {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token)]
        else:
            raise _PatchError(f"cannot traverse into a scalar at {token!r}")
    return node


def _pointer_get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchError(f"path does not exist: {last!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last)]
    raise _PatchError("cannot index a scalar")


def _pointer_add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, append_ok=True), value)
    else:
        raise _PatchError("cannot add to a scalar")
    return doc


def _pointer_remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise _PatchError("cannot remove the whole document")
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchError(f"unable to remove nonexistent key: {last}")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last))
    raise _PatchError("cannot remove from a scalar")


def _json_patch(doc: Any, operations: list[Any]) -> Any:
    """RFC 6902 JSON patch on a private copy of the document."""
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise _PatchError(f"invalid operation: {_short(op)}")
        kind, tokens = op["op"], _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _PatchError(f"{kind} operation does not apply: value is missing")
        if kind == "add":
            doc = _pointer_add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _pointer_remove(doc, tokens)
        elif kind == "replace":
            if tokens:
                _pointer_get(doc, tokens)  # must exist
                parent = _parent(doc, tokens)
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1])] = copy.deepcopy(op["value"])
                else:
                    parent[tokens[-1]] = copy.deepcopy(op["value"])
            else:
                doc = copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = _pointer_get(doc, source)
            if kind == "move":
                if op.get("path", "").startswith(op["from"] + "/"):
                    raise _PatchError("cannot move a value into one of its children")
                _pointer_remove(doc, source)
            else:
                value = copy.deepcopy(value)
            doc = _pointer_add(doc, tokens, value)
        elif kind == "test":
            if _pointer_get(doc, tokens) != op["value"]:
                raise _PatchError(f"testing value {op['path']} failed")
        else:
            raise _PatchError(f"unexpected kind of operation: {kind!r}")
    return doc

