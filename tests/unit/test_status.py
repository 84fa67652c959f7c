"""`sgl-deploy status`: rows from fake hosts (SSH answer and HTTP replaced), drift from the real planner and
argv builder against a deployed ExecStart line, probes from a reports folder, --json, exit codes."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sgl_deploy import cli, gpu_facts, status
from sgl_deploy import deploy_state
from sgl_deploy.argv import quote_argv, server_argv, split_exec_start

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "gpu" / "h100-80gb-x4"
sys.path.insert(0, str(REPO / "lab" / "engine"))
import sgl_lab_engine  # noqa: E402

XML = (FIX / "nvidia-smi-q-x.txt").read_text()
TOPO = (FIX / "topo.txt").read_text()
LAUNCHER = ["/opt/sglang/current/bin/python", "/opt/sgl-lab/engine/sgl_lab_engine.py"]
HOSTS = """
all:
  children:
    sglang_servers:
      hosts:
        e1: {ansible_host: 10.9.0.11}
        e2: {ansible_host: 10.9.0.12}
    sglang_routers:
      hosts:
        gw: {ansible_host: 10.9.0.20}
"""
GROUP_VARS = {
    "sglang_plan_model_id": "SglLab/MiniMax-M3-Lab",
    "sglang_plan_served_model_name": "MiniMax-M3",
    "sglang_plan_weights_gb": 20,
    "sglang_service_launcher": LAUNCHER,
}


@pytest.fixture
def inventory(tmp_path):
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(HOSTS)
    (inv / "group_vars" / "sglang_servers.yml").write_text(json.dumps(GROUP_VARS))
    return inv


def deployed_exec(host_vars: dict) -> str:
    """The ExecStart line the service role writes for these inventory values (what site.yml deployed)."""
    v = status.resolve_vars({**GROUP_VARS, **host_vars, "inventory_hostname": "e1"}, status.role_defaults())
    ep = status.monitoring.Endpoint("e1", "engine", "10.9.0.11", 8000, 8000, 0, ["e1"])
    facts = gpu_facts.gpu_facts(XML, TOPO)
    plan = status.planned_engine(v, ep, facts, "10.9.0.11", status.HubSizes(1))
    argv = server_argv(plan, plan["parsers"]["tool_call"][0], plan["parsers"]["reasoning"][0])
    return "ExecStart=" + quote_argv(LAUNCHER + argv) + " --config %d/sglang-config.yaml"


class FakeFleet:
    def __init__(self, deployed_vars: dict | None = None):
        self.exec = deployed_exec(deployed_vars or {})
        self.unreachable: set[str] = set()
        self.calls: list[str] = []

    fact: str | None = None  # the sglang.fact text the engines have (None: deployed before the fact)

    def remote(self, hv, service, root, gpus, timeout, fact_path=""):
        host = hv["inventory_hostname"]
        self.calls.append(host)
        if host in self.unreachable:
            return {"error": "ssh rc 255: No route to host"}
        base = {"show": {"ActiveState": "active", "SubState": "running", "NRestarts": "0",
                         "ExecMainStartTimestampMonotonic": "1000000000"},
                "monotonic_now_us": 1000000000 + 3725 * 10**6}
        if service == "sglang":
            assert fact_path == deploy_state.fact_path("sglang") == deploy_state.FACT_PATH
            return {**base, "exec_start": self.exec, "fact": self.fact, "current": "/opt/sglang/venvs/sglang-0.5.23",
                    "smi_xml": XML, "smi_topo": TOPO,
                    "manifest": {"model_id": "SglLab/MiniMax-M3-Lab", "revision": "master"}}
        return {**base, "exec_start": "ExecStart=/opt/sglang-router/current/bin/python x",
                "current": "/opt/sglang-router/venvs/smg-1.13.0"}

    def http(self, url, timeout, ca_file=None):
        if url.endswith(":29000/metrics"):
            return 200, ('smg_worker_health{worker="http://10.9.0.11:8000"} 1\n'
                         'smg_worker_health{worker="http://10.9.0.12:8000"} 1\n')
        if url.endswith("/metrics"):
            metrics = sgl_lab_engine.Metrics()
            metrics.begin()
            return 200, metrics.render("MiniMax-M3", 1000)
        return 200, "{}"


@pytest.fixture
def fleet(monkeypatch):
    fake = FakeFleet()
    monkeypatch.setattr(status, "remote_facts", fake.remote)
    monkeypatch.setattr(status, "http_get", fake.http)
    return fake


def run_status(capsys, *args):
    rc = cli.main(["status", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_converged_fleet_is_healthy_without_drift(inventory, fleet, capsys, tmp_path):
    run_dir = tmp_path / "reports" / "20260101T000000Z" / "e1"
    run_dir.mkdir(parents=True)
    started = (datetime.now(timezone.utc) - timedelta(minutes=3)).isoformat(timespec="seconds")
    (run_dir / "report.json").write_text(json.dumps({"passed": True, "started_at": started}))
    rc, out, err = run_status(capsys, "-i", str(inventory), "--reports", str(tmp_path / "reports"))
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["HOST", "ROLE", "VERSION", "MODEL@REV"]
    e1 = next(line for line in lines if line.startswith("e1 "))
    assert "0.5.23" in e1 and "SglLab/MiniMax-M3-Lab@master" in e1 and "4/1/1" in e1
    assert "healthy" in e1 and "1h02m" in e1 and "1/0" in e1 and "25.6%" in e1
    assert "pass 3m" in e1 and e1.rstrip().endswith("no")
    assert not any(line.startswith("Prometheus:") for line in lines)  # no monitoring group here
    gw = next(line for line in lines if line.startswith("gw "))
    assert "gateway" in gw and "1.13.0" in gw and "workers 2/2" in gw and gw.rstrip().endswith("no")
    assert lines[-1] == "3/3 healthy without drift"
    assert "status: 3/3 hosts answered" in err  # progress on stderr, not in the table
    assert sorted(fleet.calls) == ["e1", "e2", "gw"]


def test_host_vars_change_shows_drift_on_that_host_only(inventory, fleet, capsys):
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "e2.yml").write_text("sglang_plan_mem_fraction_static: 0.8\n")
    rc, out, _ = run_status(capsys, "-i", str(inventory), "--json")
    assert rc == 1
    rows = {r["host"]: r for r in json.loads(out)["rows"]}
    assert rows["e1"]["drift"] == [] and rows["gw"]["drift"] == []
    # the planner also derives the context length from the memory fraction
    # (M3 bf16 on H100 under the default cookbook recipe: its fraction for that build, 0.75)
    assert rows["e2"]["drift"][0] == "--mem-fraction-static 0.75 -> 0.8"
    assert all(d.startswith(("--mem-fraction-static", "--context-length")) for d in rows["e2"]["drift"])


def test_extra_arg_and_launcher_drift(inventory, fleet, capsys):
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "e1.yml").write_text(json.dumps({
        "sglang_plan_extra_args": ["--enable-torch-compile"],
        "sglang_service_launcher": ["/opt/sglang/current/bin/python", "-m", "sglang.launch_server"]}))
    rc, out, _ = run_status(capsys, "-i", str(inventory), "--json")
    e1 = next(r for r in json.loads(out)["rows"] if r["host"] == "e1")
    assert "add --enable-torch-compile" in e1["drift"]
    assert any(d.startswith("launcher ") for d in e1["drift"]) and rc == 1


def test_prometheus_url_from_the_monitoring_group(inventory, fleet, capsys):
    (inventory / "hosts.yml").write_text(HOSTS + "    monitoring:\n      hosts:\n        mon: {ansible_host: 10.9.0.21}\n")
    rc, out, _ = run_status(capsys, "-i", str(inventory))
    assert out.splitlines()[-1] == "Prometheus: http://10.9.0.21:9090 (alerts: http://10.9.0.21:9090/alerts)"
    assert "mon" not in fleet.calls and rc == 0
    rc, out, _ = run_status(capsys, "-i", str(inventory), "--json")
    assert json.loads(out)["prometheus"] == ["http://10.9.0.21:9090"]


def test_unreachable_host_is_a_row_not_a_crash(inventory, fleet, capsys):
    fleet.unreachable.add("e2")
    rc, out, _ = run_status(capsys, "-i", str(inventory))
    assert rc == 1
    e2 = next(line for line in out.splitlines() if line.startswith("e2 "))
    assert "unreachable" in e2 and "No route to host" in e2 and e2.rstrip().endswith("unknown")


def test_bad_inventory_exits_2(tmp_path, capsys):
    rc, _, err = run_status(capsys, "-i", str(tmp_path / "missing.yml"))
    assert rc == 2 and "no inventory" in err
    (tmp_path / "empty.yml").write_text("all:\n  hosts:\n    x: {}\n")
    rc, _, err = run_status(capsys, "-i", str(tmp_path / "empty.yml"))
    assert rc == 2 and "has no host in sglang_servers or sglang_routers" in err


def test_split_exec_start_inverts_quote_argv():
    argv = ["/opt/x/python", "--served-model-name", "my model", "--x", 'a"b\\c', "--p", "50%", "--d", "$HOME"]
    assert split_exec_start("ExecStart=" + quote_argv(argv)) == argv


def test_argv_drift_wording():
    assert status.argv_drift(["--tp-size", "4", "--a"], ["--tp-size", "2", "--b", "x"]) == [
        "--tp-size 4 -> 2", "add --b x", "drop --a"]


def test_fmt_age():
    assert [status.fmt_age(s) for s in (None, 5, 185, 7300, 90000)] == ["-", "5s", "3m05s", "2h01m", "1d01h"]


def _fact(exec_line: str, model_id: str = "SglLab/MiniMax-M3-Lab", version: str = "0.5.23") -> str:
    plan = {"model_id": model_id, "model_revision": "v2", "model_path": "/srv/models/x", "port": 8000,
            "served_model_name": "MiniMax-M3", "sglang_version": version}
    install = {"version": version, "venv_path": f"/opt/sglang/venvs/sglang-{version}"}
    return json.dumps(deploy_state.build(plan, install, exec_line[len("ExecStart="):], "sglang.service"))


def test_status_reads_the_fact_before_the_unit(inventory, fleet, capsys):
    """The fact is the deploy state: a unit line that says otherwise is not read."""
    fleet.fact = _fact(fleet.exec)
    fleet.exec = "ExecStart=/usr/bin/false --model-path /elsewhere --tp-size 1"
    rc, out, _ = run_status(capsys, "-i", str(inventory), "--json")
    rows = {r["host"]: r for r in json.loads(out)["rows"]}
    assert rows["e1"]["state_source"] == "fact"
    assert rows["e1"]["drift"] == [] and rows["e1"]["model"] == "SglLab/MiniMax-M3-Lab@v2", rows["e1"]
    assert rc == 0, out


def test_status_falls_back_to_the_unit_without_a_fact(inventory, fleet, capsys):
    fleet.fact = "not json"
    rc, out, _ = run_status(capsys, "-i", str(inventory), "--json")
    rows = {r["host"]: r for r in json.loads(out)["rows"]}
    assert rows["e1"]["state_source"] == "unit" and rows["e1"]["drift"] == []
    assert rows["e1"]["model"] == "SglLab/MiniMax-M3-Lab@master"  # from the weights manifest
    assert rc == 0, out


def test_gateway_tls_set_by_a_lookup_status_cannot_render_is_still_https(monkeypatch):
    """The lab (and a vaulted PEM) gives sglang_router_tls_cert as a template status cannot render: the
    gateway is still spoken to over https, never plain HTTP to its TLS port."""
    from sgl_deploy import monitoring
    import argparse

    raw = {"inventory_hostname": "gw", "ansible_host": "10.9.9.9",
           "sglang_router_tls_cert": "{{ lookup('ansible.builtin.file', '/x/gw.crt') }}",
           "sglang_router_tls_ca_file": "/x/ca.crt"}
    v = status.resolve_vars(raw, {"sglang_router_tls_cert": "", "sglang_router_tls_cert_path": ""})
    assert v["sglang_router_tls_cert"] is None  # not renderable here
    seen = []
    monkeypatch.setattr(status, "remote_facts", lambda *a, **k: {"show": {"ActiveState": "active"}, "current": "/o/smg-1.13.0",
                                                                  "exec_start": "x"})
    monkeypatch.setattr(status, "http_get", lambda url, timeout, ca_file=None: (seen.append((url, ca_file)), (200, ""))[1])
    ep = monitoring.endpoints([], ["gw"], {"gw": v})[0]
    row = status.gateway_row(v, ep, argparse.Namespace(timeout=3))
    assert seen[0] == ("https://10.9.9.9:30000/health", "/x/ca.crt"), seen
    assert row["url"].startswith("https://") and row["health"] == "healthy", row


def test_http_get_plain_http_to_a_tls_port_is_an_answer_not_a_crash(tmp_path):
    """A TLS server answers a plain HTTP request with an alert (http.client.BadStatusLine): no code, no raise."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.recv(1024)
        conn.sendall(b"\x15\x03\x03\x00\x02\x02\x32")  # what a TLS server sends
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    code, text = status.http_get(f"http://127.0.0.1:{port}/health", 5)
    srv.close()
    assert code is None and text


def test_unauthenticated_on_purpose_is_said_loudly(inventory, fleet, capsys):
    rc, out, _err = run_status(capsys, "-i", str(inventory))
    assert "UNAUTHENTICATED" not in out  # no opt-out: the validation made sure a key is set
    (inventory / "group_vars" / "all.yml").write_text(json.dumps({"sglang_service_allow_unauthenticated": True,
                                                                  "sglang_router_allow_unauthenticated": True}))
    rc, out, _err = run_status(capsys, "-i", str(inventory))
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("e1 ")).split()[1:3] == ["engine", "UNAUTHENTICATED"]
    assert "gateway UNAUTHENTICATED" in next(line for line in lines if line.startswith("gw "))
    assert lines[-1].startswith("UNAUTHENTICATED: e1, e2, gw serve(s) without an API key"), lines[-1]
    # the gateway keeps its own key: only the engines are open
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "gw.yml").write_text("sglang_router_api_key: gw-key\n")
    rc, out, _err = run_status(capsys, "-i", str(inventory))
    assert out.splitlines()[-1].startswith("UNAUTHENTICATED: e1, e2 serve(s)"), out
