"""Label and field selectors: parsing (with the apiserver's errors) and matching.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from .validation import _label_value_errors, _qualified_name_errors

_Requirement = tuple[str, str, frozenset[str]]  # (key, operator, values)


def _split_terms(text: str) -> list[str]:
    # Commas separate requirements, except inside the value set of `in (a,b)`.
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms]


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")


@functools.lru_cache(maxsize=512)
def _parse_label_selector(text: str) -> tuple[_Requirement, ...]:
    if not text.strip():
        return ()
    reqs: list[_Requirement] = []
    for term in _split_terms(text):
        values: frozenset[str] = frozenset()
        if not term:
            raise ValueError("found '', expected: identifier")
        m = _SET_TERM.match(term)
        if m:
            key, op = m.group(1), m.group(2)
            values = frozenset(v.strip() for v in m.group(3).split(","))
            if not m.group(3).strip():
                raise ValueError(f"for '{op}', 'notin' operators, values set can't be empty")
        elif term.startswith("!"):
            key, op = term[1:].strip(), "!"
        elif "!=" in term:
            key, _, value = term.partition("!=")
            op, values = "!=", frozenset({value.strip()})
        elif "==" in term:
            key, _, value = term.partition("==")
            op, values = "=", frozenset({value.strip()})
        elif "=" in term:
            key, _, value = term.partition("=")
            op, values = "=", frozenset({value.strip()})
        else:
            key, op = term, "exists"
        key = key.strip()
        problems = _qualified_name_errors(key)
        problems += [e for v in values for e in _label_value_errors(v)]
        if problems:
            raise ValueError(f"unable to parse requirement: {term!r}: {'; '.join(problems)}")
        reqs.append((key, op, values))
    return tuple(reqs)


def _labels_match(reqs: tuple[_Requirement, ...], labels: Mapping[str, str]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        if op == "exists":
            ok = present
        elif op == "!":
            ok = not present
        elif op in ("=", "in"):
            ok = present and labels[key] in values
        else:  # "!=" and "notin" also match objects without the label, as in Kubernetes
            ok = not present or labels[key] not in values
        if not ok:
            return False
    return True


_FieldReq = tuple[str, bool, str]  # (field, equal?, value)


@functools.lru_cache(maxsize=256)
def _parse_field_selector(text: str) -> tuple[_FieldReq, ...]:
    reqs: list[_FieldReq] = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        op = next((o for o in ("!=", "==", "=") if o in term), None)
        if op is None:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
        name, _, value = term.partition(op)
        equal = op != "!="
        name = name.strip()
        if name not in ("metadata.name", "metadata.namespace"):
            raise ValueError(
                f'"{name}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        reqs.append((name, equal, value.strip()))
    return tuple(reqs)


def _fields_match(reqs: tuple[_FieldReq, ...], obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    for name, equal, value in reqs:
        actual = meta.get(name.partition(".")[2]) or ""
        if (actual == value) != equal:
            return False
    return True

