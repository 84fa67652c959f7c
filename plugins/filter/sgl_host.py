"""Ansible filters: host preflight checks, hub listing sizes, plan tables (thin wrappers over sgl_deploy)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from sgl_deploy import hub, planner, preflight, tls, validate
except ImportError:  # running from a checkout without `pip install -e .` (or an older install)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    for _name in [m for m in sys.modules if m == "sgl_deploy" or m.startswith("sgl_deploy.")]:
        sys.modules.pop(_name)
    from sgl_deploy import hub, planner, preflight, tls, validate


class FilterModule:
    """Host preflight, hub listing and plan-report filters."""

    def filters(self):
        return {
            "sgl_host_problems": preflight.host_problems,
            "sgl_disk_problems": _disk_problems,
            "sgl_clock_problems": _clock_problems,
            "sgl_format_problems": preflight.format_problems,
            "sgl_hub_listing_gb": hub.listing_total_gb,
            "sgl_plan_table": planner.format_plan,
            "sgl_profile_model_id": _profile_model_id,
            "sgl_group_problems": preflight.group_problems,
            "sgl_group_membership_problems": preflight.group_membership_problems,
            "sgl_rendezvous_problems": _rendezvous_problems,
            "sgl_ifname_problems": _ifname_problems,
            "sgl_router_extra_args_problems": _router_extra_args_problems,
            "sgl_cert_status": _cert_status,
            "sgl_tls_problems": _tls_problems,
            "sgl_tls_line": _tls_line,
            "sgl_group_port_checks": _group_port_checks,
            "sgl_port_problems": _port_problems,
        }


def _disk_problems(mounts, path, needed_gb, margin_gb, present_text=""):
    """The disk rule at ``path``; ``present_text``: the plan's probe of the weights dir (its
    MANIFEST.json and file sizes), so weights already there are not asked for twice."""
    free, mount = preflight.free_bytes_at(mounts, path)
    problem = preflight.disk_problem(free, float(needed_gb), float(margin_gb), f"{path} (mount {mount})",
                                     preflight.manifest_present_gb(present_text))
    return [problem] if problem else []


def _clock_problems(host_epoch, controller_before, max_skew_s, controller_after=None):
    """Host clock vs. the controller's readings taken before and after it (see preflight.clock_problem)."""
    problem = preflight.clock_problem(
        float(host_epoch), float(controller_before), float(max_skew_s),
        None if controller_after is None else float(controller_after),
    )
    return [problem] if problem else []


def _rendezvous_problems(result, host, rank0, address, port, timeout_s):
    """[] when the registered ansible.builtin.wait_for result shows rank 0's port answered, else one
    rendezvous problem. The task runs with ``failed_when: false`` (which resets ``failed``), so
    success is wait_for's own sign: a ``state`` in the result (a failure has only ``msg``/``elapsed``)."""
    if result.get("skipped") or ("state" in result and not result.get("failed")):
        return []
    error = str(result.get("msg") or "no answer").strip()
    return [preflight.rendezvous_problem(str(host), str(rank0), str(address), int(port), error, float(timeout_s))]


def _group_port_checks(group, host, hostvars, dist_init_port, extra_args=None, watchdog_port=None,
                       nccl_port_range=None):
    """preflight.group_port_checks with each rank's address from hostvars (ansible_host, else its name)."""
    addresses = {h: str(hostvars[h].get("ansible_host") or h) for h in group}
    return preflight.group_port_checks(list(group), str(host), addresses, int(dist_init_port), list(extra_args or []),
                                       int(watchdog_port) if watchdog_port else None, nccl_port_range)


def _port_problems(results, host, timeout_s):
    """Problems of a looped ansible.builtin.wait_for (failed_when false) over group_port_checks' connect list."""
    problems = []
    for result in (results or {}).get("results", []):
        if result.get("skipped") or ("state" in result and not result.get("failed")):
            continue
        item = result.get("item") or {}
        error = str(result.get("msg") or "no answer").strip()
        problems.append(preflight.port_problem(str(host), str(item.get("peer")), str(item.get("address")),
                                               int(item.get("port") or 0), str(item.get("why")), error,
                                               float(timeout_s)))
    return problems


def _ifname_problems(environment, interfaces):
    """Problems of the *_SOCKET_IFNAME entries of an environment mapping on a host with these interfaces."""
    settings = {k: v for k, v in (environment or {}).items() if str(k).upper().endswith("_SOCKET_IFNAME")}
    return preflight.ifname_problems(settings, interfaces)


def _router_extra_args_problems(extra_args):
    """Why sglang_router_extra_args cannot be used (the fleet validation's rule, sgl_deploy.validate)."""
    return [f"{p['problem']}. Fix: {p['fix']}"
            for p in validate.router_extra_args_problems("", "sglang_router_extra_args", extra_args)]


def _cert_status(pem, warn_days=30, label="the certificate"):
    """Expiry of a PEM certificate (sgl_deploy.tls.cert_status): state ok, warn, expired, ..."""
    return tls.cert_status(pem, int(warn_days), label=label)


def _tls_problems(cert_pem, key_pem="", ca_pem="", names=(), warn_days=30, label="the certificate"):
    """Every check of the gateway's certificate, key and CA (sgl_deploy.tls.pair_problems, the fleet
    validation's check): a list of {check, level (error or warning), msg, fix}."""
    names = [names] if isinstance(names, str) else [str(n) for n in names or []]
    return tls.pair_problems(str(cert_pem), str(key_pem) if key_pem else None, str(ca_pem) if ca_pem else None,
                             names, int(warn_days), label=label)


def _tls_line(item, host):
    """One TLS problem as one line: ``<host>: <what>. Fix: <fix>``."""
    return f"{host}: {item['msg']}. Fix: {item['fix']}"


def _profile_model_id(profile, variant=None, gpu_facts=None):
    """Hub id of the profile variant the planner would pick for these GPUs (before planning); "" when
    there is none (unknown profile or variant, no variant for these GPUs): the plan task then refuses
    with one clean message instead of a templating error in an earlier task."""
    try:
        return planner.profile_model_id(profile, variant, gpu_facts)
    except ValueError:  # PlanError and ProfileError are ValueErrors
        return ""
