"""The plan sizes the weights from the hub's listing exactly as the weights role selects files:
one listing parser and the role's allow/ignore patterns (sgl_deploy.hub.listing_total_gb, which is
the weights code's parser and matcher), through the plan role's own expression (vars/main.yml)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LISTING = {"Code": 200, "Data": {"Files": [
    {"Path": "config.json", "Size": 1_000_000_000, "Type": "blob"},
    {"Path": "model-00001.safetensors", "Size": 4_000_000_000, "Type": "blob"},
    {"Path": "model-00002.safetensors", "Size": 4_000_000_000, "Type": "blob"},
    {"Path": "original/consolidated.pth", "Size": 9_000_000_000, "Type": "blob"},
]}}


def plan_gb(tmp_path: Path, **weights_vars) -> float:
    """_sglang_plan_hub_gb as the plan role evaluates it, for a hub answer of LISTING."""
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(REPO / "roles/sglang_plan/vars/main.yml")],
        "vars": {"__sglang_plan_listing": {"status": 200, "json": LISTING}, **weights_vars},
        "tasks": [{"name": "size", "ansible.builtin.debug": {"msg": "GB={{ _sglang_plan_hub_gb }}"}}],
    }]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          str(play)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return float(re.search(r"GB=([0-9.]+)", out.stdout).group(1))


def test_plan_counts_every_file_without_patterns(tmp_path):
    assert plan_gb(tmp_path) == pytest.approx(18.0)


def test_plan_honours_the_weights_roles_patterns(tmp_path):
    assert plan_gb(tmp_path, model_weights_ignore_patterns=["original/*"]) == pytest.approx(9.0)
    assert plan_gb(tmp_path, model_weights_allow_patterns=["*.safetensors"]) == pytest.approx(8.0)
