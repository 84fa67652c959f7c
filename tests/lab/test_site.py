"""site.yml end to end on the lab: converge, testinfra, idempotence, restarts, failure paths."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from conftest import BIN, LAB_INVENTORY, REPO, inventory_copy, playbook, ssh

UNIT = "sglang.service"


def unit_show(addr: str, *props: str) -> dict:
    out = ssh(addr, f"systemctl show {UNIT} -p {','.join(props)}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_health(addr: str, timeout: float = 120) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        code = ssh(addr, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health", check=False)
        if code.strip() == "200":
            return True
        time.sleep(2)
    return False


def test_site_converges_every_host(site):
    for host in ("lab1", "lab2"):
        assert site.recap[host]["failed"] == 0 and site.recap[host]["unreachable"] == 0


def test_probe_reports_pass_for_every_host(site):
    for host in ("lab1", "lab2", "router"):
        report = json.loads((site.reports / host / "report.json").read_text())
        assert report["passed"], report
        names = {p["name"] for p in report["probes"]}
        assert {"models", "chat", "streaming", "reasoning", "vision", "tools", "auth"} <= names
        assert (site.reports / host / "junit.xml").exists()


def test_testinfra_suite_passes(site):
    proc = subprocess.run(
        [str(BIN / "pytest"), "-p", "no:cacheprovider", "-q", str(REPO / "tests/infra"),
         "--hosts=ansible://sglang_servers", f"--ansible-inventory={LAB_INVENTORY}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 20, proc.stdout[-2000:]  # the suite really ran


def test_second_run_changes_nothing_and_restarts_nothing(site, lab):
    before = {h: unit_show(a, "MainPID")["MainPID"] for h, a in lab.items()}
    run = playbook("site.yml")
    assert run.rc == 0, run.out[-4000:]
    for host in lab:
        assert run.changed(host) == 0, f"{host} changed on a no-op rerun:\n{run.out[-4000:]}"
    after = {h: unit_show(a, "MainPID")["MainPID"] for h, a in lab.items()}
    assert before == after


def test_one_flag_change_restarts_exactly_that_host(site, lab, tmp_path):
    before = {h: unit_show(a, "MainPID")["MainPID"] for h, a in lab.items()}
    inv = inventory_copy(tmp_path, host_vars={"lab2": {"sglang_plan_mem_fraction_static": 0.8}})
    try:
        # a flag change is a serve-phase change: --tags serve (the plan always runs first)
        run = playbook("site.yml", "--tags", "serve", inventory=inv)
        assert run.rc == 0, run.out[-4000:]
        after = {h: unit_show(a, "MainPID")["MainPID"] for h, a in lab.items()}
        assert after["lab1"] == before["lab1"], "lab1 was restarted"
        assert after["lab2"] != before["lab2"], "lab2 was not restarted"
        assert "--mem-fraction-static 0.8" in unit_show(lab["lab2"], "ExecStart")["ExecStart"]
        assert run.changed("lab1") == 0
    finally:
        restore = playbook("site.yml", "--tags", "serve")
        assert restore.rc == 0, restore.out[-4000:]
    # M3 bf16 on H100 under the default cookbook recipe: the cookbook's fraction for that build (0.75)
    assert "--mem-fraction-static 0.75" in unit_show(lab["lab2"], "ExecStart")["ExecStart"]


def test_killed_engine_is_restarted_by_systemd(site, lab):
    addr = lab["lab1"]
    state = unit_show(addr, "MainPID", "NRestarts")
    ssh(addr, f"kill -9 {state['MainPID']}")
    deadline = time.time() + 60
    while time.time() < deadline:
        now = unit_show(addr, "MainPID", "NRestarts")
        if int(now["NRestarts"]) > int(state["NRestarts"]) and now["MainPID"] not in ("0", state["MainPID"]):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"systemd did not restart the engine: {now}")
    assert wait_health(addr), "/health did not come back after the restart"


def test_engine_that_exits_at_start_fails_the_play_fast(site, lab, tmp_path):
    inv = inventory_copy(tmp_path, host_vars={"lab2": {"sglang_service_environment": {"SGL_LAB_EXIT_AT_START": "3"}}})
    try:
        start = time.time()
        run = playbook("site.yml", "--limit", "lab2", "--tags", "serve", inventory=inv)
        elapsed = time.time() - start
        assert run.rc != 0
        assert "exited instead of starting" in run.out, run.out[-4000:]
        assert "Last journal lines" in run.out
        # the plan's readiness deadline is 30 min; failing must take seconds, not the deadline
        assert elapsed < 240, f"took {elapsed:.0f}s"
    finally:
        restore = playbook("site.yml", "--limit", "lab2", "--tags", "serve")
        assert restore.rc == 0, restore.out[-4000:]
    assert wait_health(lab["lab2"])
