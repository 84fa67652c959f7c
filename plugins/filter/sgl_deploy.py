"""Ansible filters for the SGLang/MiniMax toolkit: thin wrappers over ``sgl_deploy``.

Loaded through ``filter_plugins = plugins/filter`` (ansible.cfg), so the filters are
called by their bare names:

* ``xml | sgl_gpu_facts(topo_text)``               -> GPU facts dict
* ``facts | sgl_preflight_problems(requirements)`` -> list of {check, found, needed, fix}
* ``result | sgl_nvidia_smi_problems(cmd, min_driver)`` -> [] or [the nvidia-smi problem]
* ``facts | sgl_needs_fabric_manager``             -> bool
* ``facts | sgl_plan(profile=..., weights_gb=..., ...)`` -> plan dict (sglang_plan_result)
* ``facts | sgl_plan_attempt(inventory_host=..., ...)`` -> {plan, error}: never raises (clean refusals)
* ``facts | sgl_same_gpu_hosts(fleet_facts)``     -> hosts of the run with these GPUs (refusals offer no more)
* ``root | sgl_weights_dir(model_id, revision)``   -> weights dir (the plan's model_path)
* ``listing_result | sgl_hub_problems(endpoint, model_id, revision, dir)`` -> [] or [hub down]
* ``df_stdout | sgl_df_mounts``                    -> [mount fact of the measured path]
* ``plan | sgl_server_argv(parsers, config_file=...)``   -> SGLang argv list
* ``argv | sgl_systemd_quote``                     -> ExecStart= command line string
* ``engines | sgl_scrape_targets(routers, hostvars, role)`` -> Prometheus file_sd entries (engines: rank 0)
* ``hosts | sgl_fanout_plan(seed, complete, limit)`` -> weights fan-out plan: hub host, sources per host
* ``plan | sgl_deploy_state_fact(install_result, exec_start, unit)`` -> the deploy-state fact (sglang.fact)
* ``fact_text | sgl_deploy_state(unit_text)``      -> deploy state (fact, else the unit's ExecStart), flat
* ``hostvars[host] | sgl_engine_port``             -> the host's engine port (plan, sglang_plan_port, default)
* ``hostvars | sgl_firewall_plan(host, groups, controller, settings, ssh_connection)`` -> the host's
  gateway-only firewall: enabled, ports, sources, nft ruleset
* ``sglang_watchdog_port | default(none) | sgl_watchdog_port`` -> the group watchdog's port (set, else the default)
* ``backup | sgl_redeploy_report(run_id=..., ...)`` -> a host's redeploy report (playbooks/redeploy.yml)

The package is imported from the installed distribution, or else from ``<repo>/src``
(relative to this file: ``../../src``), so a checkout works without ``pip install``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

try:
    import sgl_deploy  # noqa: F401
except ImportError:  # not installed: use the checkout's src/
    _SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))
    if _SRC in sys.path:
        sys.path.remove(_SRC)
    sys.path.insert(0, _SRC)  # first, ahead of whatever failed to import
    sys.modules.pop("sgl_deploy", None)

from ansible.errors import AnsibleFilterError

from sgl_deploy import argv as _argv
from sgl_deploy import deploy_state as _deploy_state
from sgl_deploy import firewall as _firewall
from sgl_deploy import gpu_facts as _gpu_facts
from sgl_deploy import hub as _hub
from sgl_deploy import monitoring as _monitoring
from sgl_deploy import planner as _planner
from sgl_deploy import ports as _ports
from sgl_deploy import preflight as _preflight
from sgl_deploy import redeploy as _redeploy
from sgl_deploy import weights as _weights
from sgl_deploy.profiles import ProfileError


def sgl_gpu_facts(xml_text: str, topo_text: str | None = None) -> dict[str, Any]:
    """``nvidia-smi -q -x`` stdout (+ ``topo -m`` stdout) -> GPU facts."""
    try:
        return _gpu_facts.gpu_facts(str(xml_text), str(topo_text) if topo_text else None)
    except ValueError as exc:
        raise AnsibleFilterError(f"sgl_gpu_facts: {exc}") from exc


def sgl_preflight_problems(facts: dict[str, Any], requirements: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """GPU facts -> failed preflight checks (empty list = pass)."""
    return [dict(p) for p in _gpu_facts.check_preflight(dict(facts), dict(requirements or {}))]


def sgl_nvidia_smi_problems(result: dict[str, Any], command: str = "nvidia-smi", min_driver: str | None = None) -> list[dict[str, str]]:
    """Registered result of ``nvidia-smi -q -x`` -> [] when it answered, else the one problem."""
    problem = _gpu_facts.nvidia_smi_problem(str(command), dict(result or {}), str(min_driver) if min_driver else None)
    return [dict(problem)] if problem else []


def sgl_needs_fabric_manager(facts: dict[str, Any]) -> bool:
    """Whether the facts show an NVSwitch fabric (see gpu_facts.needs_fabric_manager)."""
    return _gpu_facts.needs_fabric_manager(dict(facts))


def sgl_plan(gpu_facts: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """GPU facts (or None with gpus_per_node/gpu_memory_gb) + options -> plan dict."""
    options = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return _planner.plan(gpu_facts=dict(gpu_facts) if gpu_facts else None, **options)
    except _planner.PlanError as exc:
        # from None: Ansible would append the cause's own (CLI-worded) text again
        raise AnsibleFilterError(f"sgl_plan: {_planner.role_message(exc.message)}") from None
    except (ProfileError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"sgl_plan: {exc}") from exc


def sgl_plan_attempt(gpu_facts: dict[str, Any] | None = None, inventory_host: str = "", **kwargs: Any) -> dict[str, Any]:
    """Like sgl_plan, but never raises: ``{"plan": dict, "error": None}`` or ``{"plan": None, "error":
    "<host>: ... Fix: ..."}`` (the role fails with the message in a task of its own, so the user sees
    one clean refusal and no Ansible internals)."""
    options = {k: v for k, v in kwargs.items() if v is not None}
    return _planner.plan_attempt(str(inventory_host), gpu_facts=dict(gpu_facts) if gpu_facts else None, **options)


def sgl_same_gpu_hosts(gpu_facts: dict[str, Any] | None, fleet_facts: list[Any]) -> int:
    """How many hosts of ``fleet_facts`` (GPU facts of the run's hosts) have these GPUs (>= 1)."""
    return _planner.same_gpu_hosts(dict(gpu_facts) if gpu_facts else None, list(fleet_facts or []))


def sgl_weights_dir(weights_root: str, model_id: str, revision: str) -> str:
    """Weights directory of ``model_id@revision`` under ``weights_root`` (the plan's ``model_path``)."""
    return _planner.weights_dir(str(weights_root), str(model_id), str(revision))


def sgl_df_mounts(df_output: str) -> list[dict[str, Any]]:
    """``df -P -B1 PATH`` stdout -> [the mount holding PATH] in Ansible's mount fact shape ([] if unreadable)."""
    return _preflight.df_mounts(str(df_output or ""))


def sgl_hub_problems(
    result: dict[str, Any], endpoint: str, model_id: str, revision: str, weights_dir: str
) -> list[dict[str, str]]:
    """``uri`` result of the hub listing -> [] when the hub answered, else the hub-down problem."""
    problem = _hub.hub_problem(dict(result or {}), str(endpoint), str(model_id), str(revision), str(weights_dir))
    return [problem] if problem else []


def sgl_server_argv(
    plan: dict[str, Any],
    parsers: dict[str, Any] | None = None,
    tool_call_parser: str | None = None,
    reasoning_parser: str | None = None,
    config_file: str | None = None,
) -> list[str]:
    """Plan + chosen parsers ({tool_call, reasoning}) -> SGLang argv list."""
    parsers = dict(parsers or {})
    tool = tool_call_parser or parsers.get("tool_call") or parsers.get("tool_call_parser")
    reasoning = reasoning_parser or parsers.get("reasoning") or parsers.get("reasoning_parser")
    try:
        return _argv.server_argv(dict(plan), tool, reasoning, config_file=config_file)
    except (KeyError, ValueError) as exc:
        raise AnsibleFilterError(f"sgl_server_argv: {exc}") from exc


def sgl_systemd_quote(argv: Any) -> str:
    """An argv list (or one string) -> ExecStart=-safe text."""
    if isinstance(argv, str):
        return _argv.systemd_quote(argv)
    return _argv.quote_argv([str(a) for a in argv])


_SCRAPE_VARS = ("ansible_host", "sglang_plan_port", "sglang_replicas", "sglang_plan_replicas",
                 "sglang_router_port", "sglang_router_prometheus_port",
                 "sglang_plan_served_model_name", "sglang_plan_model_profile", "sglang_plan_sglang_version",
                 "sglang_firewall_enabled", "sglang_firewall_metrics_port")


def sgl_scrape_targets(engines: list[str], routers: list[str], hostvars: Any, role: str) -> list[dict[str, Any]]:
    """File_sd entries for ``role`` (engine: rank-0 hosts of ``engines``; gateway: ``routers``)."""
    names = list(engines or []) + list(routers or [])
    hv = {h: {k: hostvars[h].get(k) for k in _SCRAPE_VARS} for h in names}
    labels = {
        h: {"model": hv[h]["sglang_plan_served_model_name"] or hv[h]["sglang_plan_model_profile"] or "",
            "sglang_version": hv[h]["sglang_plan_sglang_version"] or ""}
        for h in engines or []
    }
    labels = {h: {k: v for k, v in lab.items() if v} for h, lab in labels.items()}
    return _monitoring.file_sd(_monitoring.endpoints(engines or [], routers or [], hv), role, labels)


def sgl_fanout_plan(hosts: Any, seed: str, complete: Any = None, limit: int = 2) -> dict[str, Any]:
    """Play hosts -> {hub, roots, parent, sources: {host: [candidate hosts, tree order]}, rounds}."""
    try:
        return _weights.fanout_plan([str(h) for h in hosts], str(seed), [str(h) for h in complete or []], int(limit))
    except ValueError as exc:
        raise AnsibleFilterError(f"sgl_fanout_plan: {exc}") from None


def sgl_deploy_state_fact(plan: dict[str, Any], install: dict[str, Any], exec_start: str, unit: str) -> dict[str, Any]:
    """The content of the serve role's local fact (``sgl_deploy.deploy_state.build``)."""
    try:
        return _deploy_state.build(dict(plan), dict(install or {}), str(exec_start), str(unit))
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"sgl_deploy_state_fact: {exc}") from exc


