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


def make_ca(name: str = "lab CA"):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca=None, days: float = 365, dns=("gw.example",), ips=("10.77.0.99",)):
    """(certificate PEM, key PEM, CA PEM) of a server certificate signed by ``ca`` (a new CA if None)."""
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert, ca_key = ca or make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days)))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return cert.public_bytes(pem).decode(), key_pem, ca_cert.public_bytes(pem).decode()


PEM, KEY, CA = issue()


@pytest.mark.parametrize("vars_, bad", [
    ({}, []),
    ({"sglang_router_tls_cert": PEM, "sglang_router_tls_key": KEY}, []),
    ({"sglang_router_tls_cert_path": "/etc/gw.pem", "sglang_router_tls_key_path": "/etc/gw.key"}, []),
    ({"sglang_router_tls_cert": PEM, "sglang_router_tls_key": ""}, ["sglang_router_tls_key"]),
    ({"sglang_router_tls_key_path": "/k"}, ["sglang_router_tls_cert"]),
    ({"sglang_router_tls_cert": PEM, "sglang_router_tls_cert_path": "/c", "sglang_router_tls_key": KEY},
     ["sglang_router_tls_cert_path"]),
    ({"sglang_router_tls_cert": "not pem", "sglang_router_tls_key": KEY}, ["sglang_router_tls_cert"]),
    ({"sglang_router_tls_cert_path": "gw.pem", "sglang_router_tls_key_path": "/k"}, ["sglang_router_tls_cert_path"]),
])
def test_tls_pair_rule(vars_, bad):
    problems = validate.host_problems("gw", {**vars_, "ansible_host": "10.77.0.99", "sglang_router_api_key": "k"},
                                      ["sglang_routers"])
    assert sorted(p["variable"] for p in problems) == sorted(bad), problems
    assert all(KEY not in str(p) and PEM not in str(p) for p in problems)  # never shows the PEM (the key)


# ---------------------------------------------------------------- the whole pair, on the controller

def _tls(host="gw", **kw):
    base = {"ansible_host": "10.77.0.99", "sglang_router_api_key": "k", "sglang_router_tls_cert": PEM,
            "sglang_router_tls_key": KEY}
    problems = validate.host_problems(host, {**base, **kw}, ["sglang_routers"])
    assert all(KEY not in str(p) for p in problems)
    return problems


def test_a_good_pair_with_its_ca_passes(tmp_path):
    (tmp_path / "ca.crt").write_text(CA)
    assert _tls(sglang_router_tls_ca_file=str(tmp_path / "ca.crt")) == []
    assert tls.pair_problems(PEM, KEY, CA, ["10.77.0.99", "gw.example"]) == []


def test_someone_elses_key_is_refused():
    _other_cert, other_key, _ca = issue()
    p = [p for p in _tls(sglang_router_tls_key=other_key) if p["variable"] == "sglang_router_tls_key"]
    assert len(p) == 1 and "does not belong to the gateway certificate" in p[0]["problem"], p
    assert p[0]["value"] == "<secret PEM key>" and "key the certificate was issued for" in p[0]["fix"]


def test_expired_is_an_error_and_soon_a_warning():
    ca = make_ca()
    old, old_key, _ = issue(ca, days=-0.5)
    p = [p for p in _tls(sglang_router_tls_cert=old, sglang_router_tls_key=old_key) if "expired" in p["problem"]]
    assert p and p[0].get("level") != "warning" and p[0]["variable"] == "sglang_router_tls_cert"
    soon, soon_key, _ = issue(ca, days=10)
    p = _tls(sglang_router_tls_cert=soon, sglang_router_tls_key=soon_key)
    assert len(p) == 1 and p[0]["level"] == "warning" and "under 30 days" in p[0]["problem"], p
    assert _tls(sglang_router_tls_cert=soon, sglang_router_tls_key=soon_key, sglang_router_tls_expiry_warn_days=5) == []


