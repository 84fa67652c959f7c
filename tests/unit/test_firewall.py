"""The gateway-only firewall (src/sgl_deploy/firewall.py, roles/sglang_firewall): who reaches the engine port,
the rendered nftables ruleset (checked with the real `nft -c -f` when this machine can), the switch, the
validation rules and the metrics relay (roles/sglang_firewall/files/sgl_metrics_relay.py) against a stand-in engine."""

from __future__ import annotations

import http.server
import importlib.util
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sgl_deploy import firewall, ports, validate

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "sglang_firewall"

HOSTVARS = {
    "lab1": {"ansible_host": "10.77.0.11"},
    "lab2": {"ansible_host": "10.77.0.12"},
    "labrouter": {"ansible_host": "10.77.0.20"},
    "labmon": {"ansible_host": "10.77.0.21"},
}
GROUPS = {"sglang_servers": ["lab1", "lab2"], "sglang_routers": ["labrouter"], "monitoring": ["labmon"]}


def lab_plan(**overrides):
    hv = {k: dict(v) for k, v in HOSTVARS.items()}
    hv["lab1"].update(overrides)
    return firewall.plan("lab1", hv, GROUPS, ["10.77.0.1"])


def rule_lines(ruleset: str) -> list[str]:
    return [line.strip() for line in ruleset.splitlines()]


def set_elements(ruleset: str, name: str) -> str:
    lines = ruleset.splitlines()
    start = lines.index(f"\tset {name} {{")
    for line in lines[start:]:
        if line.strip() == "}":
            return ""
        if "elements" in line:
            return line.split("=", 1)[1].strip()
    return ""


# --------------------------------------------------------------------------- the switch


@pytest.mark.parametrize(("value", "gateways", "on"), [
    ("auto", ["r"], True), ("auto", [], False), (None, ["r"], True), (None, [], False), ("", [], False),
    (True, [], True), (False, ["r"], False), ("true", [], True), ("false", ["r"], False), ("AUTO", ["r"], True),
])
def test_enabled_auto_follows_the_gateways(value, gateways, on):
    assert firewall.enabled(value, gateways) is on


def test_enabled_refuses_other_values():
    with pytest.raises(firewall.FirewallError, match="auto, true or false"):
        firewall.enabled("sometimes", ["r"])
    assert firewall.enabled_value_problem("sometimes") == "is not auto, true or false"
    assert firewall.enabled_value_problem("auto") is None


def test_lab_is_on_and_the_multinode_lab_is_off():
    assert lab_plan()["enabled"] is True
    hv = {"mn1": {"ansible_host": "10.77.0.51"}, "mn2": {"ansible_host": "10.77.0.52"}}
    assert firewall.plan("mn1", hv, {"sglang_servers": ["mn1", "mn2"]}, ["10.77.0.1"])["enabled"] is False


def test_scrape_port_is_the_relay_only_when_on():
    assert firewall.scrape_port({"sglang_plan_port": 8100}, ["r"]) == ports.ENGINE_METRICS_RELAY_PORT
    assert firewall.scrape_port({"sglang_plan_port": 8100}, []) == 8100
    assert firewall.scrape_port({"sglang_plan_port": 8100, "sglang_firewall_enabled": "false"}, ["r"]) == 8100
    assert firewall.scrape_port({"sglang_firewall_metrics_port": "9500"}, ["r"]) == 9500
    assert firewall.scrape_port({"sglang_firewall_enabled": "bogus"}, ["r"]) == ports.ENGINE_PORT


# --------------------------------------------------------------------------- sources


def test_lab_sources_gateway_controller_monitoring():
    plan = lab_plan()
    assert plan["engine_port"] == 8000 and plan["metrics_port"] == ports.ENGINE_METRICS_RELAY_PORT
    assert plan["sources"]["gateways"] == ["10.77.0.20/32"]
    assert plan["sources"]["controller"] == ["10.77.0.1/32"]
    assert plan["sources"]["monitoring"] == ["10.77.0.21/32"]
    assert plan["sources"]["peers"] == []
    rules = plan["ruleset"]
    # the engine port: loopback, the gateway, the controller; never the monitoring host nor lab2
    assert set_elements(rules, "engine_v4") == "{ 10.77.0.1/32, 10.77.0.20/32, 127.0.0.0/8 }"
    # the relay: the same plus labmon (10.77.0.20/32 + 10.77.0.21/32 merge into /31)
    assert set_elements(rules, "metrics_v4") == "{ 10.77.0.1/32, 10.77.0.20/31, 127.0.0.0/8 }"
    lines = rule_lines(rules)
    assert lines.index("tcp dport 8000 ip saddr @engine_v4 accept") < lines.index(
        "tcp dport 8000 counter reject with tcp reset")
    assert "tcp dport 9480 counter reject with tcp reset" in lines
    assert "type filter hook input priority filter; policy accept;" in lines  # other ports: the host's firewall


