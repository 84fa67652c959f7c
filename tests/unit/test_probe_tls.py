"""`sgl-deploy probe --ca-file`: an https endpoint signed by a private CA is verified against that CA
(the lab gateway's case); without it the certificate is refused and the endpoint is unreachable (exit 3)."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sgl_deploy import cli

x509 = pytest.importorskip("cryptography.x509")


def issue(tmp_path):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))


@pytest.fixture
def https_server(tmp_path):
    issue(tmp_path)

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path in ("/v1/models", "/health"):
                data = json.dumps({"object": "list", "data": [{"id": "MiniMax-M3", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
            else:
                data = b"{}"
                self.send_response(404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "ca.pem"
    server.shutdown()


def test_ca_file_verifies_a_private_ca(https_server, capsys):
    url, ca = https_server
    rc = cli.main(["probe", "--base-url", url, "--model", "MiniMax-M3", "--only", "models", "--quiet",
                   "--ca-file", str(ca)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "MiniMax-M3 listed" in out


def test_without_the_ca_the_certificate_is_refused(https_server, capsys):
    url, _ = https_server
    rc = cli.main(["probe", "--base-url", url, "--model", "MiniMax-M3", "--only", "models", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 3 and "CERTIFICATE_VERIFY_FAILED" in captured.err


def test_a_missing_ca_file_is_a_usage_error(https_server, tmp_path, capsys):
    url, _ = https_server
    assert cli.main(["probe", "--base-url", url, "--ca-file", str(tmp_path / "nope.pem")]) == 2
