"""Logs: the two formats, the access log, the cluster lines, and that no secret gets out."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from federation import logs
from federation.testing.harness import free_port, wait_for, wait_until_ready

from .conftest import TOKEN, fast_settings

FEDERATION = [sys.executable, "-m", "federation.cli"]


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """The process's logging set up as `serve` does it, into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    handler = logs.setup_logging("debug", "json", stream=buffer)
    try:
        yield buffer, handler
    finally:
        root.handlers[:], root.level = saved


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def test_json_lines_carry_the_fields_and_extras(captured) -> None:
    buffer, _ = captured
    logging.getLogger("federation.test").warning(
        "write of %s failed", "jupyterhub-r2-014",
        extra={"cluster": "east", "kind": "VirtualService", "status": 503, "retry": True})
    (line,) = lines(buffer)
    assert line["level"] == "warning" and line["logger"] == "federation.test"
    assert line["message"] == "write of jupyterhub-r2-014 failed"
    assert line["cluster"] == "east" and line["status"] == 503 and line["retry"] is True
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_text_format_is_one_readable_line_with_extras() -> None:
    record = logging.LogRecord("federation.x", logging.INFO, __file__, 1, "hello %s", ("east",), None)
    record.cluster = "east"
    record.error = "connection refused"
    text = logs.TextFormatter().format(record)
    assert "\n" not in text
    assert " INFO federation.x: hello east " in text
    assert 'cluster=east' in text and 'error="connection refused"' in text


def test_exceptions_are_one_json_field(captured) -> None:
    buffer, _ = captured
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("federation.test").exception("failed")
    (line,) = lines(buffer)
    assert "RuntimeError: boom" in line["exc"]


@pytest.mark.parametrize("text, secret", [
    ("Authorization: Bearer abcdef123456", "abcdef123456"),
    ("headers {'Authorization': 'token s3cr3t-value'}", "s3cr3t-value"),
    ('user: {"token": "kube-sa-token-xyz"}', "kube-sa-token-xyz"),
    ("password=hunter2hunter2", "hunter2hunter2"),
    ("sa eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl here", "eyJzdWIiOiJ4In0"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
])
def test_credential_shapes_are_redacted(text: str, secret: str) -> None:
    out = logs.redact(text)
    assert secret not in out and logs.REDACTED in out


def test_ordinary_text_is_left_alone() -> None:
    text = "cluster east: write of VirtualService jupyterhub-r2-014 failed (status 503)"
    assert logs.redact(text) == text


def test_registered_secrets_never_reach_a_line(captured, tmp_path: Path) -> None:
    buffer, _ = captured
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "users:\n- name: east\n  user:\n    token: plain-kube-credential-42\n"
        "    client-key-data: S0VZREFUQQ==\n")
    logs.register_kubeconfig_secrets([kubeconfig])
    logs.register_secret("the-hub-proxy-token")
    log = logging.getLogger("federation.test")
    log.error("refused with plain-kube-credential-42 and %s", "the-hub-proxy-token",
              extra={"detail": {"sent": "the-hub-proxy-token"}, "key": "S0VZREFUQQ=="})
    out = buffer.getvalue()
    for secret in ("plain-kube-credential-42", "the-hub-proxy-token", "S0VZREFUQQ=="):
        assert secret not in out
    assert out.count(logs.REDACTED) == 4


