"""The deploy-state local fact on the lab: /etc/ansible/facts.d/sglang.fact after site.yml.

It describes what the unit runs (the same ExecStart text, argv and hash), the model and version the
plan and install chose, and Ansible reads it as ansible_local.sglang. SGL_LAB=1 runs it.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import BIN, LAB_INVENTORY, REPO, ssh

pytestmark = [pytest.mark.lab]

FACT = "/etc/ansible/facts.d/sglang.fact"


def fact(addr: str) -> dict:
    return json.loads(ssh(addr, f"cat {FACT}"))


def unit_exec_start(addr: str) -> str:
    line = ssh(addr, "grep '^ExecStart=' /etc/systemd/system/sglang.service").strip()
    return line[len("ExecStart="):]


def test_fact_describes_what_the_unit_runs(site, lab):
    for host, addr in lab.items():
        state = fact(addr)
        assert state["schema"] == 1 and state["unit"] == "sglang.service", state
        assert state["exec_start"] == unit_exec_start(addr), host
        assert state["argv_sha256"] == hashlib.sha256(json.dumps(state["argv"]).encode()).hexdigest()
        assert state["model"]["id"] == "SglLab/MiniMax-M3-Lab" and state["model"]["served_model_name"] == "MiniMax-M3"
        assert state["venv"] == ssh(addr, "readlink /opt/sglang/current").strip()
        assert state["venv"].endswith("sglang-" + state["version"])
        assert state["port"] == 8000 and state["plan"]["tp_size"] >= 1
        assert "lab-secret-key" not in json.dumps(state)  # no secret in a 0644 file
        assert ssh(addr, f"stat -c %a {FACT}").strip() == "644"


def test_ansible_reads_it_as_a_local_fact(site):
    import subprocess

    proc = subprocess.run([str(BIN / "ansible"), "-i", str(LAB_INVENTORY), "lab1", "-m", "ansible.builtin.setup",
                           "-a", "filter=ansible_local"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.split("=>", 1)[1])  # "lab1 | SUCCESS => {...}"
    fact = result["ansible_facts"]["ansible_local"]["sglang"]
    assert len(fact["argv_sha256"]) == 64 and fact["port"] == 8000, fact
