"""Multi-node replica groups without a lab: the planner's must-show cases, the group preflight
checks (membership, clocks, rendezvous, socket interfaces) and their filters, and the worker
readiness check's view of the rendezvous connection.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sgl_deploy import preflight
from sgl_deploy.planner import PlanError, plan

REPO = Path(__file__).resolve().parents[2]
SGL_DEPLOY = Path(sys.executable).parent / "sgl-deploy"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOST_FILTERS = _load(REPO / "plugins/filter/sgl_host.py", "sgl_host_filters").FilterModule().filters()
READY = _load(REPO / "plugins/module_utils/sgl_ready.py", "sgl_ready")  # also shipped with the watchdog

# --------------------------------------------------------------------------- planner (issue 9 must-show)

M3_2X8 = ["--gpus", "8", "--gpu-memory-gb", "80", "--weights-gb", "860", "--profile", "minimax-m3", "--json"]


def test_cli_two_nodes_of_8x80_plan_m3_bf16():
    res = subprocess.run([str(SGL_DEPLOY), "plan", "--nodes", "2", *M3_2X8], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["nnodes"] == 2 and d["gpus_per_node"] == 8 and d["total_gpus"] == 16
    assert d["tp_size"] * d["pp_size"] == 16 and (d["tp_size"] * d["pp_size"]) % d["nnodes"] == 0
    assert d["dp_size"] == 1 and d["tp_size"] % d["ep_size"] == 0
    assert d["max_total_tokens"] > 0 and d["context_length"] <= d["max_total_tokens"]


def test_cli_one_8x80_host_refused_suggesting_two_nodes():
    res = subprocess.run([str(SGL_DEPLOY), "plan", *M3_2X8], capture_output=True, text=True)
    assert res.returncode == 2
    assert "does not fit on 8 x 80.0 GB GPUs" in res.stderr and "short by" in res.stderr
    assert "Would work: --nodes 2 (2 x 8 GPUs of 80 GB" in res.stderr
    alt = json.loads(res.stdout)["alternatives"][0]
    assert alt["nodes"] == 2 and alt["tp_size"] * alt["pp_size"] == 16 and alt["max_total_tokens"] > 0


def test_group_size_sets_nnodes_even_for_a_small_model():
    """A replica group of 2 hosts always plans 2 nodes (the lab's small model fits on one)."""
    r = plan(profile="minimax-m3", nodes=2, gpus_per_node=4, gpu_memory_gb=80, weights_gb=1.0,
             node_rank=1, dist_init_addr="10.77.0.51:20000")
    assert (r["nnodes"], r["node_rank"], r["tp_size"] * r["pp_size"]) == (2, 1, 8)
    with pytest.raises(PlanError, match="data parallelism across nodes"):
        plan(profile="minimax-m3", nodes=2, gpus_per_node=4, gpu_memory_gb=80, weights_gb=1.0, dp_size=2)
    with pytest.raises(PlanError, match="ep_size 3 does not divide tp_size 8"):
        plan(profile="minimax-m3", nodes=2, gpus_per_node=4, gpu_memory_gb=80, weights_gb=1.0, ep_size=3)


# --------------------------------------------------------------------------- preflight checks


def test_clock_problem_allows_the_controller_window():
    # host read its clock somewhere between the controller's readings 100 and 104
    assert preflight.clock_problem(103.0, 100.0, 2, 104.0) is None
    assert preflight.clock_problem(98.5, 100.0, 2, 104.0) is None  # 1.5 s behind at worst
    assert preflight.clock_problem(105.9, 100.0, 2, 104.0) is None
    ahead = preflight.clock_problem(110.0, 100.0, 2, 104.0)
    assert ahead["check"] == "clock" and "at least 6.0 s ahead of" in ahead["found"]
    behind = preflight.clock_problem(90.0, 100.0, 2)
    assert "at least 10.0 s behind" in behind["found"]
    assert "chrony or systemd-timesyncd" in behind["fix"] and "sglang_plan_max_clock_skew_s" in behind["needed"]


def test_clock_filter_names_the_host():
    problems = HOST_FILTERS["sgl_clock_problems"]("1000.5", 990.0, 2, 991.0)
    text = HOST_FILTERS["sgl_format_problems"]("mn2", problems)
    assert text.startswith("mn2: preflight failed (1 problem)")
    assert "[clock] found clock at least 9.5 s ahead" in text and "Fix: enable NTP" in text
    assert HOST_FILTERS["sgl_clock_problems"]("990.4", 990.0, 2, 991.0) == []


def test_group_membership():
    assert preflight.group_membership_problems("m3", ["a", "b"], ["a", "b", "c"]) == []
    [p] = preflight.group_membership_problems("m3", ["a", "b"], ["a"])
    assert p["check"] == "replica_group" and "b of replica group m3 (a, b) not in this run" in p["found"]
    assert "--limit" in p["fix"]


def test_rendezvous_filter():
    # registered wait_for results under failed_when: false (which resets "failed" to False)
    ok = {"changed": False, "elapsed": 0, "port": 20000, "state": "started", "path": None, "search_regex": None,
          "match_groups": [], "match_groupdict": {}, "failed": False, "failed_when_result": False}
    assert HOST_FILTERS["sgl_rendezvous_problems"](ok, "mn2", "mn1", "10.77.0.51", 20000, 20) == []
    assert HOST_FILTERS["sgl_rendezvous_problems"]({"skipped": True}, "mn1", "mn1", "10.77.0.51", 20000, 20) == []
    failed = {"changed": False, "elapsed": 20, "msg": "Timeout when waiting for 10.77.0.51:20000",
              "failed": False, "failed_when_result": False}
    [p] = HOST_FILTERS["sgl_rendezvous_problems"](failed, "mn2", "mn1", "10.77.0.51", "20000", "20")
    assert p["check"] == "rendezvous"
    assert "mn2 cannot reach rank 0 (mn1) at 10.77.0.51:20000 (TCP, 20 s): Timeout" in p["found"]
    assert "allow TCP 20000" in p["fix"] and "sglang_plan_dist_init_port" in p["fix"]


def test_ifname_matching_follows_nccl_and_gloo():
    ifaces = ["lo", "host0", "ens1f0np0", "ens1f1np1", "docker0"]
    assert preflight.ifname_matches("ens", ifaces) == ["ens1f0np0", "ens1f1np1"]
    assert preflight.ifname_matches("=ens1f0np0", ifaces) == ["ens1f0np0"]
    assert preflight.ifname_matches("^docker,lo", ifaces) == ["host0", "ens1f0np0", "ens1f1np1"]
    assert preflight.ifname_problems({"NCCL_SOCKET_IFNAME": "ens", "GLOO_SOCKET_IFNAME": "host0"}, ifaces) == []
    [nccl] = preflight.ifname_problems({"NCCL_SOCKET_IFNAME": "eth"}, ifaces)
    assert nccl["check"] == "network_interface" and "NCCL_SOCKET_IFNAME=eth matches none" in nccl["found"]
    [gloo] = preflight.ifname_problems({"GLOO_SOCKET_IFNAME": "ens"}, ifaces)  # Gloo wants exact names
    assert "GLOO_SOCKET_IFNAME=ens: no interface ens" in gloo["found"]
    assert preflight.ifname_problems({"NCCL_SOCKET_IFNAME": "lo"}, ifaces), "loopback cannot link two hosts"


def test_ifname_filter_reads_only_socket_ifname_entries():
    env = {"NCCL_SOCKET_IFNAME": "host0", "GLOO_SOCKET_IFNAME": "host0", "NCCL_DEBUG": "INFO", "HOME": "/x"}
    assert HOST_FILTERS["sgl_ifname_problems"](env, ["lo", "host0"]) == []
    assert len(HOST_FILTERS["sgl_ifname_problems"](env, ["lo", "eth0"])) == 2


# --------------------------------------------------------------------------- worker readiness


def test_worker_readiness_sees_the_rendezvous_connection():
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    try:
        assert not READY.connected_to("127.0.0.1", port)
        client = socket.create_connection(("127.0.0.1", port))
        peer, _ = srv.accept()
        assert READY.connected_to("127.0.0.1", port)
        assert READY.connected_to("localhost", port)
        assert not READY.connected_to("127.0.0.1", port + 1 if port < 65535 else port - 1)
        client.close()
        peer.close()
    finally:
        srv.close()
    assert READY.split_addr("[fd00::1]:20000") == ("fd00::1", 20000)
    assert READY._proc_ip("0100007F", socket.AF_INET) == "127.0.0.1"
    assert READY._proc_ip("0000000000000000FFFF00000100007F", socket.AF_INET6) == "127.0.0.1"
    assert not READY.connected_to(*READY.split_addr("no-such-host.invalid:1"))
