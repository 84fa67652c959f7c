"""Default ports: the one place each default lives.

The role defaults (``sglang_plan_port`` in roles/sglang_plan, ``sglang_router_port`` and
``sglang_router_prometheus_port`` in roles/sglang_router, ``sglang_firewall_metrics_port`` in
roles/sglang_firewall, ``sglang_watchdog_port`` in roles/sglang_watchdog) and the watchdog script's own
fallback repeat these numbers because
argument specs need literals; tests/unit/test_ports.py fails when they differ. Everything else
(the planner, the argv builder, monitoring, status, the probes and router roles through the
filter ``sgl_engine_port``) reads them from here.
"""

from __future__ import annotations

from typing import Any, Mapping

ENGINE_PORT = 8000
ROUTER_PORT = 30000
ROUTER_METRICS_PORT = 29000
# The metrics relay of an engine host behind the gateway-only firewall (roles/sglang_firewall): SGLang
# serves /metrics only on its API port (0.5.23 has no separate metrics port in HTTP mode), which the
# firewall closes to the monitoring hosts; the relay serves GET /metrics on this port instead.
ENGINE_METRICS_RELAY_PORT = 9480
WATCHDOG_PORT = 20090  # the group watchdog's GET /state (roles/sglang_watchdog, multi-node groups)


def _port(value: Any) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def engine_port(hostvars: Mapping[str, Any] | None) -> int:
    """The engine port of one host: its plan fact's ``port``, else ``sglang_plan_port``, else
    ENGINE_PORT."""
    hv = hostvars or {}
    plan = hv.get("sglang_plan_result") or {}
    for value in (plan.get("port") if isinstance(plan, Mapping) else None, hv.get("sglang_plan_port")):
        port = _port(value)
        if port is not None:
            return port
    return ENGINE_PORT


def watchdog_port(value: Any = None) -> int:
    """The group watchdog's port: ``value`` (``sglang_watchdog_port`` when set), else WATCHDOG_PORT."""
    port = _port(value)
    return WATCHDOG_PORT if port is None else port