def sgl_deploy_state(fact_text: Any, unit_text: Any = "") -> dict[str, Any]:
    """The deploy state of a host, flat (``deploy_state.summary``): from its fact file's text, else
    (a host deployed before the fact) from its unit text; ``source`` says which (fact, unit, none)."""
    return _deploy_state.summary(_deploy_state.read(str(fact_text or ""), str(unit_text or "")))


def sgl_engine_port(host_vars: Any) -> int:
    """A host's engine port: its plan's ``port``, else ``sglang_plan_port``, else the one default
    (``sgl_deploy.ports.ENGINE_PORT``)."""
    hv = {k: host_vars.get(k) for k in ("sglang_plan_result", "sglang_plan_port")} if host_vars else {}
    return _ports.engine_port(hv)


def sgl_firewall_plan(hostvars: Any, host: str, groups: Any, controller: Any = None,
                      settings: Any = None, ssh_connection: Any = None) -> dict[str, Any]:
    """The gateway-only firewall of ``host`` (``sgl_deploy.firewall.plan``): enabled, ports, sources, ruleset.
    ``controller``: the configured controller addresses (a string or a list; empty: the client address in
    ``ssh_connection``, the host's ``$SSH_CONNECTION``); ``settings``: the role's ``sglang_firewall_*``
    values (role defaults are not in ``hostvars``)."""
    if isinstance(controller, str):
        controller = [controller]
    controller = _firewall.controller_addresses(controller, ssh_connection)
    keys = ("ansible_host", "sglang_plan_result", "sglang_plan_port", "sglang_replicas", "sglang_plan_replicas")
    names = {str(host)}
    for members in groups.values():
        names.update(str(h) for h in members)
    hv = {}
    for name in names:
        if name in hostvars:
            source = hostvars[name]
            hv[name] = {k: source.get(k) for k in keys if k in source}
    hv.setdefault(str(host), {}).update(dict(settings or {}))
    try:
        return _firewall.plan(str(host), hv, {k: list(v) for k, v in groups.items()}, list(controller or []))
    except _firewall.FirewallError as exc:
        raise AnsibleFilterError(f"sgl_firewall_plan: {exc}") from None


