"""The sgl_timing callback (plugins/callback/sgl_timing.py): per-play wall time, tasks and remote module
runs per host, as the converge benchmark reads them (scripts/bench/converge.py, docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

PLAY = """---
- name: First play
  hosts: all
  gather_facts: false
  tasks:
    - name: A module run on the host
      ansible.builtin.command: "true"
      changed_when: false
    - name: A controller-only task
      ansible.builtin.set_fact:
        x: 1
    - name: Skipped
      ansible.builtin.command: "true"
      when: false
- name: Second play
  hosts: all
  gather_facts: false
  tasks:
    - name: Delegated to the controller
      ansible.builtin.command: "true"
      delegate_to: localhost
      changed_when: false
"""


def test_plays_tasks_and_remote_runs_per_host(tmp_path):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "hosts").write_text("h1 ansible_connection=local ansible_python_interpreter={}\n".format(sys.executable))
    out = tmp_path / "timing.json"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_CALLBACKS_ENABLED": "sgl_timing",
           "SGL_TIMING_JSON": str(out), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts"), str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert [p["play"] for p in doc["plays"]] == ["First play", "Second play"]
    assert [p["tasks"] for p in doc["plays"]] == [3, 1]
    assert all(p["seconds"] >= 0 for p in doc["plays"]) and doc["wall_s"] >= sum(p["seconds"] for p in doc["plays"]) - 0.01
    assert doc["hosts"]["h1"] == {"tasks": 3, "skipped": 1, "remote": 1}
    assert "sgl_timing:" in proc.stdout
