"""The gateway-only firewall on the converged main lab (fixture `site`; roles/sglang_firewall, docs/firewall.md).

The lab has a gateway (labrouter), so the firewall is on by default on lab1 and lab2: their engine port
(8000) answers the gateway and the controller (10.77.0.1) only; labmon, the Prometheus host, is neither and
gets a connection refused there, while it scrapes the metrics relay (9480). Probes from the controller and
through the gateway pass, a rerun of the role changes nothing, another table of the host survives every
run, and switching the firewall off deletes only the toolkit's table (then it is switched on again).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request

from conftest import playbook, ssh

LAB1, LAB2, ROUTER, MON = "10.77.0.11", "10.77.0.12", "10.77.0.20", "10.77.0.21"
ENGINE_PORT, RELAY_PORT = 8000, 9480
PROM = f"http://{MON}:9090"
LAB_CA = "/var/lib/sgl-lab/tls/ca.crt"  # the lab gateway serves TLS (labctl up makes the CA)
KEY = "lab-secret-key"  # inventory/lab/group_vars/sglang_servers.yml
# another table with an input chain, as an existing firewall has (nft command syntax: one line, ';' between)
OTHER_TABLE = ("add table inet labother; add chain inet labother input { type filter hook input priority 10; "
               "policy accept; }; add rule inet labother input counter")

CONNECT = """python3 - <<'EOF'
import socket, sys, urllib.request
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("{addr}", {port}))
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("timeout" if isinstance(exc, TimeoutError) else f"error {{exc}}")
else:
    s.close()
    with urllib.request.urlopen("http://{addr}:{port}{path}", timeout=5) as r:
        print("http", r.status, r.read(2000).decode(errors="replace").count("sglang:"))
EOF"""


def reach(from_addr: str, addr: str, port: int, path: str = "/health") -> str:
    """What a connection from lab host ``from_addr`` to ``addr:port`` gets: refused, timeout, or 'http <status> ...'."""
    return ssh(from_addr, CONNECT.format(addr=addr, port=port, path=path)).strip()


def local_get(url: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    context = ssl.create_default_context(cafile=LAB_CA) if url.startswith("https:") else None
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10, context=context) as resp:
        return resp.status


def firewall_run(*extra: str):
    return playbook("playbooks/firewall.yml", *extra)


def test_table_is_loaded_by_its_unit(site):
    for addr in (LAB1, LAB2):
        out = ssh(addr, "systemctl is-active sgl-firewall.service sgl-metrics-relay.service; nft list table inet sglang")
        assert out.startswith("active\nactive\n"), out
        assert f"tcp dport {ENGINE_PORT} counter packets" in out and "reject with tcp reset" in out, out


def test_engine_port_only_from_gateway_and_controller(site):
    # labmon is neither gateway nor controller (test_labmon_reaches_lab1_otherwise: the refusal is the firewall's)
    assert reach(MON, LAB1, ENGINE_PORT) == "refused"
    assert reach(MON, LAB2, ENGINE_PORT) == "refused"
    assert reach(LAB2, LAB1, ENGINE_PORT) == "refused"  # another engine host is no gateway either
    assert reach(ROUTER, LAB1, ENGINE_PORT).startswith("http 200"), "the gateway must reach the worker"
    assert local_get(f"http://{LAB1}:{ENGINE_PORT}/health") == 200  # the controller
    assert local_get(f"http://{LAB2}:{ENGINE_PORT}/health") == 200


def test_labmon_reaches_lab1_otherwise(site):
    """The control for the refusal above: labmon reaches lab1's sshd (the table filters two ports only)."""
    out = ssh(MON, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{LAB1}/22 && head -c 4 <&3'", check=False)
    assert out.startswith("SSH-"), out


def test_monitoring_reaches_the_relay_only(site):
    got = reach(MON, LAB1, RELAY_PORT, "/metrics")
    assert got.startswith("http 200") and int(got.split()[2]) > 0, got  # SGLang's sglang: metrics
    assert reach(LAB2, LAB1, RELAY_PORT, "/metrics") == "refused"
    assert ssh(MON, f"curl -s -o /dev/null -w '%{{http_code}}' http://{LAB1}:{RELAY_PORT}/v1/models") == "404"

    def targets():
        active = json.loads(urllib.request.urlopen(PROM + "/api/v1/targets?state=active", timeout=10).read())
        return {t["labels"].get("instance_name"): t for t in active["data"]["activeTargets"]
                if t["labels"]["job"] == "sglang"}

    deadline = time.monotonic() + 60
    while not all(t["health"] == "up" for t in targets().values()) and time.monotonic() < deadline:
        time.sleep(2)
    seen = targets()
    assert {h: (t["health"], t["scrapeUrl"]) for h, t in seen.items()} == {
        "lab1": ("up", f"http://{LAB1}:{RELAY_PORT}/metrics"), "lab2": ("up", f"http://{LAB2}:{RELAY_PORT}/metrics")}


def test_probes_from_the_controller_and_through_the_gateway(site):
    for host in ("lab1", "lab2", "router"):
        report = json.loads((site.reports / host / "report.json").read_text())
        assert report["passed"], report
    assert local_get(f"https://{ROUTER}:30000/v1/models", KEY) == 200


def test_rerun_changes_nothing_and_keeps_other_tables(site):
    ssh(LAB1, f"nft '{OTHER_TABLE}'")
    try:
        run = firewall_run()
        assert run.rc == 0, run.out[-4000:]
        assert run.changed("lab1") == 0 and run.changed("lab2") == 0, run.out[-4000:]
        assert "table inet labother" in ssh(LAB1, "nft list tables")
    finally:
        ssh(LAB1, "nft delete table inet labother", check=False)


def test_off_deletes_only_its_table_then_on_again(site):
    ssh(LAB1, f"nft '{OTHER_TABLE}'")
    try:
        run = firewall_run("--limit", "lab1", "-e", '{"sglang_firewall_enabled": false}')
        assert run.rc == 0 and run.changed("lab1") > 0, run.out[-4000:]
        tables = ssh(LAB1, "nft list tables")
        assert "table inet sglang" not in tables and "table inet labother" in tables, tables
        assert reach(MON, LAB1, ENGINE_PORT).startswith("http 200")  # open again
        assert ssh(LAB1, "ls /etc/systemd/system/sgl-firewall.service /etc/sglang/firewall.nft 2>&1", check=False).count(
            "No such file") == 2
    finally:
        run = firewall_run("--limit", "lab1")
        ssh(LAB1, "nft delete table inet labother", check=False)
    assert run.rc == 0, run.out[-4000:]
    assert reach(MON, LAB1, ENGINE_PORT) == "refused"
    assert reach(MON, LAB1, RELAY_PORT, "/metrics").startswith("http 200")
