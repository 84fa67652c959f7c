"""The planner: recipe figures, layouts, multi-node rules, refusals, CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from sgl_deploy import gpu_facts as gf
from sgl_deploy import planner
from sgl_deploy.cli import main as cli_main
from sgl_deploy.planner import PlanError, plan
from sgl_deploy.profiles import ProfileError, available_profiles, load_profile

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "gpu"
RECIPE = {"weights_gb": 220, "kv_gb_per_mtok": 240}
CONTRACT_KEYS = {
    "model_profile", "model_id", "model_revision", "model_path", "served_model_name", "sglang_version",
    "gpus_per_node", "gpu_memory_gb", "nnodes", "node_rank", "dist_init_addr", "tp_size", "ep_size",
    "dp_size", "pp_size", "mem_fraction_static", "context_length", "max_total_tokens", "weights_gb",
    "weights_source", "parsers", "readiness_timeout_s", "host", "port", "extra_args", "reasoning", "warnings",
}


def facts(profile: str) -> dict:
    d = FIX / profile
    return gf.gpu_facts((d / "nvidia-smi-q-x.txt").read_text(), (d / "topo.txt").read_text())


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli_main(["plan", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------------------- profiles


def test_profiles_load_and_carry_sources():
    assert {"minimax-m3", "minimax-m2.5", "minimax-m2.7"} <= set(available_profiles())
    m3 = load_profile("minimax-m3")
    assert m3.get("variants.hopper-bf16.model_id") == "MiniMaxAI/MiniMax-M3"
    assert m3.get("variants.blackwell-mxfp8.model_id") == "MiniMaxAI/MiniMax-M3-MXFP8"
    assert m3.get("model_config.num_experts") == 128
    assert m3.get("model_config.num_layers") == 60
    assert m3.get("max_context") == 1048576
    assert m3.get("min_sglang_version") == "0.5.16"
    assert m3.get("vision") is True
    assert m3.get("parsers.tool_call") == ["minimax-m3", "minimax-m2"]
    assert m3.get("parsers.reasoning") == ["minimax-m3", "minimax-append-think"]
    assert "UNCONFIRMED" in m3.source("variants.hopper-bf16.weights_gb")
    assert "variants.hopper-bf16.weights_gb" in m3.unconfirmed
    m25 = load_profile("minimax-m2.5")
    assert m25.get("variants.fp8.weights_gb") == 220
    assert m25.get("kv_gb_per_mtok") == 240
    assert m25.get("max_context") == 524288
    assert m25.get("max_output") == 131072
    assert m25.get("min_sglang_version") == "0.5.4.post1"
    assert m25.get("parsers.tool_call") == ["minimax-m2"]
    assert m25.get("parsers.reasoning") == ["minimax-append-think", "minimax"]
    assert m25.get("sampling") == {"temperature": 1.0, "top_p": 0.95, "top_k": 20}
    assert m25.get("vision") is False
    assert m25.get("mem_fraction_static") == 0.85
    assert "minimax_m2.md" in m25.source("kv_gb_per_mtok")


def test_every_number_in_profiles_has_a_source():
    for name in available_profiles():
        raw = yaml.safe_load((REPO / "src/sgl_deploy/profiles" / f"{name}.yml").read_text())

        def walk(node, covered=False, path=""):
            if isinstance(node, dict):
                has = bool(node.get("source"))
                for k, v in node.items():
                    walk(v, has, f"{path}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, covered, f"{path}[{i}]")
            elif isinstance(node, (int, float)) and not isinstance(node, bool):
                assert covered, f"{name}{path} has no source"

        walk(raw)


def test_profile_errors(tmp_path):
    with pytest.raises(ProfileError, match="available: .*minimax-m2.5.*minimax-m3"):
        load_profile("minimax-m9")
    bad = tmp_path / "bad.yml"
    raw = yaml.safe_load((REPO / "src/sgl_deploy/profiles/minimax-m2.5.yml").read_text())
    raw["kv_gb_per_mtok"] = 240  # bare number, no source
    del raw["parsers"]["reasoning"]
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError) as exc:
        load_profile(str(bad))
    assert "missing key `parsers.reasoning`" in str(exc.value)
    assert "kv_gb_per_mtok: bare number 240" in str(exc.value)


def test_profile_by_path(tmp_path):
    raw = yaml.safe_load((REPO / "src/sgl_deploy/profiles/minimax-m2.5.yml").read_text())
    raw["name"] = "custom"
    raw["variants"]["fp8"]["weights_gb"]["value"] = 100
    p = tmp_path / "custom.yml"
    p.write_text(yaml.safe_dump(raw))
    result = plan(profile=str(p), gpus_per_node=4, gpu_memory_gb=80)
    assert result["model_profile"] == "custom"
    assert result["weights_gb"] == 100


# --------------------------------------------------------------------------- recipe figures


def test_recipe_4x96():
    r = plan(gpus_per_node=4, gpu_memory_gb=96, **RECIPE)
    assert (r["tp_size"], r["ep_size"], r["dp_size"], r["pp_size"]) == (4, 1, 1, 1)
    assert 380_000 <= r["max_total_tokens"] <= 470_000
    assert r["context_length"] == r["max_total_tokens"]  # capped by KV capacity
    assert any("capped" in w for w in r["warnings"])
    assert r["layout_source"] == "recipe"
    assert r["weights_source"] == "override"


def test_recipe_8x144():
    r = plan(gpus_per_node=8, gpu_memory_gb=144, **RECIPE)
    assert (r["tp_size"], r["ep_size"]) == (8, 8)
    assert 2_900_000 <= r["max_total_tokens"] <= 3_300_000


def test_m25_profile_reproduces_recipe_without_overrides():
    r = plan(profile="minimax-m2.5", gpus_per_node=4, gpu_memory_gb=96)
    assert r["weights_source"] == "profile"
    assert 380_000 <= r["max_total_tokens"] <= 470_000
    assert r["parsers"] == {"tool_call": ["minimax-m2"], "reasoning": ["minimax-append-think", "minimax"]}
    assert r["model_id"] == "MiniMaxAI/MiniMax-M2.5"


def test_plan_fact_has_contract_keys_and_is_json():
    r = plan(gpus_per_node=4, gpu_memory_gb=96, **RECIPE)
    assert CONTRACT_KEYS <= set(r)
    assert json.loads(json.dumps(r)) == r
    assert r["model_profile"] == "minimax-m3"  # default profile
    assert r["model_path"] == "/srv/models/MiniMaxAI--MiniMax-M3/master"
    assert r["served_model_name"] == "MiniMax-M3"
    assert r["sglang_version"] == "0.5.23"
    assert (r["host"], r["port"], r["nnodes"], r["node_rank"], r["dist_init_addr"]) == ("0.0.0.0", 8000, 1, 0, None)
    assert r["reasoning"] and all(isinstance(x, str) for x in r["reasoning"])
    assert r["architectures"][0] == "MiniMaxM3SparseForConditionalGeneration"  # read by sglang_install
    assert r["vision"] is True


def test_memory_math_is_spelled_out():
    r = plan(gpus_per_node=4, gpu_memory_gb=96, mem_fraction_static=0.85, **RECIPE)
    assert r["usable_gb"] == pytest.approx(4 * 96 * 0.85)
    # 326.4 - 220 - 4 x 1 GB reserve = 102.4 GB -> 102.4 / 240 * 1e6 tokens
    assert r["kv_budget_gb"] == pytest.approx(102.4)
    assert r["max_total_tokens"] == int(102.4 / 240 * 1e6)


def test_more_memory_fraction_more_tokens():
    lo = plan(gpus_per_node=4, gpu_memory_gb=96, mem_fraction_static=0.8, **RECIPE)
    hi = plan(gpus_per_node=4, gpu_memory_gb=96, mem_fraction_static=0.9, **RECIPE)
    assert hi["max_total_tokens"] > lo["max_total_tokens"]


# --------------------------------------------------------------------------- from GPU facts


def test_plan_from_real_x4_facts():
    r = plan(profile="minimax-m2.5", gpu_facts=facts("h100-80gb-x4"))
    assert r["gpus_per_node"] == 4
    assert r["gpu_memory_gb"] == 81559 * 1048576 / 1e9
    assert r["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert r["gpu_architecture"] == "Hopper"
    assert (r["tp_size"], r["ep_size"]) == (4, 1)
    # 4 x 85.52 x 0.85 = 290.77 - 220 - 4 = 66.77 GB -> ~278K tokens
    assert 270_000 < r["max_total_tokens"] < 285_000


def test_plan_from_derived_x8_facts():
    r = plan(profile="minimax-m2.5", gpu_facts=facts("h100-80gb-x8"))
    assert (r["tp_size"], r["ep_size"]) == (8, 8)
    assert r["context_length"] == 524288


def test_m3_on_real_hopper_hosts_refused_with_shortfall():
    with pytest.raises(PlanError) as exc:
        plan(profile="minimax-m3", gpu_facts=facts("h100-80gb-x4"))
    assert "short by" in exc.value.message
    assert exc.value.alternatives


def test_explicit_gpu_count_below_facts_warns_and_above_refuses():
    r = plan(profile="minimax-m2.5", gpu_facts=facts("h100-80gb-x8"), gpus_per_node=4)
    assert r["tp_size"] == 4
    assert any("4 of the 8 GPUs" in w for w in r["warnings"])
    with pytest.raises(PlanError, match="only 4 GPUs"):
        plan(profile="minimax-m2.5", gpu_facts=facts("h100-80gb-x4"), gpus_per_node=8)


def test_variant_follows_gpu_architecture():
    f = facts("h100-80gb-x8")
    for g in f["gpus"]:
        g["architecture"] = "Blackwell"
    f["architecture"] = "Blackwell"
    f["gpus"] = [dict(g, memory_total_mib=183359) for g in f["gpus"]]  # B200-class memory
    r = plan(profile="minimax-m3", gpu_facts=f)
    assert r["model_variant"] == "blackwell-mxfp8"
    assert r["model_id"] == "MiniMaxAI/MiniMax-M3-MXFP8"
    assert r["weights_gb"] == 444
    f["architecture"] = "Ampere"
    with pytest.raises(PlanError, match="no variant for Ampere GPUs"):
        plan(profile="minimax-m2.5", gpu_facts=f)


# --------------------------------------------------------------------------- refusals


def test_two_gpus_refused_with_shortfall_and_alternatives():
    with pytest.raises(PlanError) as exc:
        plan(gpus_per_node=2, gpu_memory_gb=80, **RECIPE)
    msg = exc.value.message
    assert "short by 93.9 GB" in msg
    assert "136.0 GB" in msg  # what 2 x 80 x 0.85 gives
    hints = [a["hint"] for a in exc.value.alternatives]
    assert any(h.startswith("at least 4 GPUs of 80 GB") for h in hints)
    assert any(h.startswith("--nodes 2") for h in hints)
    for alt in exc.value.alternatives:  # every suggestion is itself a valid plan
        ok = plan(gpus_per_node=alt["gpus_per_node"], gpu_memory_gb=alt["gpu_memory_gb"], nodes=alt["nodes"], **RECIPE)
        assert ok["max_total_tokens"] >= 32768


def test_m3_bf16_on_one_8x80_host_suggests_two_nodes():
    with pytest.raises(PlanError) as exc:
        plan(profile="minimax-m3", gpus_per_node=8, gpu_memory_gb=80, weights_gb=860)
    assert "short by" in exc.value.message
    assert "--nodes 2" in exc.value.message
    assert exc.value.alternatives[0]["nodes"] == 2


def test_invalid_ep_refused():
    with pytest.raises(PlanError) as exc:
        plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=80, tp_size=8, ep_size=3)
    assert "ep_size 3 does not divide tp_size 8" in exc.value.message
    assert exc.value.alternatives  # valid layouts listed
    with pytest.raises(PlanError, match="ep_size 3 does not divide tp_size 8"):
        plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=80, ep_size=3)


def test_ep_must_divide_experts():
    shape = planner.ModelShape(num_layers=60, num_experts=128, num_attention_heads=64, num_key_value_heads=8)
    probs = planner.layout_problems(planner.Layout(tp=48, ep=48), shape, 1, 64)
    assert any("does not divide the 128 experts" in p for p in probs)


def test_tp_must_divide_heads():
    with pytest.raises(PlanError, match="tp_size 5 does not divide the 48 attention heads"):
        plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=80, tp_size=5)


def test_valid_overrides_accepted():
    r = plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=80, tp_size=8, ep_size=1)
    assert (r["tp_size"], r["ep_size"], r["layout_source"]) == (8, 1, "override")
    r = plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=80, tp_size=8)
    assert r["ep_size"] == 8  # recipe ep for tp 8 on 8 GPUs
    r = plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=80, dp_size=2)
    assert (r["tp_size"], r["dp_size"]) == (4, 2)


def test_too_many_gpus_refused():
    with pytest.raises(PlanError, match="only 4 are available"):
        plan(profile="minimax-m2.5", gpus_per_node=4, gpu_memory_gb=80, tp_size=8)


def test_bad_mem_fraction_and_context_refused():
    with pytest.raises(PlanError, match="between 0 and 1"):
        plan(gpus_per_node=4, gpu_memory_gb=96, mem_fraction_static=1.2, **RECIPE)
    with pytest.raises(PlanError, match="exceeds the model's maximum"):
        plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=144, context_length=600_000)
    with pytest.raises(PlanError, match="exceeds the KV cache capacity"):
        plan(gpus_per_node=4, gpu_memory_gb=96, context_length=500_000, **RECIPE)
    r = plan(gpus_per_node=4, gpu_memory_gb=96, context_length=131072, **RECIPE)
    assert r["context_length"] == 131072


def test_old_sglang_refused():
    with pytest.raises(PlanError, match="needs SGLang >= 0.5.16"):
        plan(gpus_per_node=4, gpu_memory_gb=96, sglang_version="0.5.15", **RECIPE)
    with pytest.raises(PlanError, match="needs SGLang >= 0.5.4.post1"):
        plan(profile="minimax-m2.5", gpus_per_node=4, gpu_memory_gb=96, sglang_version="0.5.4")
    assert plan(profile="minimax-m2.5", gpus_per_node=4, gpu_memory_gb=96, sglang_version="0.5.4.post1")


def test_version_key_ordering():
    vk = planner.version_key
    assert vk("0.5.4") < vk("0.5.4.post1") < vk("0.5.5") < vk("0.5.16") < vk("0.5.23")
    assert vk("0.5.16rc1") < vk("0.5.16")


def test_served_name_with_colon_refused():
    with pytest.raises(PlanError, match="contains ':'"):
        plan(gpus_per_node=4, gpu_memory_gb=96, served_model_name="minimax:m2", **RECIPE)


# --------------------------------------------------------------------------- other GPU counts


def test_non_recipe_count_planned_when_valid():
    r = plan(profile="minimax-m2.5", gpus_per_node=16, gpu_memory_gb=80)
    assert (r["tp_size"], r["ep_size"], r["layout_source"]) == (16, 1, "derived")
    assert r["kv_replication"] == 2  # 16 ranks over 8 KV heads
    assert any("not a recipe GPU count" in x for x in r["reasoning"])


def test_six_gpus_uses_recipe_subset():
    r = plan(profile="minimax-m2.5", gpus_per_node=6, gpu_memory_gb=80)
    assert (r["tp_size"], r["pp_size"]) == (4, 1)
    assert any("uses 4 of 6 GPUs" in w for w in r["warnings"])


# --------------------------------------------------------------------------- multi-node


def test_two_nodes_m3_bf16():
    r = plan(profile="minimax-m3", nodes=2, gpus_per_node=8, gpu_memory_gb=80, weights_gb=860,
             dist_init_addr="10.0.0.1:20000", node_rank=1)
    assert r["nnodes"] == 2
    assert r["tp_size"] * r["pp_size"] == 16
    assert r["max_total_tokens"] > 0
    assert r["node_rank"] == 1 and r["dist_init_addr"] == "10.0.0.1:20000"
    assert (r["tp_size"] * r["pp_size"]) % r["nnodes"] == 0
    assert r["readiness_timeout_s"] > 1800  # 860 GB: beyond the 30-minute floor


def test_multi_node_without_dist_init_addr_warns():
    r = plan(profile="minimax-m3", nodes=2, gpus_per_node=8, gpu_memory_gb=80)
    assert any("dist_init_addr" in w for w in r["warnings"])


def test_dp_across_nodes_refused():
    with pytest.raises(PlanError) as exc:
        plan(profile="minimax-m2.5", nodes=2, gpus_per_node=8, gpu_memory_gb=80, dp_size=2)
    assert "data parallelism across nodes" in exc.value.message


def test_tp_pp_not_divisible_by_nodes_refused():
    with pytest.raises(PlanError, match="not divisible by nnodes 2"):
        plan(profile="minimax-m2.5", nodes=2, gpus_per_node=4, gpu_memory_gb=80, tp_size=3, pp_size=1)


def test_pipeline_fallback_when_tp_breaks_head_divisibility():
    # 3 nodes x 8 GPUs: tp 24 breaks 64 heads, so tp 8 x pp 3 (pp across nodes)
    r = plan(profile="minimax-m3", nodes=3, gpus_per_node=8, gpu_memory_gb=80)
    assert (r["tp_size"], r["pp_size"], r["nnodes"]) == (8, 3, 3)
    assert any("pipeline parallelism" in w for w in r["warnings"])


def test_node_rank_out_of_range_refused():
    with pytest.raises(PlanError, match="node_rank 2"):
        plan(profile="minimax-m3", nodes=2, gpus_per_node=8, gpu_memory_gb=80, node_rank=2)


def test_hf_config_overrides_shape_and_context():
    cfg = {"num_attention_heads": 48, "num_key_value_heads": 8, "num_hidden_layers": 62,
           "num_local_experts": 256, "max_position_embeddings": 196608}
    r = plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=144, hf_config=cfg)
    assert r["context_length"] == 196608
    assert any("max_position_embeddings 196608" in x for x in r["reasoning"])
    with pytest.raises(PlanError, match="does not divide the 40 attention heads"):
        plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=144, tp_size=16,
             hf_config={"num_attention_heads": 40})


def test_readiness_deadline_grows_with_weights():
    small = plan(gpus_per_node=4, gpu_memory_gb=96, **RECIPE)["readiness_timeout_s"]
    big = plan(profile="minimax-m3", nodes=2, gpus_per_node=8, gpu_memory_gb=80, weights_gb=860)["readiness_timeout_s"]
    assert small == 1800 and big == 3180 and big % 60 == 0


# --------------------------------------------------------------------------- CLI (must-show commands)


def test_cli_must_show_4x96(capsys):
    rc, out, _ = run_cli(["--gpus", "4", "--gpu-memory-gb", "96", "--weights-gb", "220", "--kv-gb-per-mtok", "240", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert (d["tp_size"], d["ep_size"]) == (4, 1)
    assert 380_000 <= d["max_total_tokens"] <= 470_000


def test_cli_must_show_8x144(capsys):
    rc, out, _ = run_cli(["--gpus", "8", "--gpu-memory-gb", "144", "--weights-gb", "220", "--kv-gb-per-mtok", "240", "--json"], capsys)
    d = json.loads(out)
    assert rc == 0 and (d["tp_size"], d["ep_size"]) == (8, 8)
    assert 2_900_000 <= d["max_total_tokens"] <= 3_300_000


def test_cli_must_show_2x80_exit_2(capsys):
    rc, out, err = run_cli(["--gpus", "2", "--gpu-memory-gb", "80", "--weights-gb", "220", "--kv-gb-per-mtok", "240"], capsys)
    assert rc == 2
    assert "short by 93.9 GB" in err
    assert out == ""
    rc, out, err = run_cli(["--gpus", "2", "--gpu-memory-gb", "80", "--weights-gb", "220", "--kv-gb-per-mtok", "240", "--json"], capsys)
    assert rc == 2
    d = json.loads(out)
    assert "short by" in d["error"] and d["alternatives"]


def test_cli_must_show_two_nodes(capsys):
    args = ["--nodes", "2", "--gpus", "8", "--gpu-memory-gb", "80", "--weights-gb", "860", "--profile", "minimax-m3", "--json"]
    rc, out, _ = run_cli(args, capsys)
    d = json.loads(out)
    assert rc == 0 and d["nnodes"] == 2 and d["tp_size"] * d["pp_size"] == 16 and d["max_total_tokens"] > 0
    args[1] = "1"
    rc, out, err = run_cli(args, capsys)
    assert rc == 2
    assert "--nodes 2" in err
    assert json.loads(out)["alternatives"][0]["nodes"] == 2


def test_cli_from_capture_and_facts_json(tmp_path, capsys):
    rc, out, _ = run_cli(["--nvidia-smi-xml", str(FIX / "h100-80gb-x4" / "nvidia-smi-q-x.txt"),
                          "--profile", "minimax-m2.5"], capsys)
    assert rc == 0
    assert "tp 4  ep 1" in out and "NVIDIA H100 80GB HBM3" in out and "reasoning:" in out
    fj = tmp_path / "facts.json"
    fj.write_text(json.dumps(facts("h100-80gb-x8")))
    rc, out, _ = run_cli(["--gpu-facts", str(fj), "--profile", "minimax-m2.5", "--json"], capsys)
    assert rc == 0 and json.loads(out)["tp_size"] == 8


def test_cli_needs_gpu_source(capsys):
    rc, _, err = run_cli(["--gpus", "4"], capsys)
    assert rc == 2 and "--gpu-memory-gb" in err
    rc, _, err = run_cli(["--gpus", "4", "--gpu-memory-gb", "80", "--profile", "nope"], capsys)
    assert rc == 2 and "available:" in err


def test_console_script_exit_code():
    exe = REPO / ".venv" / "bin" / "sgl-deploy"
    if not exe.exists():
        pytest.skip("console script not installed")
    res = subprocess.run([str(exe), "plan", "--gpus", "2", "--gpu-memory-gb", "80", "--weights-gb", "220",
                          "--kv-gb-per-mtok", "240"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "short by" in res.stderr


# ---------------------------------------------------------------- issue 28: the plan says what it chose


def _facts(name):
    from sgl_deploy import gpu_facts as _gf

    return _gf.gpu_facts((Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / name / "nvidia-smi-q-x.txt").read_text())


def test_tp_only_says_the_planner_chose_ep_and_from_which_recipe():
    res = planner.plan_attempt("gpu1", gpu_facts=_facts("h200-141gb-x8"), tp_size=8)
    p = res["plan"]
    o = p["value_origins"]
    assert o["tp_size"] == {"value": 8, "by": "inventory", "name": "sglang_plan_tp_size"}
    assert o["ep_size"]["value"] == 8 and o["ep_size"]["by"] == "planner"
    assert "recipe layout for 8 GPUs (minimax-m3 recipe_layouts[1])" in o["ep_size"]["from"]
    assert o["mem_fraction_static"] == {"value": 0.75, "by": "planner",
                                        "from": "cookbook cell h200-bf16 (recipe_matrix.cookbook[0])"}
    assert o["dp_size"]["by"] == o["pp_size"]["by"] == o["context_length"]["by"] == "planner"
    # said loudly: the cell's own ep is 1, the planner picked 8 because tp is set
    assert any("ep_size 8 chosen by the planner" in w and "cookbook cell h200-bf16's ep 1" in w
               and "set sglang_plan_ep_size to choose" in w for w in p["warnings"]), p["warnings"]
    table = planner.format_plan(p)
    assert "tp_size 8: set in the inventory (sglang_plan_tp_size)" in table
    assert "ep_size 8: chosen by the planner: the profile's recipe layout for 8 GPUs" in table
    assert "mem_fraction_static 0.75: chosen by the planner: cookbook cell h200-bf16" in table


def test_nothing_set_everything_from_the_cell():
    p = planner.plan(gpu_facts=_facts("h200-141gb-x8"))
    assert {k: o["by"] for k, o in p["value_origins"].items()} == dict.fromkeys(
        ("tp_size", "ep_size", "dp_size", "pp_size", "mem_fraction_static", "context_length"), "planner")
    assert p["value_origins"]["ep_size"]["from"].startswith("cookbook cell h200-bf16")
    assert not any("chosen by the planner" in w for w in p["warnings"])
    cli = planner.plan(gpu_facts=_facts("h200-141gb-x8"), ep_size=1)["value_origins"]["ep_size"]
    assert cli == {"value": 1, "by": "command line", "name": "--ep-size"}


def test_h100_refusal_quotes_the_active_recipes_fraction():
    facts = _facts("h100-80gb-x8")
    for recipe, frac in (("cookbook", "0.75"), ("recipe", "0.8"), ("none", "0.85")):
        err = planner.plan_attempt("gpu1", gpu_facts=facts, recipe=recipe, same_gpu_hosts=1)["error"]
        assert f"at sglang_plan_mem_fraction_static {frac} they give" in err, (recipe, err)


def test_h100_refusal_offers_only_what_this_inventory_can_take_and_a_smaller_model():
    facts = _facts("h100-80gb-x8")
    err = planner.plan_attempt("gpu1", gpu_facts=facts, same_gpu_hosts=1)["error"]
    assert "sglang_replicas group" not in err and "hosts like this one" not in err, err
    assert "GPUs with at least" not in err and "on one node" not in err, err
    assert ("A smaller model fits: sglang_plan_model_profile=minimax-m2.5 sglang_plan_variant=fp8 "
            "sglang_plan_model_id=MiniMaxAI/MiniMax-M2.5 (MiniMax-M2.5, 220 GB weights: tp 8 ep 8") in err, err
    assert "sglang_plan_model_profile=minimax-m2.7" in err
    assert err.endswith("Fix: take one of the alternatives named above, or use hosts with more GPU memory.")
    # two such hosts in the run: a 2-host replica group is offered, not more
    two = planner.plan_attempt("gpu1", gpu_facts=facts, same_gpu_hosts=2)["error"]
    assert "Would work: 2 hosts like this one in one sglang_replicas group (2 x 8 GPUs" in two, two
    assert "3 hosts like this one" not in two
    # the CLI (no inventory) still names the hardware that would work
    with pytest.raises(planner.PlanError) as cli:
        planner.plan(gpu_facts=facts)
    assert "--nodes 2 (" in cli.value.message and "GPUs with at least" in cli.value.message
    assert any(a.get("profile") == "minimax-m2.5" for a in cli.value.alternatives)


def test_refusal_without_any_alternative_says_what_would_help():
    # 860 GB on 2 x H100, one such host: nothing in the inventory takes it, no smaller shipped model fits
    err = planner.plan_attempt("gpu1", gpu_facts=_facts("h100-80gb-x2"), weights_gb=860, same_gpu_hosts=1)["error"]
    assert "Would work" not in err
    assert "Fix: use hosts with more GPU memory, or add hosts with these GPUs to the inventory" in err


def test_same_gpu_hosts_counts_hosts_with_the_same_gpus():
    h100, h200 = _facts("h100-80gb-x8"), _facts("h200-141gb-x8")
    assert planner.same_gpu_hosts(h100, [h100, h100, h200]) == 2
    assert planner.same_gpu_hosts(h200, [h100, h100, h200, None]) == 1
    assert planner.same_gpu_hosts(h100, []) == 1  # this host, at least
    assert planner.same_gpu_hosts(_facts("h100-80gb-x4"), [h100]) == 1  # 4 GPUs are not 8


def test_smaller_model_offers_only_builds_for_these_gpus():
    with pytest.raises(planner.PlanError) as err:
        planner.plan(gpus_per_node=8, gpu_memory_gb=80, weights_gb=860, variant="hopper-bf16")
    offered = [(a.get("profile"), a.get("variant")) for a in err.value.alternatives if a.get("profile")]
    assert ("minimax-m3", "blackwell-mxfp8") not in offered  # Blackwell-only build, Hopper asked for
    assert ("minimax-m2.5", "fp8") in offered
    assert "A smaller model fits: --profile minimax-m2.5 --variant fp8 --model-id MiniMaxAI/MiniMax-M2.5" in err.value.message
