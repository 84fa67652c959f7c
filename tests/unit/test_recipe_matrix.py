"""The per-GPU recipe matrix (profile recipe_matrix, sglang_plan_recipe): cells chosen by GPU facts,
inventory overrides win, and every cell's argv is accepted by SGLang 0.5.23's real parser."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sgl_deploy import gpu_facts as gf
from sgl_deploy.argv import server_argv
from sgl_deploy.planner import PlanError, plan
from sgl_deploy.profiles import available_profiles, load_profile

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "tests" / "fixtures" / "gpu"
SGLANG_PY = REPO / ".venv-sglang" / "bin" / "python"
COOKBOOK_B200 = ["--attention-backend", "fa4", "--page-size", "128", "--moe-runner-backend", "deep_gemm",
                 "--chunked-prefill-size", "8192", "--mm-attention-backend", "flashinfer_cudnn"]


def facts(folder: str) -> dict:
    return gf.gpu_facts((GPU / folder / "nvidia-smi-q-x.txt").read_text())


def synthetic_facts(name: str, architecture: str, count: int, mib: int) -> dict:
    gpus = [{"name": name, "architecture": architecture, "memory_total_mib": mib} for _ in range(count)]
    return {"gpu_count": count, "gpus": gpus, "gpu_name": name, "architecture": architecture,
            "homogeneous": True, "driver_version": "580.159.04"}


def argv_of(p: dict, tool="minimax-m3", reasoning="minimax-m3") -> list[str]:
    return server_argv(p, tool, reasoning)


def test_blackwell_fixture_is_labelled_derived():
    note = (GPU / "b200-180gb-x8" / "DERIVED.txt").read_text()
    assert note.startswith("DERIVED fixture, not a real capture.") and "ASSUMPTION" in note
    f = facts("b200-180gb-x8")
    assert f["gpu_count"] == 8 and f["architecture"] == "Blackwell" and "B200" in f["gpu_name"]


def test_h200_cookbook_cell():
    p = plan(gpu_facts=facts("h200-141gb-x8"))
    assert (p["recipe_cell"], p["tp_size"], p["ep_size"], p["mem_fraction_static"]) == ("h200-bf16", 8, 1, 0.75)
    assert p["layout_source"] == "cookbook cell" and p["recipe_args"] == []
    argv = argv_of(p)
    assert argv[argv.index("--tp-size") + 1] == "8" and "--ep-size" not in argv
    assert argv[argv.index("--mem-fraction-static") + 1] == "0.75"
    assert any("cookbook cell h200-bf16" in line for line in p["reasoning"])


def test_b200_cookbook_cell_flags_with_sources():
    p = plan(gpu_facts=facts("b200-180gb-x8"))
    assert p["model_variant"] == "blackwell-mxfp8" and p["recipe_cell"] == "b200-mxfp8"
    assert (p["tp_size"], p["mem_fraction_static"]) == (8, 0.65)
    argv = argv_of(p)
    joined = " ".join(argv)
    assert " ".join(COOKBOOK_B200) in joined
    assert set(p["recipe_sources"]) == set(COOKBOOK_B200[::2])
    assert all("cookbook" in src for src in p["recipe_sources"].values())


def test_b300_cookbook_cell_tp4():
    p = plan(gpu_facts=synthetic_facts("NVIDIA B300 SXM6 AC", "Blackwell", 4, 275040))
    assert (p["recipe_cell"], p["tp_size"], p["mem_fraction_static"]) == ("b300-mxfp8", 4, 0.75)
    assert "--attention-backend" in p["recipe_args"]


def test_recipe_and_none_choices():
    f = facts("h200-141gb-x8")
    r = plan(gpu_facts=f, recipe="recipe")
    assert (r["recipe_cell"], r["mem_fraction_static"]) == ("basic-8gpu", 0.80)
    assert r["recipe_args"] == ["--chunked-prefill-size", "8192"]
    n = plan(gpu_facts=f, recipe="none")
    assert n["recipe_cell"] is None and n["recipe_args"] == [] and n["mem_fraction_static"] == 0.85
    assert (n["tp_size"], n["ep_size"]) == (8, 8)  # the planned layout (recipe_layouts)
    with pytest.raises(PlanError, match="recipe must be one of"):
        plan(gpu_facts=f, recipe="vendor")


def test_no_cell_for_these_gpus_says_so():
    p = plan(gpu_facts=facts("h100-80gb-x8"), weights_gb=220, kv_gb_per_mtok=240, profile="minimax-m2.5",
             recipe="cookbook")
    assert p["recipe_cell"] is None and p["recipe_args"] == []
    assert any("no cookbook cell" in line for line in p["reasoning"])


def test_inventory_overrides_win_over_the_cell():
    f = facts("b200-180gb-x8")
    p = plan(gpu_facts=f, mem_fraction_static=0.7, ep_size=8, extra_args=["--page-size", "64"])
    assert (p["mem_fraction_static"], p["ep_size"]) == (0.7, 8)
    argv = argv_of(p)
    assert argv.count("--page-size") == 1 and argv[argv.index("--page-size") + 1] == "64"
    assert "--attention-backend" in argv  # the other cell flags stay
    t = plan(gpu_facts=f, tp_size=4, ep_size=None)
    assert (t["tp_size"], t["layout_source"]) == (4, "override")


def test_m2_recipe_cells():
    f4 = synthetic_facts("NVIDIA H200", "Hopper", 4, 143771)
    f8 = synthetic_facts("NVIDIA H200", "Hopper", 8, 143771)
    for f, cell, tp, ep in ((f4, "tp4", 4, 1), (f8, "tp8-ep8", 8, 8)):
        p = plan(gpu_facts=f, profile="minimax-m2.5", recipe="recipe")
        assert (p["recipe_cell"], p["tp_size"], p["ep_size"], p["mem_fraction_static"]) == (cell, tp, ep, 0.85)
        assert p["parsers"]["tool_call"][0] == "minimax-m2" and p["parsers"]["reasoning"][0] == "minimax-append-think"


ARCH_MIB = {"H200": ("Hopper", 143771), "B200": ("Blackwell", 183359), "B300": ("Blackwell", 275040),
            "GB300": ("Blackwell", 275040)}


def every_cell():
    for name in available_profiles():
        prof = load_profile(name)
        for recipe, cells in (prof.get("recipe_matrix") or {}).items():
            for cell in cells:
                gpu = (cell.get("gpu_names") or ["H200"])[0]
                arch, mib = ARCH_MIB[gpu]
                yield name, recipe, cell, synthetic_facts(f"NVIDIA {gpu}", arch, int(cell["gpus"]), mib)


def test_every_cell_is_planned():
    cells = list(every_cell())
    assert len(cells) >= 7
    for name, recipe, cell, f in cells:
        p = plan(gpu_facts=f, profile=name, recipe=recipe)
        assert p["recipe_cell"] == cell["cell"], (name, recipe, cell["cell"])


_PARSE = r"""
import json, sys
from sglang.srt.server_args import prepare_server_args
out = []
for argv in json.loads(sys.stdin.read()):
    try:
        sa = prepare_server_args(argv)
        out.append({"ok": True, **{k: getattr(sa, k, None) for k in (
            "tp_size", "ep_size", "mem_fraction_static", "attention_backend", "page_size", "moe_runner_backend",
            "chunked_prefill_size", "mm_attention_backend", "tool_call_parser", "reasoning_parser")}})
    except SystemExit as exc:
        out.append({"ok": False, "code": exc.code})
