"""The capture this project took itself on a real 2 x H200 machine (scripts/hardware/validate.sh,
docs/hardware-validation.md): facts, preflight and plan as recorded there."""

from pathlib import Path

import pytest

from sgl_deploy import gpu_facts as gf
from sgl_deploy import planner

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "h200-141gb-x2"


def facts():
    return gf.gpu_facts((FIX / "nvidia-smi-q-x.txt").read_text(), (FIX / "topo.txt").read_text())


def test_h200_facts_are_exact():
    f = facts()
    assert (f["gpu_count"], f["gpu_name"], f["gpu_memory_mib"]) == (2, "NVIDIA H200", 143771)
    assert f["gpu_memory_gb"] == 143771 * 1024 * 1024 / 1e9  # MiB converted exactly, decimal GB
    assert (f["driver_version"], f["cuda_version"], f["architecture"]) == ("580.159.04", "13.0", "Hopper")
    assert f["topology"]["links"] == {"GPU0": {"GPU1": "NV18"}, "GPU1": {"GPU0": "NV18"}}
    assert all(g["fabric"] == {"state": "Completed", "status": "Success", "clique_id": "0",
                               "cluster_uuid": "00000000-0000-0000-0000-000000000000"} for g in f["gpus"])
    assert f["needs_fabric_manager"] is True


def test_fabric_reported_by_the_gpus_passes_without_a_local_fabric_manager_unit():
    # In the VM the fabric manager runs on the hypervisor: no unit, no process, but the GPUs
    # report the fabric Completed / Success. That is what the check must trust.
    req = {"require_fabric_manager": True, "fabric_manager_active": False}
    assert gf.check_preflight(facts(), req) == []
    broken = facts()
    broken["gpus"][1]["fabric"]["state"] = "In Progress"
    problems = gf.check_preflight(broken, req)
    assert [p["check"] if isinstance(p, dict) else p.check for p in problems] == ["fabric_manager"]


def test_h200_plans_recorded_in_the_docs():
    f = facts()
    # recorded before issue 28, at the profile's 0.85: sglang_plan_recipe none reproduces them (the default
    # cookbook now takes its fraction for M3 bf16, 0.75, on GPUs it has no cell for)
    recipe = planner.plan(gpu_facts=f, weights_gb=220, kv_gb_per_mtok=240, recipe="none")
    assert (recipe["tp_size"], recipe["ep_size"], recipe["nnodes"]) == (2, 1, 1)
    assert recipe["max_total_tokens"] == 142846
    with pytest.raises(planner.PlanError, match="at mem_fraction_static 0.75 they give 226.1 GB"):
        planner.plan(gpu_facts=f, weights_gb=220, kv_gb_per_mtok=240)
    try:
        planner.plan(gpu_facts=f, recipe="none")  # real M3 bf16 (860 GB) on 2 x 141 GB
    except planner.PlanError as exc:
        assert "short by 613.9 GB" in str(exc) and "8 GPUs" in str(exc)
    else:
        raise AssertionError("860 GB must not fit on 2 x H200")
