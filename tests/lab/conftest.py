"""Lab tests: real systemd hosts (systemd-nspawn) driven by the real playbooks over SSH.

Run by `make test` (scripts/test.sh sets SGL_LAB=1); skipped otherwise. Needs root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB_INVENTORY = REPO / "inventory/lab/hosts.yml"
KEY = "/var/lib/sgl-lab/ssh/id_ed25519"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


# Lab tests run on two pytest-xdist workers (scripts/test.sh: -n 2 --dist loadgroup): each fleet of lab
# hosts is one xdist group, so one worker owns it and its tests keep their file order. Tests of the main
# lab (fixtures `lab`/`site`) are group "mainlab"; modules that share a fleet name it here; every other
# test is grouped by its module (its own inventory and hosts).
SHARED_FLEETS = {
    "test_gateway.py": "redeploy-fleet",  # tests/lab/inventories/redeploy, converged once for both
    "test_redeploy.py": "redeploy-fleet",
}


def fleet_group(item) -> str:
    if {"lab", "site"} & set(getattr(item, "fixturenames", ())):
        return "mainlab"
    module = Path(str(item.fspath)).name
    return SHARED_FLEETS.get(module, module.removesuffix(".py"))


def pytest_itemcollected(item):
    # at collection of each item: before xdist's own collection_modifyitems reads the groups
    if os.environ.get("SGL_LAB") == "1" and "tests/lab/" in str(item.fspath):
        item.add_marker(pytest.mark.xdist_group(fleet_group(item)))


# The groups, longest first (measured: the lab module wall times at the end of each run): xdist hands a
# worker the next group when it runs low, so the long ones must start first (scripts/test.sh turns
# xdist's own reordering by test count off). A group not listed runs last.
GROUP_ORDER = ("mainlab", "test_multinode", "redeploy-fleet", "test_bad_input", "test_validate",
               "test_weights_faults", "test_check_mode")


def _group_rank(item) -> int:
    group = fleet_group(item)
    return GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SGL_LAB") == "1":
        if os.environ.get("PYTEST_XDIST_WORKER"):  # side by side: longest groups first (stable within a group)
            items.sort(key=lambda item: _group_rank(item) if "tests/lab/" in str(item.fspath) else -1)
        return
    skip = pytest.mark.skip(reason="lab test: set SGL_LAB=1 (make test does)")
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(skip)


_TIMES: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Each lab test's wall time, its fixtures' setup and teardown included (a shared converge is
    charged to the first test that needs it)."""
    if "tests/lab/" in report.nodeid:
        _TIMES[report.nodeid] = _TIMES.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _TIMES:
        return
    tr = terminalreporter
    tr.section("lab test wall times (setup + call + teardown)")
    modules: dict[str, float] = {}
    for nodeid, secs in _TIMES.items():
        tr.write_line(f"{secs:8.1f}s  {nodeid}")
        module = nodeid.split("::")[0]
        modules[module] = modules.get(module, 0.0) + secs
    tr.section("lab module wall times")
    for module, secs in sorted(modules.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{secs:8.1f}s  {module}")
    tr.write_line(f"{sum(modules.values()):8.1f}s  total")


def labctl(*args: str) -> str:
    out = subprocess.run([str(BIN / "python"), str(REPO / "lab/labctl.py"), *args],
                         capture_output=True, text=True, check=True)
    return out.stdout


class Run:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.recap = {}
        for host, ok, changed, unreachable, failed in RECAP.findall(proc.stdout):
            prev = self.recap.get(host, {"changed": 0, "failed": 0, "unreachable": 0})
            self.recap[host] = {  # several plays/playbooks: add the recaps up
                "changed": prev["changed"] + int(changed),
                "failed": prev["failed"] + int(failed),
                "unreachable": prev["unreachable"] + int(unreachable),
            }

    def changed(self, host: str) -> int:
        return self.recap[host]["changed"]

    def failures(self) -> str:
        """Every failed task of the run (its TASK line and the fatal block): what a tail of the output
        may not reach when the run went on for the other hosts."""
        blocks = re.findall(r"^(TASK \[[^\n]*\][^\n]*\n(?:(?!TASK \[).*\n)*?fatal: \[[^\n]*\n(?:(?:    |  ).*\n)*)",
                            self.out, re.M)
        return "\n".join(b[:3000] for b in blocks) or "(no fatal task in the output)"

    def why(self, tail: int = 4000) -> str:
        """The failed tasks, then the output's tail; the whole output is kept in reports/test/."""
        out_dir = REPO / "reports" / "test"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"playbook-{os.getpid()}-{len(list(out_dir.glob('playbook-*.log')))}.log"
        path.write_text(self.out)
        return f"failed tasks:\n{self.failures()}\n--- output tail ({path} has all of it) ---\n{self.out[-tail:]}"


def playbook(*args: str, inventory: Path | str = LAB_INVENTORY, env: dict | None = None, timeout: int = 1500) -> Run:
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), *args]
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=full_env, timeout=timeout)
    return Run(proc)


def ssh(addr: str, command: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["ssh", "-q", "-i", KEY, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", f"root@{addr}", command],
        capture_output=True, text=True, timeout=120,
    )
    if check and proc.returncode:
        raise AssertionError(f"ssh {addr} {command!r}: rc {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def inventory_copy(tmp: Path, host_vars: dict[str, dict] | None = None) -> Path:
    """A copy of the lab inventory with extra host_vars (what a user's inventory edit does)."""
    dest = tmp / "inventory"
    shutil.copytree(LAB_INVENTORY.parent, dest)
    for host, values in (host_vars or {}).items():
        (dest / "host_vars").mkdir(exist_ok=True)
        (dest / "host_vars" / f"{host}.yml").write_text(json.dumps(values))
    return dest / "hosts.yml"


@pytest.fixture(scope="session")
def lab():
    """The lab hosts of inventory/lab (and the hub) are up."""
    labctl("up", "-i", str(LAB_INVENTORY))
    return {"lab1": "10.77.0.11", "lab2": "10.77.0.12"}


def report_stamps(host: str = "lab1") -> set[str]:
    """The probe report folders (reports/<UTC stamp>/) that hold a report for ``host``."""
    return {p.parent.parent.name for p in (REPO / "reports").glob(f"*/{host}/report.json")}


@pytest.fixture(scope="session")
def site(lab):
    """site.yml has converged on the lab once. ``site.reports`` is the probe report folder that
    this run wrote (never "the newest one": other tests write reports too)."""
    before = report_stamps()
    run = playbook("site.yml")
    assert run.rc == 0, run.why()
    new = sorted(report_stamps() - before)
    assert new, "site.yml wrote no probe report for lab1"
    run.reports = REPO / "reports" / new[-1]
    return run
