"""Fleet lifecycle in the lab: two engine hosts (rd1, rd2) behind the smg gateway with TLS (rdrouter).

* a rolling redeploy under a steady stream of chat requests through the router: zero client errors;
* a redeploy whose new version fails its probes is rolled back automatically and stops the rollout;
* two concurrent `sgl-deploy redeploy` runs: one is refused (exit 75) or waits, nothing is corrupted.

Own hosts and inventory (tests/lab/inventories/redeploy, 10.77.0.31/.32/.39), never the main lab.
SGL_LAB=1 runs it (skipped otherwise); SGL_LAB_KEEP=1 keeps the hosts afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from conftest import BIN, REPO, labctl, playbook, ssh
from gateway_load import Client as _Client

from sgl_deploy import redeploy as rd

pytestmark = [pytest.mark.lab, pytest.mark.slow]

INV = REPO / "tests/lab/inventories/redeploy/hosts.yml"
HOSTS = {"rd1": "10.77.0.31", "rd2": "10.77.0.32"}
ROUTER = "10.77.0.39"
ROUTER_URL = f"https://{ROUTER}:30000"  # TLS with the lab CA (inventory/lab/group_vars/sglang_routers.yml)
LAB_CA = "/var/lib/sgl-lab/tls/ca.crt"
KEY = "lab-secret-key"  # inventory/lab/group_vars/sglang_servers.yml (lab secret, plain on purpose)
MODEL = "MiniMax-M3"
REPORTS = REPO / "reports" / "redeploy"
RUNS = REPO / "artifacts" / "runs"


def exec_start(addr: str) -> str:
    """The unit's command line (argv[] of systemctl show, without the runtime fields)."""
    out = ssh(addr, "systemctl show sglang.service -p ExecStart --value")
    return re.search(r"argv\[\]=(.*?) ;", out).group(1)


def main_pid(addr: str) -> str:
    return ssh(addr, "systemctl show sglang.service -p MainPID --value").strip()


def router_workers() -> dict[str, bool]:
    out = ssh(ROUTER, "python3 /opt/sglang-router/libexec/sgl_router_ctl.py --config /etc/sglang-router/ctl.json list")
    return {w["url"]: w["healthy"] for w in json.loads(out)["workers"]}


def sgl_deploy_redeploy(run_id: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "sgl-deploy"), "redeploy", "-i", str(INV), "--run-id", run_id, "-q", *args]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def report(run_id: str, host: str) -> dict:
    return json.loads((REPORTS / run_id / f"{host}.json").read_text())


def steps(rep: dict) -> list[tuple[str, str]]:
    return [(s["step"], s["status"]) for s in rep["steps"]]


# Steady chat traffic through the gateway over HTTPS (tests/lab/gateway_load.py, shared with test_gateway.py).
Client = partial(_Client, ROUTER_URL, KEY, MODEL, LAB_CA)


def epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


@pytest.fixture(scope="module")
def fleet():
    """rd1, rd2 and rdrouter up and converged with site.yml (router included)."""
    labctl("up", "-i", str(INV))
    run = playbook("site.yml", inventory=INV)
    assert run.rc == 0, run.out[-6000:]
    yield HOSTS
    if os.environ.get("SGL_LAB_KEEP") != "1":
        labctl("down", "-i", str(INV))


