"""The monitoring role's configuration tasks (roles/monitoring/tasks/config.yml), run by ansible-playbook on
the controller against the lab inventory into a temporary folder: the file_sd targets are the lab's rank-0
engines and its gateway, the lab's short intervals reach prometheus.yml, and the whole configuration (rules
and target files included) passes a full `promtool check config`.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROMTOOL = shutil.which("promtool")
PLAY = """
- name: Render the monitoring configuration
  hosts: labmon
  gather_facts: false
  connection: local
  tasks:
    - name: Configuration tasks of the role
      ansible.builtin.import_role:
        name: monitoring
        tasks_from: config.yml
"""

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (apt-get install prometheus)")


def render(tmp_path: Path, inventory: Path) -> Path:
    etc = tmp_path / "etc"
    (tmp_path / "play.yml").write_text(PLAY)
    extra = {"_monitoring_etc": str(etc), "_monitoring_group": grp.getgrgid(os.getgid()).gr_name,
             "_monitoring_service_actions": False, "ansible_python_interpreter": sys.executable}
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
           "ANSIBLE_FILTER_PLUGINS": str(REPO / "plugins" / "filter"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CACHE_PLUGIN": "memory", "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(tmp_path / "play.yml"),
                           "-e", json.dumps(extra)], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return etc


def test_lab_configuration(tmp_path):
    etc = render(tmp_path, REPO / "inventory" / "lab" / "hosts.yml")
    engines = json.loads((etc / "file_sd" / "sglang-engines.json").read_text())
    gateways = json.loads((etc / "file_sd" / "sglang-gateways.json").read_text())
    # the lab has a gateway, so the gateway-only firewall is on: Prometheus reads the metrics relay
    assert [(e["targets"], e["labels"]["instance_name"]) for e in engines] == [
        (["10.77.0.11:9480"], "lab1"), (["10.77.0.12:9480"], "lab2")]
    assert [(g["targets"], g["labels"]["instance_name"]) for g in gateways] == [(["10.77.0.20:29000"], "labrouter")]
    config = yaml.safe_load((etc / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "2s" and config["global"]["evaluation_interval"] == "2s"
    assert {j["job_name"] for j in config["scrape_configs"]} == {"prometheus", "sglang", "sglang-gateway"}
    rules = (etc / "rules" / "sglang-alerts.yml").read_text()
    assert "for: 4s" in rules and "[2m]" in rules  # the lab's monitoring_alert_* values
    check = subprocess.run([PROMTOOL, "check", "config", str(etc / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout + check.stderr


def test_multinode_group_scrapes_rank0_only(tmp_path):
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"sglang_replicas": {"m3-a": ["mn1", "mn2"]}},
        "children": {
            "sglang_servers": {"hosts": {"mn1": {"ansible_host": "10.77.0.51"}, "mn2": {"ansible_host": "10.77.0.52"},
                                         "solo": {"ansible_host": "10.77.0.53", "sglang_plan_port": 8100}}},
            "monitoring": {"hosts": {"labmon": {"ansible_host": "10.77.0.21"}}},
        }}}))
    etc = render(tmp_path, inv / "hosts.yml")
    engines = json.loads((etc / "file_sd" / "sglang-engines.json").read_text())
    assert [e["targets"] for e in engines] == [["10.77.0.51:8000"], ["10.77.0.53:8100"]]
    assert json.loads((etc / "file_sd" / "sglang-gateways.json").read_text()) == []