def test_san_must_name_the_address_clients_use():
    p = _tls(ansible_host="10.77.0.5")
    assert len(p) == 1 and "does not name 10.77.0.5" in p[0]["problem"] and "10.77.0.99" in p[0]["problem"], p
    assert "sglang_router_tls_server_names" in p[0]["fix"]
    assert _tls(ansible_host="10.77.0.5", sglang_router_tls_server_names=["gw.example"]) == []
    p = _tls(sglang_router_tls_server_names=["gw.example", "api.example"])
    assert len(p) == 1 and "api.example" in p[0]["problem"]
    wild, wild_key, _ = issue(dns=("*.example",), ips=())
    assert tls.pair_problems(wild, wild_key, None, ["api.example"]) == []
    assert tls.pair_problems(wild, wild_key, None, ["a.b.example"])[0]["check"] == "san"


def test_chain_to_the_given_ca(tmp_path):
    (tmp_path / "other.crt").write_text(issue()[2])
    p = _tls(sglang_router_tls_ca_file=str(tmp_path / "other.crt"))
    assert len(p) == 1 and p[0]["variable"] == "sglang_router_tls_ca_file" and "does not chain" in p[0]["problem"], p
    p = _tls(sglang_router_tls_ca_file=str(tmp_path / "missing.crt"))
    assert len(p) == 1 and "cannot be read on the controller" in p[0]["problem"]
    # an intermediate after the server certificate
    root = make_ca("root")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    from cryptography.hazmat.primitives.asymmetric import ec
    now = datetime.now(timezone.utc)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mid")]))
           .issuer_name(root[0].subject).public_key(mid_key.public_key()).serial_number(1)
           .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(root[1], hashes.SHA256()))
    leaf, leaf_key, _ = issue((mid, mid_key))
    chain = leaf + mid.public_bytes(serialization.Encoding.PEM).decode()
    root_pem = root[0].public_bytes(serialization.Encoding.PEM).decode()
    assert tls.pair_problems(chain, leaf_key, root_pem, ["10.77.0.99"]) == []
    assert tls.pair_problems(leaf, leaf_key, root_pem, ["10.77.0.99"])[0]["check"] == "chain"


# ---------------------------------------------------------------- host paths: the router role's tls.yml

def _router_tls_play(tmp_path, cert, key, ca=None, names=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    bindir = Path(sys.executable).parent
    if not (bindir / "ansible-playbook").exists():
        pytest.skip("ansible-playbook not next to this python")
    (tmp_path / "gw.crt").write_text(cert)
    (tmp_path / "gw.key").write_text(key)
    args = {"sglang_router_tls_cert_path": str(tmp_path / "gw.crt"), "sglang_router_tls_key_path": str(tmp_path / "gw.key"),
            "ansible_host": "10.77.0.99"}
    if ca:
        (tmp_path / "ca.crt").write_text(ca)
        args["sglang_router_tls_ca_file"] = str(tmp_path / "ca.crt")
    if names:
        args["sglang_router_tls_server_names"] = names
    play = [{"hosts": "gw", "gather_facts": False, "vars": args, "tasks": [
        {"ansible.builtin.include_role": {"name": "sglang_router", "tasks_from": "tls.yml"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(repo / "ansible.cfg"), "PYTHONPATH": str(repo / "src"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(bindir / "ansible-playbook"), "-i", "gw,", "-c", "local", "--check",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    return proc, proc.stdout + proc.stderr


def test_host_path_certificates_are_checked_on_the_gateway_host(tmp_path):
    proc, out = _router_tls_play(tmp_path, PEM, KEY, CA)
    assert proc.returncode == 0, out
    _c, other_key, other_ca = issue()
    proc, out = _router_tls_play(tmp_path, PEM, other_key, other_ca, names=["gw.example", "api.example"])
    assert proc.returncode != 0, out
    for needle in ("gw: the private key does not belong to the gateway certificate of gw",
                   "does not name api.example", "does not chain to the CA file"):
        assert needle in out, f"{needle!r} missing:\n{out}"
    assert other_key.splitlines()[1] not in out  # the key is never shown
