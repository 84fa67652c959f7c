"""Ports the ranks of a replica group need beyond the rendezvous port (preflight.group_port_checks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sgl_deploy import preflight

GROUP = ["gpu01", "gpu02", "gpu03"]
ADDR = {"gpu01": "10.0.0.11", "gpu02": "10.0.0.12", "gpu03": "10.0.0.13"}


def test_attention_dp_ports_follow_sglang_port_args():
    # SGLang 0.5.23 PortArgs.init_new: port_base = dist_init_port + 1, six ports from there
    assert preflight.sglang_derived_ports(20000, ["--enable-dp-attention"]) == list(range(20001, 20007))
    assert preflight.sglang_derived_ports(65530, ["--enable-dp-attention=true"]) == list(range(65523, 65529))
    assert preflight.sglang_derived_ports(20000, ["--chunked-prefill-size", "8192"]) == []


def test_rank0_listens_for_the_others_and_reads_their_watchdogs():
    checks = preflight.group_port_checks(GROUP, "gpu01", ADDR, 20000, ["--enable-dp-attention"], 20090)
    assert checks["listen"] == [{"port": p, "expected": 2} for p in range(20001, 20007)] + [{"port": 20090, "expected": 2}]
    assert [(c["peer"], c["port"]) for c in checks["connect"]] == [("gpu02", 20090), ("gpu03", 20090)]


def test_other_ranks_connect_to_rank0_and_listen_for_its_watchdog():
    checks = preflight.group_port_checks(GROUP, "gpu02", ADDR, 20000, [], 20090)
    assert checks["listen"] == [{"port": 20090, "expected": 1}]
    assert checks["connect"] == [{"peer": "gpu01", "address": "10.0.0.11", "port": 20090,
                                  "why": "the group watchdog's /state (the ranks follow rank 0)"}]


def test_a_pinned_nccl_range_is_checked_between_every_pair():
    checks = preflight.group_port_checks(GROUP, "gpu03", ADDR, 20000, [], None, "50000-50100")
    assert checks["listen"] == [{"port": 50000, "expected": 2}, {"port": 50100, "expected": 2}]
    assert sorted((c["peer"], c["port"]) for c in checks["connect"]) == [
        ("gpu01", 50000), ("gpu01", 50100), ("gpu02", 50000), ("gpu02", 50100)]
    assert preflight.group_port_checks(GROUP, "gpu03", ADDR, 20000) == {"listen": [], "connect": []}


@pytest.mark.parametrize("bad", ["50000-", "x-1", "2-1", "0-5", "70000"])
def test_bad_port_ranges_are_refused(bad):
    with pytest.raises(ValueError):
        preflight.parse_port_range(bad)


def test_port_problem_names_host_peer_port_and_fix():
    p = preflight.port_problem("gpu02", "gpu01", "10.0.0.11", 20090, "the group watchdog's /state", "Timeout", 5)
    text = preflight.format_problems("gpu02", [p])
    assert "[ports] found gpu02 cannot reach gpu01 at 10.0.0.11:20090 (TCP, 5 s): Timeout" in text
    assert "Fix: allow TCP 20090 from gpu02 to 10.0.0.11" in text


def test_port_problems_filter_reads_wait_for_results():
    spec = importlib.util.spec_from_file_location(
        "sgl_host_filter_ports", Path(__file__).resolve().parents[2] / "plugins/filter/sgl_host.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    f = mod.FilterModule().filters()["sgl_port_problems"]
    ok = {"item": {"peer": "gpu01", "address": "10.0.0.11", "port": 20090, "why": "w"}, "state": "started",
          "failed": False}
    bad = {"item": {"peer": "gpu01", "address": "10.0.0.11", "port": 20001, "why": "w"},
           "msg": "Timeout when waiting for 10.0.0.11:20001", "failed": False}
    problems = f({"results": [ok, bad, {"skipped": True}]}, "gpu02", 5)
    assert len(problems) == 1 and "10.0.0.11:20001" in problems[0]["found"]
