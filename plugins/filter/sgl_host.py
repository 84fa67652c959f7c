"""Ansible filters: host preflight checks, hub listing sizes, plan tables (thin wrappers over sgl_deploy)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from sgl_deploy import hub, planner, preflight
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from sgl_deploy import hub, planner, preflight


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
        }


def _disk_problems(mounts, path, needed_gb, margin_gb):
    free, mount = preflight.free_bytes_at(mounts, path)
    problem = preflight.disk_problem(free, float(needed_gb), float(margin_gb), f"{path} (mount {mount})")
    return [problem] if problem else []


def _clock_problems(host_epoch, controller_epoch, max_skew_s):
    problem = preflight.clock_problem(float(host_epoch), float(controller_epoch), float(max_skew_s))
    return [problem] if problem else []


def _profile_model_id(profile, variant=None, gpu_facts=None):
    """Hub id of the profile variant the planner would pick for these GPUs (before planning)."""
    prof = planner.load_profile(profile)
    arch = (gpu_facts or {}).get("architecture") or next(
        (g.get("architecture") for g in (gpu_facts or {}).get("gpus", [])), None)
    return planner._pick_variant(prof, variant, arch, [])["model_id"]  # noqa: SLF001 - same package