def test_router_routes_with_the_workers_key(fleet):
    import httpx

    assert router_workers() == {f"http://{a}:8000": True for a in HOSTS.values()}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    assert httpx.post(ROUTER_URL + "/v1/chat/completions", json=body, timeout=60, verify=LAB_CA).status_code == 401
    ok = httpx.post(ROUTER_URL + "/v1/chat/completions", json=body, timeout=60, verify=LAB_CA,
                    headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200, ok.text
    # smg lists the served model name (sglang-router 0.3.2 answered "unknown")
    assert httpx.get(ROUTER_URL + "/v1/models", timeout=10, verify=LAB_CA).json()["data"][0]["id"] == MODEL
    # the key is a credential: not in the unit, the process list or the journal
    assert KEY not in ssh(ROUTER, "cat /etc/systemd/system/sglang-router.service; systemctl show sglang-router -p ExecStart")
    assert KEY not in ssh(ROUTER, "ps -eo args")
    assert KEY not in ssh(ROUTER, "journalctl -u sglang-router --no-pager", check=False)
    assert ssh(ROUTER, "ps -eo user,args | grep [s]mg::router").split()[0].startswith("sglang-")
    # the probes through the gateway, verified against the lab CA (the auth probe wants 401 on /v1/models,
    # which the gateway does not give, so it is checked above instead)
    env = {**os.environ, "SGL_API_KEY": KEY}
    probe = subprocess.run([str(BIN / "sgl-deploy"), "probe", "--base-url", ROUTER_URL, "--model", MODEL,
                            "--ca-file", LAB_CA, "--skip", "auth", "--quiet"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_rolling_redeploy_under_load_has_zero_client_errors(fleet):
    before = {h: (exec_start(a), main_pid(a)) for h, a in HOSTS.items()}
    run_id = "lab-roll-" + time.strftime("%H%M%S")
    with Client() as client:
        time.sleep(3)
        proc = sgl_deploy_redeploy(run_id, "-e", "sglang_plan_mem_fraction_static=0.8")
        time.sleep(3)
    print(client.summary(), *client.errors[:10], sep="\n")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert client.errors == [], client.errors[:10]
    assert len(client.ok) >= 20
    summary = json.loads((RUNS / run_id / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["redeployed"] == ["rd1", "rd2"]
    order = []
    for host, addr in HOSTS.items():
        rep = report(run_id, host)
        names = [s for s, status in steps(rep) if status == "ok"]
        assert rep["status"] == "succeeded"
        for step in ("drained", "switched", "probed", "restored"):
            assert step in names, (host, steps(rep))
        assert names.index("drained") < names.index("switched") < names.index("probed") < names.index("restored")
        assert rep["changed"]["argv"] is True and rep["old"]["argv_sha1"] != rep["new"]["argv_sha1"]
        assert "--mem-fraction-static 0.8" in exec_start(addr)
        assert main_pid(addr) != before[host][1], f"{host} was not restarted"
        by = {s["step"]: s for s in rep["steps"]}
        drained_at, restored_at = epoch(by["drained"]["finished"]), epoch(by["restored"]["finished"])
        order.append((drained_at, restored_at))
        # traffic kept flowing (through the other host) while this one was out of the router
        assert any(drained_at <= t <= restored_at for t in client.ok), f"no request served while {host} was out"
    assert order[0][1] <= order[1][0] + 1, "hosts were not redeployed one at a time"
    assert router_workers() == {f"http://{a}:8000": True for a in HOSTS.values()}


def test_failed_probes_roll_back_and_stop_the_rollout(fleet):
    before = {h: exec_start(a) for h, a in HOSTS.items()}
    run_id = "lab-rollback-" + time.strftime("%H%M%S")
    with Client() as client:
        proc = sgl_deploy_redeploy(run_id, "-e", "sglang_plan_mem_fraction_static=0.8",
                                   "-e", "sglang_install_tool_call_parser=qwen")
    print(client.summary(), *client.errors[:10], sep="\n")
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "rd1: rolled_back at step probe" in proc.stderr
    summary = json.loads((RUNS / run_id / "summary.json").read_text())
    assert summary["rolled_back"] == ["rd1"] and summary["redeployed"] == []
    rep = report(run_id, "rd1")
    assert rep["status"] == "rolled_back"
    assert rep["failure"]["step"] == "probe" and "tools" in rep["failure"]["msg"]
    assert ("probe", "failed") in steps(rep) and ("rolled_back", "ok") in steps(rep)
    assert steps(rep)[-1] == ("restored", "ok")
    assert "--tool-call-parser qwen" in rep["new"]["exec_start"]
    old_probe = json.loads(Path(rep["probe_reports"]["old"]).read_text())
    new_probe = json.loads(Path(rep["probe_reports"]["new"]).read_text())
    assert old_probe["passed"] and not new_probe["passed"]
    # the host serves the old version again; the rollout stopped before rd2
    assert exec_start(HOSTS["rd1"]) == before["rd1"] and "--tool-call-parser minimax-m3" in before["rd1"]
    # the deploy-state fact was put back with the unit: it describes the old version again
    fact = json.loads(ssh(HOSTS["rd1"], "cat /etc/ansible/facts.d/sglang.fact"))
    unit_line = ssh(HOSTS["rd1"], "grep '^ExecStart=' /etc/systemd/system/sglang.service").strip()
    assert "ExecStart=" + fact["exec_start"] == unit_line and "--tool-call-parser minimax-m3" in unit_line
    assert ssh(HOSTS["rd1"], "systemctl is-active sglang").strip() == "active"
    assert not (REPORTS / run_id / "rd2.json").exists()
    assert exec_start(HOSTS["rd2"]) == before["rd2"]
    assert router_workers() == {f"http://{a}:8000": True for a in HOSTS.values()}
    assert client.errors == [], client.errors[:10]


def test_concurrent_runs_one_refused_one_waits_nothing_corrupted(fleet):
    stamp = time.strftime("%H%M%S")
    run_a, run_b, run_c = f"lab-lock-a-{stamp}", f"lab-lock-b-{stamp}", f"lab-lock-c-{stamp}"
    lock = rd.lock_path(INV)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    a = subprocess.Popen([str(BIN / "sgl-deploy"), "redeploy", "-i", str(INV), "--run-id", run_a, "-q",
                          "--limit", "rd2", "-e", "sglang_plan_mem_fraction_static=0.8"],
                         cwd=REPO, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and run_a not in (lock.read_text() if lock.exists() else ""):
        time.sleep(0.2)
    b = sgl_deploy_redeploy(run_b, "--no-wait", timeout=60)
    t0 = time.time()
    c = sgl_deploy_redeploy(run_c, "--wait-timeout", "5", timeout=60)
    waited = time.time() - t0
    a_err = a.communicate(timeout=900)[1]
    print(b.stderr, c.stderr, sep="\n")
    assert b.returncode == 75 and f"locked by run {run_a} (pid {a.pid}" in b.stderr
    assert c.returncode == 75 and waited >= 5 and "after waiting" in c.stderr
    assert a.returncode == 0, a_err[-3000:]
    # nothing corrupted: A's records are whole, B and C left only their lock_busy summaries
    assert report(run_a, "rd2")["status"] == "succeeded"
    assert json.loads((RUNS / run_a / "summary.json").read_text())["exit_code"] == 0
    for r in (run_b, run_c):
        assert json.loads((RUNS / r / "summary.json").read_text())["status"] == "lock_busy"
        assert not (REPORTS / r).exists()
    free = rd.FleetLock(lock, {"run_id": "probe"})
    free.acquire(wait=False)  # released by A
    free.release()
    assert router_workers() == {f"http://{a}:8000": True for a in HOSTS.values()}
