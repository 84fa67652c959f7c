"""The monitoring role's alert rules, rendered with the role defaults, pass `promtool check rules` and
`promtool test rules` (tests/promtool/*.yml): every alert fires in one case and stays silent in another.

promtool comes with Debian's `prometheus` package (scripts/setup.sh installs it); without it these tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from monitoring_rules import render_rules  # noqa: E402

PROMTOOL = shutil.which("promtool")
TESTS = sorted((REPO / "tests" / "promtool").glob("*.yml"))
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (apt-get install prometheus)")


def run_promtool(tmp_path: Path, rules: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "sglang-alerts.yml").write_text(rules)
    for test in TESTS:
        shutil.copy(test, tmp_path / test.name)
    return subprocess.run([PROMTOOL, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def alert_names(rules: str) -> set[str]:
    return {r["alert"] for g in yaml.safe_load(rules)["groups"] for r in g["rules"] if "alert" in r}


@needs_promtool
def test_rules_check(tmp_path):
    result = run_promtool(tmp_path, render_rules(), "check", "rules", "sglang-alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rules_unit_tests(tmp_path):
    result = run_promtool(tmp_path, render_rules(), "test", "rules", *[t.name for t in TESTS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    names = alert_names(render_rules())
    assert names == {"SGLangEngineDown", "SGLangEngineRestarted", "SGLangQueueBacklog", "SGLangTokenUsageHigh",
                     "SGLangSlowFirstToken", "SGLangGatewayDown", "SGLangGatewayWorkerUnhealthy"}
    firing, silent = set(), set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert names - firing == set(), f"alerts without a firing case: {names - firing}"
    assert names - silent == set(), f"alerts without a non-firing case: {names - silent}"


def test_thresholds_come_from_the_role_variables():
    rules = render_rules(monitoring_alert_ttft_p95_seconds=3, monitoring_alert_token_usage=0.9,
                         monitoring_alert_queue_depth=7, monitoring_alert_restart_window="5m")
    assert "[10m])))\n          > 3\n" in rules
    assert "sglang:token_usage{job=\"sglang\"} > 0.9\n" in rules
    assert "sglang:num_queue_reqs{job=\"sglang\"} > 7\n" in rules
    assert '[5m]' in rules and '[15m]' not in rules


@needs_promtool
@pytest.mark.parametrize("override", [
    {"monitoring_alert_token_usage": 0.99},  # lab1's 0.97 no longer fires
    {"monitoring_alert_ttft_p95_seconds": 30},  # lab1's 19.5 s no longer fires
    {"monitoring_alert_engine_down_for": "10m"},
])
def test_the_rule_tests_can_fail(tmp_path, override):
    result = run_promtool(tmp_path, render_rules(**override), "test", "rules", *[t.name for t in TESTS])
    assert result.returncode != 0
