"""site.yml --check --diff on the lab: a preview that changes nothing.

* Converged lab (the session `site` fixture): a no-op `--check --diff` reports changed=0 on every
  host, runs no probe (no new report folder) and shows no state blob; with
  `-e sglang_plan_mem_fraction_static=0.77` the diff shows the new value in the unit, names the
  service a run would restart, and afterwards MainPID and the unit file are unchanged.
* Fresh host (own inventory tests/lab/inventories/checkmode, cm1 10.77.0.71, recreated empty):
  `--check` exits 0 and leaves the host as it was: no /opt/sglang, no unit, no weights; with the weights
  phase (sgl_model_weights in check mode) it names the files and bytes a run would download.
SGL_LAB=1 runs it (skipped otherwise); SGL_LAB_KEEP=1 keeps cm1 afterwards.
"""

from __future__ import annotations

import os
import re

import pytest

from conftest import REPO, labctl, playbook, report_stamps, ssh

pytestmark = [pytest.mark.lab]

UNIT = "sglang.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
FRESH_INV = REPO / "tests/lab/inventories/checkmode/hosts.yml"
FRESH = {"cm1": "10.77.0.71"}
MAX_LINE = 3000  # the unit's ExecStart line is the longest legitimate one (about 1 kB)


def state(addr: str) -> dict[str, str]:
    """What a preview must not change: the engine's PID, the unit file, the key file and the venv link."""
    out = ssh(addr, f"systemctl show {UNIT} -p MainPID --value; sha256sum {UNIT_FILE} /etc/sglang/*; "
                    "readlink /opt/sglang/current", check=False)
    return {"state": out}


def no_blob(out: str) -> None:
    longest = max((len(line) for line in out.splitlines()), default=0)
    assert longest < MAX_LINE, f"a {longest}-character line in the output (a state blob in --diff?)"
    assert '"request":' not in out, "the install verification cache shows in --diff"


def test_noop_check_diff_changes_nothing(site, lab):
    before = {h: state(a) for h, a in lab.items()}
    stamps = report_stamps()
    run = playbook("site.yml", "--check", "--diff")
    assert run.rc == 0, run.out[-6000:]
    assert run.recap, run.out[-2000:]
    for host, recap in run.recap.items():
        assert recap["changed"] == 0 and recap["failed"] == 0, (host, recap, run.out[-6000:])
    assert "check mode: probes not run" in run.out
    assert report_stamps() == stamps, "check mode ran the probes"
    no_blob(run.out)
    assert {h: state(a) for h, a in lab.items()} == before


def test_changed_variable_shows_the_diff_and_changes_nothing(site, lab):
    before = {h: state(a) for h, a in lab.items()}
    run = playbook("site.yml", "--check", "--diff", "-e", "sglang_plan_mem_fraction_static=0.77")
    assert run.rc == 0, run.out[-6000:]
    # the unit diff carries the new value, and the preview names the restart a run would do
    assert re.search(r"^\+.*mem-fraction-static\W+0\.77\b", run.out, re.M), run.out[-6000:]
    assert f"a run would restart {UNIT}" in run.out, run.out[-6000:]
    for host in lab:
        assert run.changed(host) > 0, (host, run.recap)
    no_blob(run.out)
    assert {h: state(a) for h, a in lab.items()} == before  # MainPID, unit file, key file, venv link


@pytest.fixture(scope="module")
def fresh():
    labctl("reset", "-i", str(FRESH_INV))  # removes the host's root first: nothing installed
    yield FRESH
    if os.environ.get("SGL_LAB_KEEP") != "1":
        labctl("down", "-i", str(FRESH_INV))


def untouched(addr: str) -> None:
    out = ssh(addr, f"ls -d /opt/sglang {UNIT_FILE} /srv/models/* 2>/dev/null; true").strip()
    assert out == "", f"check mode left: {out}"


def test_fresh_host_check_skipping_weights_exits_0(fresh):
    """Install, serve and probes on a fresh host in check mode (the weights phase needs the venv: a gap of issue 16)."""
    run = playbook("site.yml", "--check", "--diff", "--skip-tags", "weights", inventory=FRESH_INV, timeout=900)
    assert run.rc == 0, run.out[-6000:]
    out = run.out
    flat = " ".join(out.split())  # the yaml callback wraps long messages
    assert "a run would install sglang==" in flat, out[-4000:]  # said by the install role
    assert f"a run would restart {UNIT}" in flat, out[-4000:]  # the new unit would start
    no_blob(out)
    untouched(fresh["cm1"])



def test_fresh_host_check_with_weights_exits_0_and_names_the_bytes(fresh):
    """The whole of site.yml in check mode on a fresh host, weights included: the sgl_model_weights module
    lists the hub without the SGLang venv (plain HTTP) and names the files and bytes a run would download."""
    run = playbook("site.yml", "--check", "--diff", inventory=FRESH_INV, timeout=900)
    assert run.rc == 0, run.out[-6000:]
    flat = " ".join(run.out.split())  # the yaml callback wraps long messages
    m = re.search(r"check mode: a run would download (\d+) of (\d+) files, (\d+) bytes", flat)
    assert m, run.out[-4000:]
    assert int(m.group(1)) == int(m.group(2)) > 0 and int(m.group(3)) > 0, m.group(0)
    assert f"a run would restart {UNIT}" in flat, run.out[-4000:]
    no_blob(run.out)
    untouched(fresh["cm1"])
