"""TLS certificate checks for the gateway (one place: the router role's preflight and the tests).

``cert_status(pem, warn_days)`` reads the first certificate of a PEM text (a chain starts with the
server certificate) and says when it expires:

* ``state`` ``ok`` (more than ``warn_days`` left), ``warn`` (expires within ``warn_days``: the role
  shows a warning and goes on), ``expired`` or ``not_yet_valid`` (the role fails: clients would refuse
  every connection), ``invalid`` (not a PEM certificate).
* ``days_left`` (float), ``not_after`` (ISO 8601, UTC), ``subject``, ``dns_names`` and ``ip_addresses``
  (the subjectAltName entries), ``msg`` (one line for a warning or a failure).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

DEFAULT_WARN_DAYS = 30


def _load(pem: str):
    from cryptography import x509

    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    return x509.load_pem_x509_certificate(data)


def cert_status(pem: str, warn_days: int = DEFAULT_WARN_DAYS, now: datetime | None = None,
                label: str = "the certificate") -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    try:
        cert = _load(pem)
    except Exception as exc:  # cryptography raises ValueError for bad PEM, TypeError for odd input
        return {"state": "invalid", "msg": f"{label} is not a PEM certificate ({type(exc).__name__}: {exc})",
                "days_left": None, "not_after": None, "subject": None, "dns_names": [], "ip_addresses": []}
    from cryptography import x509

    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    days_left = (not_after - now).total_seconds() / 86400.0
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    out = {"days_left": round(days_left, 2), "not_after": not_after.isoformat(),
           "subject": cert.subject.rfc4514_string(), "dns_names": dns, "ip_addresses": ips}
    if now < not_before:
        out.update(state="not_yet_valid", msg=f"{label} is not valid before {not_before.isoformat()}")
    elif days_left <= 0:
        out.update(state="expired", msg=f"{label} expired on {not_after.isoformat()}: renew it")
    elif days_left < warn_days:
        out.update(state="warn", msg=(f"{label} expires in {days_left:.1f} days ({not_after.isoformat()}), "
                                      f"under {warn_days} days: renew it"))
    else:
        out.update(state="ok", msg=f"{label} valid until {not_after.isoformat()} ({days_left:.0f} days)")
    return out


# --------------------------------------------------------------------------- the whole pair

def _load_chain(pem: str) -> list:
    from cryptography import x509

    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    return list(x509.load_pem_x509_certificates(data))


def _public_der(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert_pem: str, key_pem: str) -> tuple[bool | None, str]:
    """Whether the private key is the certificate's (same public key). ``(None, why)`` when the key
    cannot be read (encrypted with a passphrase, not PEM)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_pem.encode() if isinstance(key_pem, str) else bytes(key_pem),
                                                 password=None)
    except TypeError:
        return None, "the key is encrypted with a passphrase (smg needs it unencrypted)"
    except Exception as exc:  # noqa: BLE001 - ValueError / UnsupportedAlgorithm for bad input
        return None, f"the key is not a PEM private key ({type(exc).__name__})"
    cert = _load(cert_pem)
    return _public_der(key.public_key()) == _public_der(cert.public_key()), ""


def san_covers(status: dict[str, Any], name: str) -> bool:
    """Whether the certificate's subjectAltName covers ``name`` (an IP address, or a DNS name with one
    leading ``*.`` wildcard label, as clients match it: RFC 6125; the CN is not used by clients)."""
    import ipaddress

    name = str(name).strip().strip("[]").rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return any(ipaddress.ip_address(a) == ip for a in status.get("ip_addresses") or [])
    for dns in status.get("dns_names") or []:
        dns = dns.rstrip(".").lower()
        if dns == name:
            return True
        if dns.startswith("*.") and "." in name and name.split(".", 1)[1] == dns[2:] and name.split(".", 1)[0]:
            return True
    return False


