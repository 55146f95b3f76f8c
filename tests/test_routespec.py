"""Route paths and targets: the validation rules of federation/routespec.py, one by one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import InvalidRoute
from federation.routespec import (
    RouteKey,
    brief,
    host_problem,
    normalize_path,
    validate_key,
    validate_target,
)

from .istio_schema import istio_domain_error

LABEL_63 = "a" * 62 + "b"


def name_of_length(n: int) -> str:
    """A valid DNS name of exactly ``n`` characters (labels of 63, then the rest)."""
    labels, left = [], n
    while left > 64:
        labels.append(LABEL_63)
        left -= 64
    labels.append("x" * (left - 4) + ".org" if left > 4 else "org"[:left])
    return ".".join(labels)


@pytest.mark.parametrize(
    "host",
    ["hub", "hub.jhub", "files.example.com", "a-b.c0", LABEL_63 + ".example.org", "xn--bcher-kva.de",
     "Upper.Example.org", name_of_length(253), "1a.2b"],
)
def test_valid_hosts(host) -> None:
    assert len(name_of_length(253)) == 253
    assert host_problem(host) is None
    assert istio_domain_error(host) is None


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("", "empty"),
        ("a" * 64 + ".example.org", "label of 64 characters"),
        (name_of_length(254), "254 characters"),
        ("x" * 300, "300 characters"),
        ("10.0.0.299", "all-numeric"),
        ("v1.2", "all-numeric"),
        ("a_b.example.org", "'a_b'"),
        ("-a.example.org", "'-a'"),
        ("a-.example.org", "'a-'"),
        ("a..example.org", "empty label"),
        ("example.org.", "empty label"),
        ("bücher.de", "'bücher'"),
        ("ex%41mple.org", "'ex%41mple'"),
    ],
)
def test_invalid_hosts(host, fragment) -> None:
    problem = host_problem(host)
    assert problem is not None and fragment in problem


HOSTISH = st.lists(
    st.text(alphabet="ab09-_.é", min_size=0, max_size=70), min_size=1, max_size=5
).map(".".join) | st.text(alphabet="a.1", min_size=250, max_size=260)


@settings(max_examples=300, deadline=None)
@given(HOSTISH)
def test_never_laxer_than_istio(host) -> None:
    """Every host this service accepts, Istio's own rule accepts (checked independently)."""
    if host_problem(host) is None:
        assert istio_domain_error(host) is None, host


@pytest.mark.parametrize(
    "target",
    ["http://hub:8081", "http://10.1.2.3:8888", "http://[fd00::1]:8888", "https://files.example.com/x?y=1",
     "http://jupyter-alice.jhub:65535", "https://" + LABEL_63 + ".example.org"],
)
def test_valid_targets(target) -> None:
    assert validate_target(target) == target


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("http://hub:0", "port 0"),
        ("http://hub:65536", "not a valid URL"),
        ("http://" + "x" * 300 + ":80", "300 characters"),
        ("http://10.0.0.299:80", "all-numeric"),
        ("http://" + "a" * 64 + ".example.org", "label of 64"),
        ("http://a_b.example.org", "'a_b'"),
        ("http://[fe80::1%25eth0]:80", "scoped IPv6"),
        ("http://bücher.de", "'bücher'"),
        ("http://example.org.:80", "empty label"),
    ],
)
def test_invalid_targets(target, fragment) -> None:
    with pytest.raises(InvalidRoute) as info:
        validate_target(target)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize(
    ("path", "host", "rest"),
    [
        ("/alice.hub.example.org/user/alice", "alice.hub.example.org", "/user/alice"),
        ("/10.0.0.1/user/x", "10.0.0.1", "/user/x"),
        ("/v1.2/user/x", None, "/v1.2/user/x"),  # Istio refuses an all-numeric last label
        ("/10.0.0.299/user/x", None, "/10.0.0.299/user/x"),
        ("/jupyter/user/x", None, "/jupyter/user/x"),
    ],
)
def test_host_segment_is_a_host_only_when_istio_takes_it(path, host, rest) -> None:
    key = RouteKey.parse(path)
    assert (key.host, key.rest) == (host, rest)


def test_host_segment_with_a_label_over_63_is_refused() -> None:
    with pytest.raises(InvalidRoute, match="label of 64"):
        validate_key(RouteKey.parse("/" + "a" * 64 + ".hub.example.org/user/a"))
    ok = RouteKey.parse("/" + LABEL_63 + ".hub.example.org/user/a")
    assert validate_key(ok) is ok


def test_path_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidRoute, match="surrogate"):
        normalize_path("/user/\ud800")


def test_brief_keeps_messages_to_one_short_line() -> None:
    text = brief({"a": "x\n" * 100, "b": "\ud800"})
    assert len(text) == 80 and "\n" not in text
    text.encode("utf-8")  # a lone surrogate is escaped by repr
    assert brief("short") == "'short'"
