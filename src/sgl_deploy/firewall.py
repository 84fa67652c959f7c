"""The gateway-only firewall of an engine host: who may reach the engine's port, as an nftables ruleset.

One place decides (roles/sglang_firewall renders :func:`plan`'s ``ruleset``; the monitoring role and
``sgl-deploy status`` ask :func:`enabled` and :func:`metrics_port` where an engine's metrics are):

* on when the inventory has gateway hosts (``sglang_firewall_enabled: auto``, the default), else off;
  ``true``/``false`` override;
* the toolkit owns one table, ``table inet sglang``, and nothing else: it is replaced atomically (one
  ``nft -f`` transaction: create, delete, define) and never flushes the ruleset or another table;
* its input chain (policy accept) filters two TCP ports only: the engine's API port and the metrics
  relay's port. Every other port (SSH, the rendezvous and NCCL ports, the watchdog, the weights fan-out)
  is left to the host's own firewall;
* the engine port accepts: loopback, the gateway hosts, the controller (as the host sees it: the client
  address of the Ansible SSH connection, or ``sglang_firewall_controller_addresses``), the other ranks of
  the host's multi-node replica group (every port) and ``sglang_firewall_allowed_cidrs``; everyone else
  gets a TCP reset (connection refused, at once);
* the metrics relay port accepts the same sources plus the monitoring hosts (Prometheus), which never
  reach the engine's API port.

Addresses are IP literals or names resolved on the controller (:func:`addresses`).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Iterable, Mapping

from sgl_deploy import ports, topology
from sgl_deploy.errors import SglDeployError

TABLE = "sglang"
FAMILY = "inet"
LOOPBACK = ("127.0.0.0/8", "::1/128")
AUTO = "auto"
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FirewallError(SglDeployError, ValueError):
    """An address that is neither an IP, a CIDR nor a name the controller resolves."""


def enabled(value: Any, gateways: Iterable[str] | None) -> bool:
    """``sglang_firewall_enabled`` -> on or off: ``auto`` (or unset) is on when there are gateway hosts."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in ("", AUTO):
        return bool(list(gateways or []))
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FirewallError(f"sglang_firewall_enabled must be auto, true or false, not {value!r}")


def enabled_value_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid ``sglang_firewall_enabled`` (None when it is)."""
    try:
        enabled(value, [])
    except FirewallError:
        return "is not auto, true or false"
    return None


def metrics_port(hostvars: Mapping[str, Any] | None) -> int:
    """The relay's port on an engine host: ``sglang_firewall_metrics_port``, else the one default."""
    hv = hostvars or {}
    try:
        port = int(hv.get("sglang_firewall_metrics_port"))
    except (TypeError, ValueError):
        return ports.ENGINE_METRICS_RELAY_PORT
    return port if 0 < port < 65536 else ports.ENGINE_METRICS_RELAY_PORT


def scrape_port(hostvars: Mapping[str, Any] | None, gateways: Iterable[str] | None) -> int:
    """Where Prometheus reads an engine's metrics: the relay when the firewall is on, else the engine port."""
    hv = hostvars or {}
    try:
        on = enabled(hv.get("sglang_firewall_enabled"), gateways)
    except FirewallError:
        on = False  # refused by validation before any host changes
    return metrics_port(hv) if on else ports.engine_port(hv)


def network(value: Any) -> Network | None:
    """An IP or CIDR (host bits allowed: ``10.0.0.5/24`` is ``10.0.0.0/24``) -> network; None otherwise."""
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        return None


def cidr_problem(value: Any) -> str | None:
    """Why ``value`` is not an IP address or CIDR (None when it is)."""
    if not isinstance(value, str) or network(value) is None:
        return "is not an IP address or CIDR (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/64)"
    return None