def chains_to(cert_pem: str, ca_pem: str, now: datetime | None = None) -> tuple[bool, str]:
    """Whether the server certificate (first of ``cert_pem``; the rest are intermediates) is signed,
    directly or through those intermediates, by a certificate of the CA bundle ``ca_pem``, each link
    valid at ``now`` (signature and issuer name: ``verify_directly_issued_by``)."""
    try:
        roots = _load_chain(ca_pem)
    except Exception as exc:  # noqa: BLE001
        return False, f"the CA file is not PEM certificates ({type(exc).__name__})"
    if not roots:
        return False, "the CA file holds no certificate"
    now = now or datetime.now(timezone.utc)
    chain = _load_chain(cert_pem)
    current, untrusted = chain[0], chain[1:]

    def issued_by(cert, issuer) -> bool:
        try:
            cert.verify_directly_issued_by(issuer)
            return True
        except Exception:  # noqa: BLE001 - wrong issuer name, bad signature, unsupported key
            return False

    for _ in range(8):
        for root in roots:
            if issued_by(current, root):
                if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
                    return False, f"the CA certificate {root.subject.rfc4514_string()} is not valid now"
                return True, ""
        parent = next((c for c in untrusted if issued_by(current, c)), None)
        if parent is None:
            return False, (f"its issuer {current.issuer.rfc4514_string()!r} (of {current.subject.rfc4514_string()!r}) "
                           "is not in the CA file")
        current = parent
    return False, "the chain is longer than 8 certificates"


def pair_problems(cert_pem: str, key_pem: str | None = None, ca_pem: str | None = None,
                  names: list[str] | tuple[str, ...] = (), warn_days: int = DEFAULT_WARN_DAYS,
                  now: datetime | None = None, label: str = "the certificate") -> list[dict[str, str]]:
    """Every check of a gateway certificate, key and CA: one list of ``{check, level, msg, fix}``
    (``level`` ``error`` or ``warning``). The same code runs on the controller (fleet validation, PEM
    text) and in the router role's preflight (files on the gateway host). Checks:

    * ``certificate``: PEM certificate, valid now (``expired`` / ``not_yet_valid`` are errors; under
      ``warn_days`` days left a warning: :func:`cert_status`);
    * ``key``: the private key is the certificate's (a mismatched pair never serves: the gateway
      fails its TLS handshake and the readiness gate waits out its timeout);
    * ``san``: every name in ``names`` (the address clients use) is in the certificate's
      subjectAltName (clients refuse a certificate that does not name the address they dialled);
    * ``chain``: the certificate verifies up to the CA bundle ``ca_pem`` (when one is given).
    """
    out: list[dict[str, str]] = []
    status = cert_status(cert_pem, warn_days, now=now, label=label)
    if status["state"] == "invalid":
        return [{"check": "certificate", "level": "error", "msg": status["msg"],
                 "fix": "give the certificate as PEM text (-----BEGIN CERTIFICATE-----), the server's first"}]
    if status["state"] in ("expired", "not_yet_valid"):
        out.append({"check": "certificate", "level": "error", "msg": status["msg"],
                    "fix": "renew the certificate (or fix the controller's / host's clock)"})
    elif status["state"] == "warn":
        out.append({"check": "certificate", "level": "warning", "msg": status["msg"],
                    "fix": "renew the certificate before it expires"})
    if key_pem:
        ok, why = key_matches(cert_pem, key_pem)
        if ok is None:
            out.append({"check": "key", "level": "error", "msg": why,
                        "fix": "give the unencrypted PEM private key of this certificate"})
        elif not ok:
            out.append({"check": "key", "level": "error",
                        "msg": f"the private key does not belong to {label} (their public keys differ)",
                        "fix": "give the key the certificate was issued for (or the certificate of this key)"})
    san = (status.get("dns_names") or []) + (status.get("ip_addresses") or [])
    for name in names:
        if name and not san_covers(status, str(name)):
            out.append({"check": "san", "level": "error",
                        "msg": f"{label} does not name {name}, the address clients use "
                               f"(subjectAltName: {', '.join(san) or 'none'})",
                        "fix": f"issue the certificate with {name} in its subjectAltName, or list the names clients "
                               "use in sglang_router_tls_server_names"})
    if ca_pem:
        ok, why = chains_to(cert_pem, ca_pem, now=now)
        if not ok:
            out.append({"check": "chain", "level": "error",
                        "msg": f"{label} does not chain to the CA file ({why})",
                        "fix": "give the CA that issued the certificate in sglang_router_tls_ca_file, or put the "
                               "intermediate certificates after the server certificate"})
    return out