def sgl_watchdog_port(value: Any = None) -> int:
    """The group watchdog's port: ``value`` when set, else the one default (``ports.WATCHDOG_PORT``)."""
    return _ports.watchdog_port(value)


def sgl_redeploy_report(backup: Any, **kwargs: Any) -> dict[str, Any]:
    """A host's redeploy report (``sgl_deploy.redeploy.host_report``); ``steps`` are added by
    ``sgl-deploy redeploy`` from the runner's events."""
    try:
        return _redeploy.host_report(dict(backup or {}), **{k: (dict(v) if isinstance(v, dict) else v)
                                                            for k, v in kwargs.items()})
    except TypeError as exc:
        raise AnsibleFilterError(f"sgl_redeploy_report: {exc}") from exc


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "sgl_gpu_facts": sgl_gpu_facts,
            "sgl_firewall_plan": sgl_firewall_plan,
            "sgl_preflight_problems": sgl_preflight_problems,
            "sgl_nvidia_smi_problems": sgl_nvidia_smi_problems,
            "sgl_needs_fabric_manager": sgl_needs_fabric_manager,
            "sgl_plan": sgl_plan,
            "sgl_plan_attempt": sgl_plan_attempt,
            "sgl_same_gpu_hosts": sgl_same_gpu_hosts,
            "sgl_weights_dir": sgl_weights_dir,
            "sgl_hub_problems": sgl_hub_problems,
            "sgl_df_mounts": sgl_df_mounts,
            "sgl_server_argv": sgl_server_argv,
            "sgl_systemd_quote": sgl_systemd_quote,
            "sgl_scrape_targets": sgl_scrape_targets,
            "sgl_fanout_plan": sgl_fanout_plan,
            "sgl_engine_port": sgl_engine_port,
            "sgl_deploy_state_fact": sgl_deploy_state_fact,
            "sgl_deploy_state": sgl_deploy_state,
            "sgl_redeploy_report": sgl_redeploy_report,
            "sgl_watchdog_port": sgl_watchdog_port,
        }
