"""One default per port: sgl_deploy.ports, repeated only in the owning roles' defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sgl_deploy import argv, monitoring, planner, ports

ROOT = Path(__file__).resolve().parents[2]


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


@pytest.mark.parametrize(("role", "var", "value"), [
    ("sglang_plan", "sglang_plan_port", ports.ENGINE_PORT),
    ("sglang_router", "sglang_router_port", ports.ROUTER_PORT),
    ("sglang_router", "sglang_router_prometheus_port", ports.ROUTER_METRICS_PORT),
    ("sglang_watchdog", "sglang_watchdog_port", ports.WATCHDOG_PORT),
])
def test_role_defaults_match_the_package(role, var, value):
    assert _defaults(role)[var] == value


def test_package_reads_the_one_default():
    assert planner.DEFAULT_PORT == ports.ENGINE_PORT
    assert monitoring.DEFAULT_ENGINE_PORT == ports.ENGINE_PORT
    assert monitoring.DEFAULT_ROUTER_PORT == ports.ROUTER_PORT
    assert monitoring.DEFAULT_ROUTER_METRICS_PORT == ports.ROUTER_METRICS_PORT
    plan = {"model_path": "/m", "served_model_name": "m", "tp_size": 1}
    assert argv.server_argv(plan, None, None)[argv.server_argv(plan, None, None).index("--port") + 1] == str(ports.ENGINE_PORT)


@pytest.mark.parametrize(("hv", "port"), [
    ({}, ports.ENGINE_PORT),
    (None, ports.ENGINE_PORT),
    ({"sglang_plan_port": "8100"}, 8100),
    ({"sglang_plan_port": 8100, "sglang_plan_result": {"port": 8200}}, 8200),
    ({"sglang_plan_result": {}}, ports.ENGINE_PORT),
    ({"sglang_plan_port": "{{ unresolved }}"}, ports.ENGINE_PORT),
])
def test_engine_port(hv, port):
    assert ports.engine_port(hv) == port


# a fallback literal for a port outside its owner: `default(8000)`, `or 30000`, `, 29000)` ...
_LITERAL = re.compile(r"(default\(\s*|\bor\s+|get\([^)]*,\s*)(%s)\b" % "|".join(
    str(p) for p in (ports.ENGINE_PORT, ports.ROUTER_PORT, ports.ROUTER_METRICS_PORT, ports.WATCHDOG_PORT)))


def _sources():
    for pattern in ("roles/*/tasks/*.yml", "roles/*/defaults/*.yml", "roles/*/vars/*.yml", "roles/*/templates/*",
                    "playbooks/*.yml", "site.yml", "src/sgl_deploy/*.py", "plugins/*/*.py"):
        yield from sorted(ROOT.glob(pattern))


def test_no_second_port_fallback():
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
             for p in _sources() for n, line in enumerate(p.read_text().splitlines(), 1) if _LITERAL.search(line)]
    assert found == []


def test_literal_pattern_can_fail():
    assert _LITERAL.search('probes_port: "{{ sglang_plan_result.port | default(30000) }}"')
    assert _LITERAL.search('port=int(v.get("sglang_plan_port") or 8000)')
    assert _LITERAL.search("{{ (sglang_watchdog_port | default(20090)) if x else none }}")


def test_watchdog_port_one_default():
    import importlib.util

    assert ports.watchdog_port() == ports.watchdog_port("{{ x }}") == ports.WATCHDOG_PORT
    assert ports.watchdog_port("20190") == 20190
    path = ROOT / "roles/sglang_watchdog/files/sgl_group_watchdog.py"
    spec = importlib.util.spec_from_file_location("sgl_group_watchdog_ports", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DEFAULTS["port"] == ports.WATCHDOG_PORT  # the script's fallback (stdlib, no import of ports)


def test_filter_sgl_engine_port():
    import importlib.util

    pytest.importorskip("ansible")
    spec = importlib.util.spec_from_file_location("sgl_deploy_filter_ports", ROOT / "plugins" / "filter" / "sgl_deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    f = module.FilterModule().filters()["sgl_engine_port"]
    assert f({"sglang_plan_result": {"port": 8300}, "other": 1}) == 8300
    assert f({}) == ports.ENGINE_PORT

