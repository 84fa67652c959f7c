"""The Ansible filter plugin (plugins/filter/sgl_deploy.py): direct calls and one real ansible run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "filter" / "sgl_deploy.py"
FIX = REPO / "tests" / "fixtures" / "gpu"
ANSIBLE = REPO / ".venv" / "bin" / "ansible"

AnsibleFilterError = pytest.importorskip("ansible.errors").AnsibleFilterError


def load_filters() -> dict:
    spec = importlib.util.spec_from_file_location("sgl_deploy_filter_plugin", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


F = load_filters()


def xml(profile: str) -> str:
    return (FIX / profile / "nvidia-smi-q-x.txt").read_text()


def topo(profile: str) -> str:
    return (FIX / profile / "topo.txt").read_text()


def test_filter_names():
    assert set(F) == {"sgl_gpu_facts", "sgl_preflight_problems", "sgl_nvidia_smi_problems", "sgl_needs_fabric_manager",
                      "sgl_plan", "sgl_plan_attempt", "sgl_same_gpu_hosts", "sgl_weights_dir", "sgl_hub_problems", "sgl_df_mounts", "sgl_server_argv",
                      "sgl_systemd_quote", "sgl_scrape_targets", "sgl_engine_port",
                      "sgl_deploy_state_fact", "sgl_deploy_state", "sgl_fanout_plan", "sgl_firewall_plan",
                      "sgl_redeploy_report", "sgl_watchdog_port"}


def test_scrape_targets_rank0_engines_and_gateways():
    hostvars = {
        "a0": {"ansible_host": "10.0.0.1", "sglang_plan_port": 8001, "sglang_plan_served_model_name": "M3",
               "sglang_replicas": {"g": ["a0", "a1"]}},
        "a1": {"ansible_host": "10.0.0.2", "sglang_replicas": {"g": ["a0", "a1"]}},
        "b": {"ansible_host": "fd00::5"},
        "r": {"ansible_host": "10.0.0.9", "sglang_router_prometheus_port": 29100},
    }
    # no gateway: the firewall is off (auto) and the engines are scraped on their own port
    engines = F["sgl_scrape_targets"](["a0", "a1", "b"], [], hostvars, "engine")
    assert engines == [
        {"targets": ["10.0.0.1:8001"], "labels": {"instance_name": "a0", "role": "engine", "model": "M3"}},
        {"targets": ["[fd00::5]:8000"], "labels": {"instance_name": "b", "role": "engine"}},
    ]
    # a gateway: the gateway-only firewall is on (auto): the metrics relay's port (sgl_deploy.firewall)
    hostvars["b"]["sglang_firewall_metrics_port"] = 9500
    assert [e["targets"] for e in F["sgl_scrape_targets"](["a0", "a1", "b"], ["r"], hostvars, "engine")] == [
        ["10.0.0.1:9480"], ["[fd00::5]:9500"]]
    hostvars["a0"]["sglang_firewall_enabled"] = False  # switched off for one host: its engine port again
    assert [e["targets"] for e in F["sgl_scrape_targets"](["a0", "b"], ["r"], hostvars, "engine")] == [
        ["10.0.0.1:8001"], ["[fd00::5]:9500"]]
    assert F["sgl_scrape_targets"](["a0"], ["r"], hostvars, "gateway") == [
        {"targets": ["10.0.0.9:29100"], "labels": {"instance_name": "r", "role": "gateway"}}]


def test_fanout_plan_filter():
    plan = F["sgl_fanout_plan"](["a", "b", "c"], "a", [], 2)
    assert plan["hub"] == "a" and plan["sources"] == {"b": ["a", "c"], "c": ["a", "b"]}
    with pytest.raises(AnsibleFilterError, match="sgl_fanout_plan: .*limit"):
        F["sgl_fanout_plan"](["a", "b"], "a", [], 0)


def test_gpu_facts_and_preflight():
    facts = F["sgl_gpu_facts"](xml("h100-80gb-x4"), topo("h100-80gb-x4"))
    assert facts["gpu_count"] == 4 and facts["all_nvlink"] is True
    assert F["sgl_needs_fabric_manager"](facts) is True
    assert F["sgl_preflight_problems"](facts, {"require_fabric_manager": True}) == []
    old = F["sgl_gpu_facts"](xml("h100-80gb-x4-old-driver"))
    problems = F["sgl_preflight_problems"](old)
    assert problems[0]["check"] == "driver" and "535.183.01" in problems[0]["found"]
    with pytest.raises(AnsibleFilterError, match="sgl_gpu_facts"):
        F["sgl_gpu_facts"]("nvidia-smi: command not found")


def test_plan_argv_quote_chain():
    facts = F["sgl_gpu_facts"](xml("h100-80gb-x8"), topo("h100-80gb-x8"))
    p = F["sgl_plan"](facts, profile="minimax-m2.5", weights_gb=None)  # None options are ignored
    assert (p["tp_size"], p["ep_size"]) == (8, 8)
    argv = F["sgl_server_argv"](p, {"tool_call": "minimax-m2", "reasoning": "minimax-append-think"},
                                config_file="/etc/sglang/minimax-m2.5.yaml")
    assert argv[argv.index("--tool-call-parser") + 1] == "minimax-m2"
    assert argv[argv.index("--config") + 1] == "/etc/sglang/minimax-m2.5.yaml"
    line = F["sgl_systemd_quote"](argv)
    assert "--tp-size 8 --ep-size 8" in line
    assert F["sgl_systemd_quote"]("100%") == "100%%"


def test_plan_without_facts_and_errors():
    p = F["sgl_plan"](None, gpus_per_node=4, gpu_memory_gb=96, weights_gb=220, kv_gb_per_mtok=240)
    assert 380_000 <= p["max_total_tokens"] <= 470_000
    with pytest.raises(AnsibleFilterError, match="short by"):
        F["sgl_plan"](None, gpus_per_node=2, gpu_memory_gb=80, weights_gb=220, kv_gb_per_mtok=240)
    with pytest.raises(AnsibleFilterError, match="available"):
        F["sgl_plan"](None, profile="nope", gpus_per_node=4, gpu_memory_gb=80)
    with pytest.raises(AnsibleFilterError, match="unexpected keyword"):
        F["sgl_plan"](None, gpus=4)


def test_server_argv_refuses_secret_extra_args():
    p = F["sgl_plan"](None, gpus_per_node=4, gpu_memory_gb=96, weights_gb=220, kv_gb_per_mtok=240,
                      extra_args=["--api-key", "x"])
    with pytest.raises(AnsibleFilterError, match="secret"):
        F["sgl_server_argv"](p, tool_call_parser="minimax-m3", reasoning_parser="minimax-m3")


def test_plugin_imports_from_checkout_when_package_missing(tmp_path):
    # a fake `sgl_deploy` earlier on sys.path that fails to import simulates "not installed"
    fake = tmp_path / "sgl_deploy"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('simulated: sgl_deploy not installed')\n")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('p', {str(PLUGIN)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "import sgl_deploy; print(sgl_deploy.__file__)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(REPO / "src" / "sgl_deploy" / "__init__.py")


def _ansible_debug(expr: str) -> dict:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    res = subprocess.run(
        [str(ANSIBLE), "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.debug",
         "-a", f"msg={{{{ {expr} }}}}"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=180,
    )
    start = res.stdout.find("{")
    assert start >= 0, res.stdout + res.stderr
    data = json.loads(res.stdout[start:])
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_real_ansible_loads_filters_via_ansible_cfg():
    if not ANSIBLE.exists():
        pytest.skip("ansible not installed in .venv")
    expr = (
        "lookup('file', 'tests/fixtures/gpu/h100-80gb-x4/nvidia-smi-q-x.txt') | sgl_gpu_facts"
        " | sgl_plan(profile='minimax-m2.5')"
        " | sgl_server_argv({'tool_call': 'minimax-m2', 'reasoning': 'minimax-append-think'})"
        " | sgl_systemd_quote"
    )
    host = _ansible_debug(expr)
    assert not host.get("failed"), host
    line = host["msg"]
    assert line.startswith("--model-path /srv/models/MiniMaxAI--MiniMax-M2.5/master ")
    assert "--tp-size 4 " in line and "--reasoning-parser minimax-append-think" in line
    assert "--ep-size" not in line