def test_only_the_toolkit_table_is_touched():
    lines = [line for line in rule_lines(lab_plan()["ruleset"]) if line and not line.startswith("#")]
    assert lines[:3] == ["table inet sglang", "delete table inet sglang", "table inet sglang {"]
    text = "\n".join(lines)
    assert "flush" not in text and text.count("table ") == 3
    assert "policy drop" not in text


def test_port_follows_the_plan_and_the_relay_port_variable():
    plan = lab_plan(sglang_plan_result={"port": 8100}, sglang_firewall_metrics_port=9500)
    lines = rule_lines(plan["ruleset"])
    assert "tcp dport 8100 counter reject with tcp reset" in lines
    assert "tcp dport 9500 counter reject with tcp reset" in lines
    assert not any("dport 8000" in line for line in lines)
    with pytest.raises(firewall.FirewallError, match="engine's port"):
        lab_plan(sglang_firewall_metrics_port=8000)


def test_replica_group_peers_get_every_port():
    hv = {"mn1": {"ansible_host": "10.77.0.51", "sglang_replicas": {"g": ["mn1", "mn2"]}},
          "mn2": {"ansible_host": "10.77.0.52", "sglang_replicas": {"g": ["mn1", "mn2"]}},
          "r": {"ansible_host": "10.77.0.20"}}
    plan = firewall.plan("mn2", hv, {"sglang_routers": ["r"]}, ["10.77.0.1"])
    assert plan["sources"]["peers"] == ["10.77.0.51/32"]
    assert set_elements(plan["ruleset"], "peers_v4") == "{ 10.77.0.51/32 }"
    lines = rule_lines(plan["ruleset"])
    # before any port rule: the rendezvous, NCCL and watchdog ports stay open between the ranks
    assert lines.index("ip saddr @peers_v4 accept") < min(i for i, line in enumerate(lines) if "dport" in line)


def test_extra_cidrs_ipv6_and_names():
    plan = lab_plan(sglang_firewall_allowed_cidrs=["10.9.0.0/16", "fd00::1", "10.9.3.4"])
    assert set_elements(plan["ruleset"], "engine_v4") == "{ 10.9.0.0/16, 10.77.0.1/32, 10.77.0.20/32, 127.0.0.0/8 }"
    assert set_elements(plan["ruleset"], "engine_v6") == "{ ::1/128, fd00::1/128 }"
    hv = {"a": {"ansible_host": "gw.example"}, "e": {}}
    resolved = firewall.plan("e", hv, {"sglang_routers": ["a"]}, [], resolve=lambda name: ["192.0.2.7"])
    assert resolved["sources"]["gateways"] == ["192.0.2.7/32"]

    def unresolvable(name):
        raise firewall.FirewallError(f"{name}: cannot resolve")

    with pytest.raises(firewall.FirewallError, match="gw.example"):
        firewall.plan("e", hv, {"sglang_routers": ["a"]}, [], resolve=unresolvable)


@pytest.mark.parametrize(("configured", "ssh", "want"), [
    ([], "10.77.0.1 47254 10.77.0.11 22", ["10.77.0.1"]),
    ([], "fd00::1 47254 fd00::11 22", ["fd00::1"]),
    (["192.0.2.1"], "10.77.0.1 47254 10.77.0.11 22", ["192.0.2.1"]),
    ([], "", []),
    (None, "garbage", []),
])
def test_controller_address(configured, ssh, want):
    assert firewall.controller_addresses(configured, ssh) == want


def test_rerender_is_identical():
    assert lab_plan()["ruleset"] == lab_plan()["ruleset"]


