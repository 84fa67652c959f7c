"""What Prometheus and ``sgl-deploy status`` look at: the fleet's endpoints, from the inventory.

One place decides which hosts serve metrics and where:

* engines: the rank-0 hosts of the engine group (ranks >= 1 of a multi-node replica group serve no
  HTTP in SGLang: no ``/metrics``, no ``/health``); ``http://<ansible_host>:<sglang_plan_port>``;
  metrics there too, or on the metrics relay (``sglang_firewall_metrics_port``, default 9480) when the
  gateway-only firewall is on (:func:`sgl_deploy.firewall.scrape_port`);
* gateways: every host of the router group; metrics on ``sglang_router_prometheus_port`` (default
  29000), the API on ``sglang_router_port`` (default 30000).

The monitoring role renders :func:`file_sd` of these as Prometheus file_sd target files (filter
``sgl_scrape_targets``); ``sgl-deploy status`` contacts the same endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from sgl_deploy import firewall, ports
from sgl_deploy.topology import replica_group

DEFAULT_ENGINE_PORT = ports.ENGINE_PORT
DEFAULT_ROUTER_PORT = ports.ROUTER_PORT
DEFAULT_ROUTER_METRICS_PORT = ports.ROUTER_METRICS_PORT


@dataclass
class Endpoint:
    name: str  # inventory hostname
    role: str  # "engine" or "gateway"
    address: str  # ansible_host
    port: int  # API port
    metrics_port: int
    node_rank: int = 0
    group: list[str] = field(default_factory=list)  # replica group in rank order (engines)

    def url(self, port: int | None = None) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{port or self.port}"


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def endpoints(
    engines: Iterable[str],
    routers: Iterable[str],
    hostvars: Mapping[str, Mapping[str, Any]],
) -> list[Endpoint]:
    """Every engine host (all ranks, ``node_rank`` set) and every gateway, in inventory order."""
    out = []
    routers = list(routers)
    for name in engines:
        hv = hostvars[name]
        group = replica_group(name, hv.get("sglang_replicas") or hv.get("sglang_plan_replicas"))
        port = ports.engine_port(hv)
        out.append(Endpoint(name, "engine", str(hv.get("ansible_host") or name), port,
                            firewall.scrape_port(hv, routers), group.index(name), group))
    for name in routers:
        hv = hostvars[name]
        out.append(Endpoint(
            name, "gateway", str(hv.get("ansible_host") or name),
            _int(hv.get("sglang_router_port"), DEFAULT_ROUTER_PORT),
            _int(hv.get("sglang_router_prometheus_port"), DEFAULT_ROUTER_METRICS_PORT),
        ))
    return out


def file_sd(eps: Iterable[Endpoint], role: str, labels: Mapping[str, Mapping[str, str]] | None = None) -> list[dict]:
    """Prometheus file_sd entries for the endpoints of ``role`` that serve metrics (engines: rank 0).

    Labels: ``instance_name`` (inventory hostname), ``role``, plus ``labels[host]``.
    """
    out = []
    for ep in eps:
        if ep.role != role or (role == "engine" and ep.node_rank != 0):
            continue
        host = f"[{ep.address}]" if ":" in ep.address else ep.address
        entry_labels = {"instance_name": ep.name, "role": role}
        entry_labels.update({k: str(v) for k, v in ((labels or {}).get(ep.name) or {}).items()})
        out.append({"targets": [f"{host}:{ep.metrics_port}"], "labels": entry_labels})
    return out
