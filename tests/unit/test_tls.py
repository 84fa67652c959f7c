"""Gateway TLS: the certificate expiry rule (sgl_deploy.tls) and the fleet validation's TLS pair rule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sgl_deploy import tls, validate

x509 = pytest.importorskip("cryptography.x509")


def make_cert(days_valid: float, start_offset_days: float = -1) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + timedelta(days=start_offset_days))
            .not_valid_after(now + timedelta(days=days_valid))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.example"),
                                                        x509.IPAddress(ipaddress.ip_address("10.77.0.99"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("days, state", [(365, "ok"), (31, "ok"), (29, "warn"), (1, "warn"), (-1, "expired")])
def test_expiry_states(days, state):
    out = tls.cert_status(make_cert(days), warn_days=30)
    assert out["state"] == state, out
    assert out["dns_names"] == ["gw.example"] and out["ip_addresses"] == ["10.77.0.99"]
    if state == "warn":
        assert "under 30 days" in out["msg"]


def test_not_yet_valid_and_garbage():
    assert tls.cert_status(make_cert(10, start_offset_days=2))["state"] == "not_yet_valid"
    assert tls.cert_status("hello")["state"] == "invalid"


def test_the_filter_is_the_same_rule():
    from importlib import util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "sgl_host.py"
    spec = util.spec_from_file_location("sgl_host_filter", path)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    f = module.FilterModule().filters()["sgl_cert_status"]
    assert f(make_cert(5), 30)["state"] == "warn" and f(make_cert(5), 3)["state"] == "ok"


PEM = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("vars_, bad", [
    ({}, []),
    ({"sglang_router_tls_cert": PEM, "sglang_router_tls_key": PEM}, []),
    ({"sglang_router_tls_cert_path": "/etc/gw.pem", "sglang_router_tls_key_path": "/etc/gw.key"}, []),
    ({"sglang_router_tls_cert": PEM, "sglang_router_tls_key": ""}, ["sglang_router_tls_key"]),
    ({"sglang_router_tls_key_path": "/k"}, ["sglang_router_tls_cert"]),
    ({"sglang_router_tls_cert": PEM, "sglang_router_tls_cert_path": "/c", "sglang_router_tls_key": PEM},
     ["sglang_router_tls_cert_path"]),
    ({"sglang_router_tls_cert": "not pem", "sglang_router_tls_key": PEM}, ["sglang_router_tls_cert"]),
    ({"sglang_router_tls_cert_path": "gw.pem", "sglang_router_tls_key_path": "/k"}, ["sglang_router_tls_cert_path"]),
])
def test_tls_pair_rule(vars_, bad):
    problems = validate.host_problems("gw", vars_, ["sglang_routers"])
    assert sorted(p["variable"] for p in problems) == sorted(bad), problems
    assert all(PEM not in str(p) for p in problems)  # never shows the PEM (the key)