def test_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        logs.setup_logging("verbose", "text", stream=io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        logs.setup_logging("info", "xml", stream=io.StringIO())


def test_cluster_lines_name_the_cluster_and_state(captured) -> None:
    buffer, _ = captured
    logs.cluster_state("east", "reachable", logs.FAILING, error="connection refused")
    logs.cluster_state("east", logs.FAILING, logs.CIRCUIT_OPEN, error="connection refused")
    logs.cluster_state("east", logs.CIRCUIT_OPEN, logs.REACHABLE)
    logs.watch_restarted("east", "VirtualService", "410 Gone", relist=True)
    logs.write_failed("east", "VirtualService", "jupyterhub-r2-014", status=503, attempt=2,
                      retry=False, error="service unavailable")
    got = lines(buffer)
    assert [(g["level"], g.get("state")) for g in got[:3]] == [
        ("warning", "failing"), ("error", "circuit-open"), ("info", "reachable")]
    assert all(g["cluster"] == "east" for g in got)
    assert "recovered" in got[2]["message"] and got[2]["event"] == "recovered"
    assert got[3]["relist"] is True and "listing again" in got[3]["message"]
    assert got[4]["level"] == "error" and got[4]["attempt"] == 2 and got[4]["retry"] is False
    assert got[4]["object"] == "jupyterhub-r2-014" and got[4]["status"] == 503


def test_access_log_has_method_path_status_duration_and_nothing_else(captured, config_path) -> None:
    from federation.testing.harness import ServiceThread

    buffer, _ = captured
    body = {"target": "http://10.0.0.9:8888", "secret-in-body": "body-only-value"}
    with ServiceThread(fast_settings(config_path)) as svc:
        headers = {"Authorization": f"token {TOKEN}"}
        assert httpx.post(svc.url + "/api/routes/user/zed?q=query-only-value", json=body,
                          headers=headers).status_code == 201
        assert httpx.get(svc.url + "/api/routes", headers={"Authorization": "token wrong-token"}
                         ).status_code == 403
    access = [g for g in lines(buffer) if g["logger"] == "federation.access"]
    post = next(g for g in access if g["method"] == "POST")
    assert post["path"] == "/api/routes/user/zed" and post["status"] == 201
    assert post["route"] == "/api/routes/{path:path}" and post["duration_ms"] > 0
    assert any(g["status"] == 403 and g["path"] == "/api/routes" for g in access)
    out = buffer.getvalue()
    for leaked in (TOKEN, "wrong-token", "body-only-value", "query-only-value"):
        assert leaked not in out
    probes = [g for g in access if g["path"] == "/readyz"]
    assert probes and all(g["level"] == "debug" for g in probes)


def test_access_log_can_be_turned_off(captured, config_path) -> None:
    from federation.testing.harness import ServiceThread

    buffer, _ = captured
    with ServiceThread(fast_settings(config_path, access_log=False)) as svc:
        httpx.get(svc.url + "/api/routes", headers={"Authorization": f"token {TOKEN}"})
    assert not [g for g in lines(buffer) if g["logger"] == "federation.access"]
    assert any(g.get("event") == "start" for g in lines(buffer))


def test_serve_logs_start_and_json_lines_without_secrets(config_path: Path, clusters) -> None:
    """A real `serve` at debug, JSON format: start-up line, access lines, every line JSON, and
    neither the API token nor any kubeconfig token anywhere in the output."""
    port = free_port()
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN, "FEDERATION_LOG_FORMAT": "json",
           "FEDERATION_LOG_LEVEL": "debug"}
    proc = subprocess.Popen(
        FEDERATION + ["serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url)
        headers = {"Authorization": f"token {TOKEN}"}
        httpx.post(url + "/api/routes/user/x", json={"target": "http://10.0.0.1:8888"}, headers=headers)
        httpx.get(url + "/clusters", headers=headers)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    parsed = [json.loads(line) for line in out.splitlines() if line.strip()]
    start = next(p for p in parsed if p.get("event") == "start")
    assert start["clusters"] == ["hub", "east", "west"] and start["version"]
    assert any(p.get("path") == "/api/routes/user/x" and p["status"] == 201 for p in parsed)
    for server in clusters.servers.values():
        assert server.token not in out
    assert TOKEN not in out


def _wait_for(buffer: io.StringIO, match, timeout: float = 5.0) -> dict:
    try:
        return wait_for(lambda: [g for g in lines(buffer) if match(g)], "a log line", timeout)[0]
    except AssertionError:
        raise AssertionError("no such log line; got:\n" + buffer.getvalue()[-3000:]) from None


def test_an_outage_and_its_recovery_are_logged(captured, config_path, clusters) -> None:
    """One emulated cluster goes down and comes back: the log names it and each state."""
    from federation.testing.harness import ServiceThread

    from .conftest import CONTEXTS

    buffer, _ = captured
    east = clusters.servers[CONTEXTS["east"]]
    with ServiceThread(fast_settings(config_path)) as svc:
        east.set_down(True)
        headers = {"Authorization": f"token {TOKEN}"}
        for _ in range(4):
            httpx.post(svc.url + "/api/routes/user/ann", headers=headers,
                       json={"target": "https://east.hub.example.org", "user": "ann"})
        down = _wait_for(buffer, lambda g: g.get("cluster") == "east"
                         and g.get("state") in (logs.FAILING, logs.CIRCUIT_OPEN))
        assert down["level"] in ("warning", "error") and "east" in down["message"]
        east.set_down(False)
        back = _wait_for(buffer, lambda g: g.get("cluster") == "east" and g.get("event") == "recovered")
        assert back["state"] == logs.REACHABLE
    assert east.token not in buffer.getvalue()


def test_reload_refused_and_accepted_lines(captured, config_path, clusters) -> None:
    import yaml

    from federation.testing.harness import ServiceThread

    from .conftest import base_config

    buffer, _ = captured
    with ServiceThread(fast_settings(config_path)):
        config_path.write_text("home: [unclosed\n")
        refused = _wait_for(buffer, lambda g: g.get("event") == "reload-refused")
        assert refused["level"] == "error" and str(config_path) in refused["message"]
        assert "keeping the running config" in refused["message"]
        doc = base_config(str(clusters.kubeconfig))
        doc["clusters"] = doc["clusters"][:2]
        config_path.write_text(yaml.safe_dump(doc))
        accepted = _wait_for(buffer, lambda g: g.get("event") == "reload-accepted")
    assert accepted["removed"] == ["west"] and accepted["added"] == []
    assert accepted["clusters"] == ["hub", "east"]


def test_uvicorns_colour_copy_of_the_message_is_dropped() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started %d", (7,), None)
    record.color_message = "Started \x1b[36m%d\x1b[0m"
    assert "color_message" not in logs.TextFormatter().format(record)
    assert "color_message" not in json.loads(logs.JSONFormatter().format(record))


def test_only_kubeconfig_credentials_are_registered(captured, tmp_path: Path) -> None:
    buffer, _ = captured
    token_file = tmp_path / "sa-token"
    token_file.write_text("token-from-a-file-77\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "users:\n"
        f"- name: a\n  user:\n    tokenFile: {token_file}\n"
        "- name: b\n  user:\n    auth-provider:\n      config:\n        refresh-token: refresh-88888\n"
        "- name: c\n  user:\n    client-certificate: /etc/certs/client-cert.pem\n")
    logs.register_kubeconfig_secrets([kubeconfig])
    logging.getLogger("federation.test").warning(
        "token-from-a-file-77 refresh-88888 /etc/certs/client-cert.pem")
    (line,) = lines(buffer)
    assert line["message"] == "[redacted] [redacted] /etc/certs/client-cert.pem"
