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