print("RESULT " + json.dumps(out, default=str))
"""


@pytest.mark.slow
def test_every_cell_argv_parses_with_real_sglang():
    if not SGLANG_PY.exists():
        pytest.skip(".venv-sglang missing")
    plans, argvs = [], []
    for name, recipe, cell, f in every_cell():
        p = plan(gpu_facts=f, profile=name, recipe=recipe)
        plans.append(p)
        argvs.append(server_argv(p, p["parsers"]["tool_call"][0], p["parsers"]["reasoning"][0]))
    argvs.append(["--model-path", "x", "--attention-backend", "no-such-backend"])  # control: must fail
    res = subprocess.run([str(SGLANG_PY), "-c", _PARSE], input=json.dumps(argvs), capture_output=True,
                         text=True, timeout=600)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, res.stdout[-2000:] + res.stderr[-4000:]
    results = json.loads(line[len("RESULT "):])
    assert results[-1] == {"ok": False, "code": 2}
    for p, r in zip(plans, results):
        assert r["ok"], (p["recipe_cell"], r)
        assert (r["tp_size"], r["ep_size"], r["mem_fraction_static"]) == (
            p["tp_size"], p["ep_size"], p["mem_fraction_static"])
        args = dict(zip(p["recipe_args"][::2], p["recipe_args"][1::2]))
        for flag, value in args.items():
            got = r[flag.lstrip("-").replace("-", "_")]
            assert str(got) == value, (p["recipe_cell"], flag, got)


def test_msa_warm_only_for_m3_on_blackwell():
    assert plan(gpu_facts=facts("b200-180gb-x8"))["msa_jit_warm"] is True
    assert plan(gpu_facts=facts("h200-141gb-x8"))["msa_jit_warm"] is False
    m2 = plan(gpu_facts=synthetic_facts("NVIDIA B200", "Blackwell", 8, 183359), profile="minimax-m2.5")
    assert m2["msa_jit_warm"] is False


def test_plan_cli_shows_the_cell(capsys):
    from sgl_deploy.cli import main

    xml = str(GPU / "b200-180gb-x8" / "nvidia-smi-q-x.txt")
    assert main(["plan", "--nvidia-smi-xml", xml]) == 0
    out = capsys.readouterr().out
    assert "cookbook cell b200-mxfp8: --attention-backend fa4 --page-size 128" in out
    assert main(["plan", "--nvidia-smi-xml", xml, "--recipe", "none"]) == 0
    assert "none: no cell, planned flags only" in capsys.readouterr().out