def _resolve(name: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise FirewallError(f"{name}: not an IP address and the controller cannot resolve it ({exc})") from None
    return sorted({info[4][0] for info in infos})


def addresses(values: Iterable[Any], resolve: Callable[[str], list[str]] = _resolve) -> list[Network]:
    """IPs, CIDRs or host names -> networks (names resolved with ``resolve``)."""
    out: list[Network] = []
    for value in values:
        if value is None or str(value).strip() == "":
            continue
        net = network(value)
        if net is not None:
            out.append(net)
            continue
        out.extend(ipaddress.ip_network(a) for a in resolve(str(value).strip()))
    return out


def ssh_client_address(ssh_connection: Any) -> str | None:
    """``$SSH_CONNECTION`` (``client_ip client_port server_ip server_port``) -> the client's IP."""
    parts = str(ssh_connection or "").split()
    if len(parts) == 4 and network(parts[0]) is not None:
        return parts[0]
    return None


def controller_addresses(configured: Iterable[Any] | None, ssh_connection: Any = None) -> list[str]:
    """The controller's addresses as a host sees them: ``sglang_firewall_controller_addresses`` when set,
    else the client address of the Ansible SSH connection (``$SSH_CONNECTION`` on the host), else none
    (a local connection: loopback is always allowed)."""
    listed = [str(a) for a in configured or [] if str(a).strip()]
    if listed:
        return listed
    client = ssh_client_address(ssh_connection)
    return [client] if client else []


def collapse(nets: Iterable[Network]) -> tuple[list[Network], list[Network]]:
    """Networks -> (IPv4, IPv6), merged and sorted (nft interval sets refuse overlapping elements)."""
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    return list(ipaddress.collapse_addresses(v4)), list(ipaddress.collapse_addresses(v6))


def _host_address(hv: Mapping[str, Any], name: str) -> str:
    return str(hv.get("ansible_host") or name)


def plan(
    host: str,
    hostvars: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Iterable[str]],
    controller: Iterable[Any] = (),
    resolve: Callable[[str], list[str]] = _resolve,
) -> dict[str, Any]:
    """The firewall of ``host``: {enabled, engine_port, metrics_port, sources, ruleset}.

    ``hostvars[host]`` holds its ``sglang_firewall_*`` values (role defaults included);
    ``controller`` the controller's addresses as this host sees them.
    """
    hv = hostvars[host]
    gateway_group = str(hv.get("sglang_firewall_gateway_group") or "sglang_routers")
    monitoring_group = str(hv.get("sglang_firewall_monitoring_group") or "monitoring")
    gateways = [str(h) for h in groups.get(gateway_group, []) or []]
    monitors = [str(h) for h in groups.get(monitoring_group, []) or []]
    on = enabled(hv.get("sglang_firewall_enabled"), gateways)
    group = topology.replica_group(host, hv.get("sglang_replicas") or hv.get("sglang_plan_replicas"))
    peers = [h for h in group if h != host]

    def of(names: list[str]) -> list[Network]:
        return addresses([_host_address(hostvars.get(n, {}), n) for n in names], resolve)

    sources = {
        "loopback": addresses(LOOPBACK),
        "gateways": of(gateways),
        "controller": addresses(list(controller or []), resolve),
        "peers": of(peers),
        "allowed_cidrs": addresses(list(hv.get("sglang_firewall_allowed_cidrs") or []), resolve),
        "monitoring": of(monitors),
    }
    engine_port = ports.engine_port(hv)
    relay_port = metrics_port(hv)
    if relay_port == engine_port:
        raise FirewallError(f"sglang_firewall_metrics_port {relay_port} is the engine's port")
    engine_sources = [n for k in ("loopback", "gateways", "controller", "allowed_cidrs") for n in sources[k]]
    return {
        "enabled": on,
        "engine_port": engine_port,
        "metrics_port": relay_port,
        "sources": {k: [str(n) for n in v] for k, v in sources.items()},
        "ruleset": render(engine_port, relay_port, engine_sources, sources["monitoring"], sources["peers"]),
    }


def _set(name: str, kind: str, nets: list[Network]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}", "\t\tflags interval"]
    if nets:
        lines.append("\t\telements = { " + ", ".join(str(n) for n in nets) + " }")
    return lines + ["\t}"]


def render(
    engine_port: int,
    relay_port: int,
    engine_sources: Iterable[Network],
    monitoring_sources: Iterable[Network] = (),
    peers: Iterable[Network] = (),
) -> str:
    """The nft script that replaces ``table inet sglang`` atomically (``nft -f``, one transaction)."""
    engine_v4, engine_v6 = collapse(engine_sources)
    metrics_v4, metrics_v6 = collapse(list(engine_sources) + list(monitoring_sources))
    peers_v4, peers_v6 = collapse(peers)
    lines = [
        "# sgl-deploy (roles/sglang_firewall): engine ports reachable only from the gateway, the controller,",
        "# the monitoring hosts (metrics relay only) and the ranks of this host's replica group.",
        "# Only this table is touched: the first two lines make `delete` safe when it does not exist yet,",
        "# and the whole file is one transaction (applied completely or not at all).",
        f"table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        "",
        f"table {FAMILY} {TABLE} {{",
    ]
    for name, kind, nets in (
        ("engine_v4", "ipv4_addr", engine_v4), ("engine_v6", "ipv6_addr", engine_v6),
        ("metrics_v4", "ipv4_addr", metrics_v4), ("metrics_v6", "ipv6_addr", metrics_v6),
        ("peers_v4", "ipv4_addr", peers_v4), ("peers_v6", "ipv6_addr", peers_v6),
    ):
        lines += _set(name, kind, nets)
        lines.append("")
    lines += [
        "\tchain input {",
        # priority filter (0), policy accept: other tables' chains still see (and may drop) every packet
        "\t\ttype filter hook input priority filter; policy accept;",
        '\t\tiif "lo" accept',
        "\t\tip saddr @peers_v4 accept",
        "\t\tip6 saddr @peers_v6 accept",
        f"\t\ttcp dport {engine_port} ip saddr @engine_v4 accept",
        f"\t\ttcp dport {engine_port} ip6 saddr @engine_v6 accept",
        f"\t\ttcp dport {engine_port} counter reject with tcp reset",
        f"\t\ttcp dport {relay_port} ip saddr @metrics_v4 accept",
        f"\t\ttcp dport {relay_port} ip6 saddr @metrics_v6 accept",
        f"\t\ttcp dport {relay_port} counter reject with tcp reset",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"
