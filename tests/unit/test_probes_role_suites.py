"""The probes role with ``probes_suites: [default, recipe]`` (what `make demo` sets), run by
ansible-playbook on this machine against the stdlib fake server: both suites against the endpoint
and the router, reports in <target>/ and <target>-recipe/; a model that never calls a tool fails
the host naming the recipe suite and its tools probe; an unknown suite is refused first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from broken_servers import FakeServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
API_KEY = "role-suite-key"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="no .venv/bin/ansible-playbook"),
]


class NoToolServer(FakeServer):
    def reply(self, body):
        return super().reply({**body, "tools": None, "tool_choice": None})


def run_role(tmp_path: Path, base_url: str, suites) -> tuple[subprocess.CompletedProcess, Path]:
    wrapper = tmp_path / "sgl-deploy"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={REPO / 'src'} exec {sys.executable} -m sgl_deploy.cli \"$@\"\n")
    wrapper.chmod(0o755)
    (tmp_path / "hosts").write_text(f"gpu01 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    (tmp_path / "play.yml").write_text("- hosts: gpu01\n  gather_facts: false\n  roles: [probes]\n")
    reports = tmp_path / "reports"
    extra = {
        "probes_base_url": base_url, "probes_model": "fake-m3", "probes_api_key": API_KEY,
        "probes_sgl_deploy": str(wrapper), "probes_report_dir": str(reports),
        "probes_through_router": True, "probes_router_url": base_url, "probes_suites": suites,
        "probes_concurrency": 2,
    }
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(PLAYBOOK), "-i", str(tmp_path / "hosts"), str(tmp_path / "play.yml"),
                           "-e", json.dumps(extra)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, reports


def test_both_suites_against_the_endpoint_and_the_router(tmp_path):
    with FakeServer(api_key=API_KEY) as server:
        proc, reports = run_role(tmp_path, server.base_url, ["default", "recipe"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    (run,) = list(reports.iterdir())
    assert sorted(p.name for p in run.iterdir()) == ["gpu01", "gpu01-recipe", "router", "router-recipe"]
    recipe = json.loads((run / "gpu01-recipe" / "report.json").read_text())
    assert recipe["suite"] == "recipe" and recipe["passed"]
    assert [p["name"] for p in recipe["probes"]] == ["recipe_chat", "recipe_streaming", "recipe_tools",
                                                     "recipe_vision"]
    assert "suite" not in json.loads((run / "gpu01" / "report.json").read_text())
    assert "== router (recipe suite) ==" in proc.stdout and "Run sgl-deploy probe for every target and suite at once" in proc.stdout
    assert API_KEY not in proc.stdout


def test_a_model_without_tool_calls_fails_the_recipe_suite(tmp_path):
    with NoToolServer(api_key=API_KEY) as server:
        proc, reports = run_role(tmp_path, server.base_url, ["recipe"])
    assert proc.returncode != 0
    assert "Probes (recipe suite) failed on gpu01" in proc.stdout
    assert "failed probes: recipe_tools" in proc.stdout


def test_an_unknown_suite_is_refused(tmp_path):
    proc, reports = run_role(tmp_path, "http://127.0.0.1:9", ["default", "nightly"])
    assert proc.returncode != 0 and "probes_suites a non-empty" in proc.stdout
    assert not reports.exists()
