"""The planner's GPU-free rules (sgl_deploy.plan_rules) refuse inventory values in the validation
play with the plan's own words and fix: one rule, called by the planner and by
sgl_deploy.validate.fleet_problems (no GPU facts, no host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgl_deploy import gpu_facts, plan_rules, planner, validate

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
SERVER_VARS = {"sglang_plan_model_profile": "minimax-m3", "sglang_plan_sglang_version": "0.5.23",
               "sglang_plan_replicas": {}}


def facts(name: str = "h100-80gb-x8") -> dict:
    return gpu_facts.gpu_facts((FIX / name / "nvidia-smi-q-x.txt").read_text())


def fleet(vars_: dict, hosts=("gpu1",), replicas=None) -> list[dict]:
    hv = {h: {**SERVER_VARS, **({"sglang_plan_replicas": replicas} if replicas else {}), **vars_} for h in hosts}
    return validate.fleet_problems(hv, {"all": list(hosts), "sglang_servers": list(hosts)}, list(hosts))


def plan_refusal(**kwargs) -> tuple[str, str]:
    """(reason, fix) of the sglang_plan role's refusal for these planner options."""
    res = planner.plan_attempt("gpu1", **{"gpu_facts": facts(), "weights_gb": 100, **kwargs})
    assert res["plan"] is None, res
    reason, fix = res["error"].split(". Fix: ", 1)
    return reason, fix.rstrip(".")


@pytest.mark.parametrize("variable,value,needle", [
    ("sglang_plan_tp_size", 3, "sglang_plan_tp_size 3 does not divide the 64 attention heads"),
    ("sglang_plan_tp_size", 6, "sglang_plan_tp_size 6 does not divide the 64 attention heads"),
    ("sglang_plan_ep_size", 3, "sglang_plan_ep_size 3 does not divide the 128 experts"),
    ("sglang_plan_pp_size", 61, "sglang_plan_pp_size 61 exceeds the 60 layers"),
    ("sglang_plan_context_length", 2_000_000, "sglang_plan_context_length 2000000 exceeds the model's maximum 1048576"),
    ("sglang_plan_sglang_version", "0.5.10", "MiniMax-M3 needs SGLang >= 0.5.16"),
    ("sglang_plan_served_model_name", "minimax:m3", "contains ':'"),
])
def test_validation_refuses_what_the_plan_refuses_with_the_same_words_and_fix(variable, value, needle):
    found = [p for p in fleet({variable: value}) if p["variable"] == variable]
    assert len(found) == 1, found
    p = found[0]
    assert needle in p["problem"]
    option = {v: k for k, v in plan_rules.ROLE_VARIABLES.items()}[variable]
    reason, fix = plan_refusal(**{option: value})
    assert p["problem"] in reason  # the same words as the plan (which adds the valid layouts of the GPUs)
    assert p["fix"] == fix  # the same fix


def test_tp_3_is_refused_on_every_server_before_any_host():
    problems = fleet({"sglang_plan_tp_size": 3}, hosts=("gpu1", "gpu2"))
    assert sorted(p["host"] for p in problems) == ["gpu1", "gpu2"]  # one line per variable and host
    assert {p["variable"] for p in problems} == {"sglang_plan_tp_size"}
    assert "one the model allows (1, 2, 4, 8, 16, 32, 64)" in problems[0]["fix"]
    text = validate.format_problems(problems)
    assert ("gpu1: sglang_plan_tp_size = 3: sglang_plan_tp_size 3 does not divide the 64 attention heads; "
            "sglang_plan_tp_size 3 neither divides nor is a multiple of the 8 KV heads. Fix: ") in text


def test_ep_against_tp_when_both_are_set():
    p = fleet({"sglang_plan_tp_size": 8, "sglang_plan_ep_size": 16})
    assert [x["problem"] for x in p] == [
        "sglang_plan_ep_size 16 does not divide sglang_plan_tp_size 8 (SGLang needs tp = ep x moe_tp; its argument "
        "checks pass this and the launch fails later)"]
    assert fleet({"sglang_plan_ep_size": 16}) == []  # tp comes from the GPUs: the plan decides


def test_replica_group_rules_use_the_group_size():
    replicas = {"m3": ["gpu1", "gpu2", "gpu3"]}
    p = fleet({"sglang_plan_tp_size": 8}, hosts=("gpu1", "gpu2", "gpu3"), replicas=replicas)
    assert p and all("is not divisible by nnodes 3" in x["problem"] for x in p), p
    p = fleet({"sglang_plan_dp_size": 2}, hosts=("gpu1", "gpu2"), replicas={"m3": ["gpu1", "gpu2"]})
    assert len(p) == 2 and "refuses data parallelism across nodes" in p[0]["problem"]
    assert "--attn-dp-size" in p[0]["fix"]
    assert fleet({"sglang_plan_dp_size": 2}) == []  # one host: dp is fine


@pytest.mark.parametrize("vars_", [
    {}, {"sglang_plan_tp_size": 8, "sglang_plan_ep_size": 8}, {"sglang_plan_tp_size": 16}, {"sglang_plan_pp_size": 2},
    {"sglang_plan_tp_size": None}, {"sglang_plan_context_length": 1048576}, {"sglang_plan_served_model_name": "m3"},
    {"sglang_plan_tp_size": "abc"},  # the argument spec reports a wrong type
    {"sglang_plan_tp_size": 0},  # the floors report it
    {"sglang_plan_model_profile": "no-such-profile", "sglang_plan_tp_size": 3},  # profile_problems reports it
])
def test_good_or_elsewhere_reported_values_pass(vars_):
    assert plan_rules.inventory_refusals("gpu1", {**SERVER_VARS, **vars_}) == []


def test_profile_of_the_host_decides_the_shape():
    # M2.5: 48 attention heads, 256 experts (the profile's numbers): tp 3 divides 48 heads, not the 8 KV heads
    shape = plan_rules.profile_shape(planner.load_profile("minimax-m2.5"))
    problems = fleet({"sglang_plan_model_profile": "minimax-m2.5", "sglang_plan_tp_size": 3})
    assert [p["problem"] for p in problems] == ["; ".join(r.message.replace("tp_size", "sglang_plan_tp_size")
                                                          for r in plan_rules.layout_refusals(shape, tp=3))]
    assert "48 attention heads" not in problems[0]["problem"] and "8 KV heads" in problems[0]["problem"]


def test_routers_and_monitoring_hosts_are_not_planned():
    hv = {"r1": {**SERVER_VARS, "sglang_plan_tp_size": 3}}
    assert validate.fleet_problems(hv, {"all": ["r1"], "sglang_routers": ["r1"]}, ["r1"]) == []


def test_planner_uses_the_same_rule_functions():
    shape = planner.ModelShape(num_layers=60, num_experts=128, num_attention_heads=64, num_key_value_heads=8)
    lay = planner.Layout(tp=3, ep=1)
    assert planner.layout_problems(lay, shape, 1, 8) == [r.message for r in plan_rules.layout_refusals(shape, tp=3, ep=1,
                                                                                                          dp=1, pp=1)]