def _nft_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "firewall.nft"
    path.write_text(text)
    return subprocess.run([shutil.which("nft") or "nft", "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.skipif(not shutil.which("nft") or os.geteuid() != 0, reason="needs nft and root (netlink) to check")
def test_rendered_rulesets_pass_nft_check(tmp_path):
    hv = {"mn1": {"ansible_host": "10.77.0.51", "sglang_replicas": {"g": ["mn1", "mn2"]}},
          "mn2": {"ansible_host": "fd00::52", "sglang_replicas": {"g": ["mn1", "mn2"]}},
          "r": {"ansible_host": "10.77.0.20"}, "m": {"ansible_host": "fd00::21"}}
    for text in (lab_plan()["ruleset"],
                 lab_plan(sglang_firewall_allowed_cidrs=["10.0.0.0/8", "10.77.0.0/24", "fd00::/64"])["ruleset"],
                 firewall.plan("mn1", hv, {"sglang_routers": ["r"], "monitoring": ["m"]}, [])["ruleset"]):
        proc = _nft_check(text, tmp_path)
        assert proc.returncode == 0, proc.stderr + text
    # the check can fail: a broken rule is refused (what the template's validate: relies on)
    proc = _nft_check(lab_plan()["ruleset"].replace("reject with tcp reset", "reject with tcp bogus"), tmp_path)
    assert proc.returncode != 0


# --------------------------------------------------------------------------- validation


def test_validation_rules():
    host = "lab1"
    problems = validate.host_problems(host, {"sglang_firewall_allowed_cidrs": ["10.0.0.0/8", "10.0.0.300", "fd00::/64"],
                                              "sglang_firewall_controller_addresses": "10.0.0.1",
                                              "sglang_firewall_enabled": "maybe",
                                              "sglang_firewall_metrics_port": 70000}, ["sglang_servers"])
    found = {(p["variable"], p["problem"]) for p in problems}
    assert ("sglang_firewall_allowed_cidrs",
            "is not an IP address or CIDR (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/64)") in found
    assert ("sglang_firewall_controller_addresses", "is not a list of IP addresses or CIDRs") in found
    assert ("sglang_firewall_enabled", "is not auto, true or false") in found
    assert ("sglang_firewall_metrics_port", "is not a TCP port (1..65535)") in found
    assert len(problems) == 4, problems
    good = {"sglang_firewall_allowed_cidrs": ["10.0.0.0/8", "fd00::1"], "sglang_firewall_enabled": True,
            "sglang_firewall_controller_addresses": [], "sglang_firewall_metrics_port": 9480}
    assert validate.host_problems(host, good, ["sglang_servers"]) == []


def test_relay_port_clash_unless_off():
    clash = {"sglang_plan_port": 9480, "sglang_firewall_metrics_port": 9480}
    assert [p["variable"] for p in validate.port_clash_problems("h", clash, ["sglang_servers"])] == [
        "sglang_firewall_metrics_port"]
    assert validate.port_clash_problems("h", {**clash, "sglang_firewall_enabled": False}, ["sglang_servers"]) == []


def test_role_is_validated_and_prefixed():
    assert validate.ROLE_GROUPS["sglang_firewall"] == "sglang_servers"
    assert validate.ROLE_PREFIXES["sglang_firewall"] == "sglang_firewall"


def test_role_default_port_is_the_package_default():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["sglang_firewall_metrics_port"] == ports.ENGINE_METRICS_RELAY_PORT
    assert defaults["sglang_firewall_enabled"] == "auto"


def test_serve_playbook_runs_the_role():
    play = yaml.safe_load((ROOT / "playbooks" / "serve.yml").read_text())
    roles = [r["role"] for p in play if "roles" in p for r in p["roles"]]
    assert roles[-1] == "sglang_firewall"


def test_ruleset_template_is_validated_with_nft():
    tasks = yaml.safe_load((ROLE / "tasks" / "present.yml").read_text())
    template = [t for t in tasks if t.get("ansible.builtin.template", {}).get("src") == "firewall.nft.j2"]
    assert template and template[0]["ansible.builtin.template"]["validate"] == "/usr/sbin/nft -c -f %s"
    handlers = yaml.safe_load((ROLE / "handlers" / "main.yml").read_text())
    assert handlers[0]["ansible.builtin.systemd_service"]["state"] == "reloaded"  # never a restart (delete first)


# --------------------------------------------------------------------------- the metrics relay


def _load_relay():
    spec = importlib.util.spec_from_file_location("sgl_metrics_relay", ROLE / "files" / "sgl_metrics_relay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Engine(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        _Engine.seen.append((self.path, self.headers.get("Accept"), self.headers.get("Authorization")))
        body = b"sglang:num_running_reqs 3\n" if self.status == 200 else b"warming up"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def _get(url, method="GET"):
    req = urllib.request.Request(url, method=method, headers={"Accept": "application/openmetrics-text"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type")


def test_relay_serves_metrics_only_and_reports_a_down_engine():
    relay_mod = _load_relay()
    engine = _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Engine))
    relay_mod.Relay.engine_port = engine.server_address[1]
    relay_mod.Relay.timeout_s = 2
    relay = _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), relay_mod.Relay))
    base = f"http://127.0.0.1:{relay.server_address[1]}"
    try:
        status, body, ctype = _get(base + "/metrics")
        assert (status, body, ctype) == (200, b"sglang:num_running_reqs 3\n", "text/plain; version=0.0.4")
        assert _Engine.seen[-1] == ("/metrics", "application/openmetrics-text", None)
        n = len(_Engine.seen)
        for path in ("/v1/models", "/health", "/metrics/../v1/models", "/"):
            assert _get(base + path)[0] == 404, path
        assert _get(base + "/metrics", "POST")[0] == 405
        assert len(_Engine.seen) == n  # nothing but GET /metrics reaches the engine
        _Engine.status = 503  # warming up: the target is down
        assert _get(base + "/metrics")[0] == 503
        _Engine.status = 200
        engine.shutdown()
        engine.server_close()  # engine gone: the target is down (SGLangEngineDown keeps its meaning)
        assert _get(base + "/metrics")[0] == 503
    finally:
        relay.shutdown()
        relay.server_close()
