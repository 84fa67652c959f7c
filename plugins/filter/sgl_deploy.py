"""Ansible filters for the SGLang/MiniMax toolkit: thin wrappers over ``sgl_deploy``.

Loaded through ``filter_plugins = plugins/filter`` (ansible.cfg), so the filters are
called by their bare names:

* ``xml | sgl_gpu_facts(topo_text)``               -> GPU facts dict
* ``facts | sgl_preflight_problems(requirements)`` -> list of {check, found, needed, fix}
* ``facts | sgl_needs_fabric_manager``             -> bool
* ``facts | sgl_plan(profile=..., weights_gb=..., ...)`` -> plan dict (sglang_plan_result)
* ``plan | sgl_server_argv(parsers, config_file=...)``   -> SGLang argv list
* ``argv | sgl_systemd_quote``                     -> ExecStart= command line string

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
from sgl_deploy import gpu_facts as _gpu_facts
from sgl_deploy import planner as _planner
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


def sgl_needs_fabric_manager(facts: dict[str, Any]) -> bool:
    """Whether the facts show an NVSwitch fabric (see gpu_facts.needs_fabric_manager)."""
    return _gpu_facts.needs_fabric_manager(dict(facts))


def sgl_plan(gpu_facts: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """GPU facts (or None with gpus_per_node/gpu_memory_gb) + options -> plan dict."""
    options = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return _planner.plan(gpu_facts=dict(gpu_facts) if gpu_facts else None, **options)
    except _planner.PlanError as exc:
        raise AnsibleFilterError(f"sgl_plan: {exc.message}") from exc
    except (ProfileError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"sgl_plan: {exc}") from exc


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


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "sgl_gpu_facts": sgl_gpu_facts,
            "sgl_preflight_problems": sgl_preflight_problems,
            "sgl_needs_fabric_manager": sgl_needs_fabric_manager,
            "sgl_plan": sgl_plan,
            "sgl_server_argv": sgl_server_argv,
            "sgl_systemd_quote": sgl_systemd_quote,
        }
