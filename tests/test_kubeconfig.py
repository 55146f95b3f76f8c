"""Static credentials read without the kubernetes package; exec plugins still through it."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from federation import kubeconfig
from federation.kube import _credentials


def _write(path: Path, users: dict[str, dict[str, Any]], clusters: dict[str, dict[str, Any]],
           current: str | None = None) -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": {"cluster": next(iter(clusters)), "user": n}}
                     for n in users],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


PLAIN = {"server": "https://10.0.0.1:6443/", "insecure-skip-tls-verify": True}


def test_token_and_basic_auth(tmp_path: Path) -> None:
    path = _write(tmp_path / "config", {"t": {"token": "abc"},
                                        "b": {"username": "u", "password": "p"}},
                  {"c": PLAIN}, current="t")
    token = kubeconfig.from_kubeconfig([path], None)
    assert token is not None
    assert (token.server, token.verify, token.token()) == ("https://10.0.0.1:6443", False,
                                                           "Bearer abc")
    basic = kubeconfig.from_kubeconfig([path], "b")
    assert basic is not None and basic.token() == "Basic " + base64.b64encode(b"u:p").decode()


def test_token_file_is_read_again_after_a_while(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("one\n")
    path = _write(tmp_path / "config", {"f": {"tokenFile": "token"}}, {"c": PLAIN})
    creds = kubeconfig.from_kubeconfig([path], "f")  # a path relative to the kubeconfig
    assert creds is not None and creds.token() == "Bearer one"
    (tmp_path / "token").write_text("two")
    assert creds.token() == "Bearer one"  # not re-read on every request
    monkeypatch.setattr(kubeconfig, "REREAD_SECONDS", 0.0)
    assert creds.token() == "Bearer two"


def test_the_first_file_that_names_an_entry_wins(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", {"x": {"token": "first"}}, {"c": PLAIN}, current="x")
    second = _write(tmp_path / "b", {"x": {"token": "second"}, "y": {"token": "y"}},
                    {"c": {**PLAIN, "server": "https://other"}}, current="y")
    creds = kubeconfig.from_kubeconfig([first, second], None)
    assert creds is not None and creds.token() == "Bearer first"
    assert creds.server == "https://10.0.0.1:6443"
    assert kubeconfig.from_kubeconfig([first, second], "y") is not None


def test_ca_and_client_certificate_data_make_a_context(tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    b64 = {name: base64.b64encode(p.read_bytes()).decode() for name, p in
           (("key", key), ("cert", cert))}
    path = _write(tmp_path / "config",
                  {"m": {"client-certificate-data": b64["cert"], "client-key-data": b64["key"]}},
                  {"c": {"server": "https://h", "certificate-authority-data": b64["cert"]}})
    creds = kubeconfig.from_kubeconfig([path], "m")
    assert creds is not None and isinstance(creds.verify, ssl.SSLContext)
    assert creds.verify.verify_mode == ssl.CERT_REQUIRED
    assert len(creds.verify.get_ca_certs()) == 1
    assert creds.token() is None
    assert not list(tmp_path.glob("federation-cred-*"))  # temporary files removed


def test_exec_plugins_go_through_the_kubernetes_package(tmp_path: Path) -> None:
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential", "status": {"token": "from-plugin"}}
    plugin = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
              "args": ["-c", f"print({json.dumps(json.dumps(credential))})"]}
    path = _write(tmp_path / "config", {"e": {"exec": plugin}}, {"c": PLAIN})
    assert kubeconfig.from_kubeconfig([path], "e") is None
    registry = SimpleNamespace(kubeconfig=str(path))
    cluster = SimpleNamespace(in_cluster=False, context="e")
    creds = _credentials(registry, cluster)  # type: ignore[arg-type]
    assert creds.token() == "Bearer from-plugin"


def test_in_cluster_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cert = _self_signed(tmp_path)
    cert.rename(tmp_path / "ca.crt")
    (tmp_path / "token").write_text("sa-token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    creds = kubeconfig.in_cluster(tmp_path)
    assert creds.server == "https://[fd00::1]:443" and creds.token() == "Bearer sa-token"


def test_static_credentials_leave_the_kubernetes_package_unimported(tmp_path: Path) -> None:
    path = _write(tmp_path / "config", {"t": {"token": "abc"}}, {"c": PLAIN})
    code = ("import sys; from federation.kube import _credentials\n"
            "R = type('R', (), {'kubeconfig': sys.argv[1]})\n"
            "C = type('C', (), {'in_cluster': False, 'context': 't'})\n"
            "assert _credentials(R, C).token() == 'Bearer abc'\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('kubernetes', 'requests', 'oauthlib')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
