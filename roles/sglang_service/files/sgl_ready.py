#!/usr/bin/env python3
"""Readiness check for an SGLang unit (shipped by the sglang_service role; stdlib only).

Prints one JSON object for the controller-side `sgl_poll` action:
  {"done": bool, "failed": bool, "line": "...", "msg": "..."}
Ready means, in order: the unit is active, the port is bound (SGLang binds it only after the
weights are loaded), GET /health is 200 (503 during warmup), GET /v1/models lists the served name.
Fails at once (not at the deadline) when the unit failed, is waiting to auto-restart, or has
restarted since the gate began (--restarts-baseline), with the journal's last lines.
Ranks >= 1 of a multi-node group (--worker) serve no HTTP: ready means the unit is active and,
with --dist-init-addr, holds an established TCP connection to rank 0's rendezvous address (torch's
TCP store client keeps one open for the life of the process group).
Never calls /server_info (it echoes the API key).
"""

import argparse
import json
import re
import socket
import subprocess
import urllib.error
import urllib.request

PROGRESS = re.compile(
    r"(Load weight|Loading safetensors|checkpoint shards|KV Cache|[Cc]apture|cuda graph|warmup|fired up|"
    r"ready to roll|Uvicorn running|Traceback|Exception|ERROR)"
)


def unit_state(unit: str) -> dict:
    out = subprocess.run(
        ["systemctl", "show", unit, "-p", "ActiveState,SubState,NRestarts,ExecMainStatus,ExecMainPID"],
        capture_output=True, text=True, check=False,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(unit: str, lines: int, since: str | None) -> list[str]:
    cmd = ["journalctl", "-u", unit, "-n", str(lines), "-o", "cat", "--no-pager"]
    if since:
        cmd += ["--since", since]
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()


def split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port)."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _proc_ip(hex_addr: str, family: int) -> str:
    """An address as /proc/net/tcp{,6} prints it (host byte order per 32-bit word) -> text."""
    raw = bytes.fromhex(hex_addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    text = socket.inet_ntop(family, raw)
    return text[7:] if text.startswith("::ffff:") and "." in text else text


def connected_to(addr: str, tables=("/proc/net/tcp", "/proc/net/tcp6")) -> bool:
    """Whether this host has an ESTABLISHED TCP connection to ``addr`` (host:port)."""
    host, port = split_addr(addr)
    try:
        ips = {info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except OSError:
        return False
    for table in tables:
        family = socket.AF_INET6 if table.endswith("6") else socket.AF_INET
        try:
            with open(table, encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 4 or cols[3] != "01":  # 01 = ESTABLISHED
                continue
            rem_ip, rem_port = cols[2].split(":")
            if int(rem_port, 16) == port and _proc_ip(rem_ip, family) in ips:
                return True
    return False


def api_key(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("api-key:"):
                    return line.split(":", 1)[1].strip().strip("'\"")
    except OSError:
        return None
    return None


def http(url: str, key: str | None, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--unit", required=True)
    p.add_argument("--port", type=int, help="HTTP port (rank 0 and single hosts)")
    p.add_argument("--model", help="served model name expected in /v1/models (rank 0 and single hosts)")
    p.add_argument("--key-file")
    p.add_argument("--since", help="journal start (e.g. '@<epoch>') for progress lines")
    p.add_argument("--restarts-baseline", type=int, default=None)
    p.add_argument("--worker", action="store_true", help="rank >= 1 of a multi-node group: no HTTP, active is ready")
    p.add_argument("--dist-init-addr", default="",
                   help="with --worker: also wait for a connection to rank 0's rendezvous (host:port)")
    a = p.parse_args()
    if not a.worker and (a.port is None or not a.model):
        p.error("--port and --model are required without --worker")

    st = unit_state(a.unit)
    active, sub = st.get("ActiveState", "?"), st.get("SubState", "?")
    restarts = int(st.get("NRestarts", "0") or 0)
    recent = journal(a.unit, 200, a.since)
    progress = [ln for ln in recent if PROGRESS.search(ln)]
    last = (progress or recent or [""])[-1][:200]

    def fail(why: str) -> int:
        tail = "\n".join(journal(a.unit, 25, a.since))
        print(json.dumps({"done": False, "failed": True, "line": f"{a.unit}: {active}/{sub}",
                          "msg": f"{a.unit} {why} (ActiveState={active} SubState={sub} "
                                 f"ExecMainStatus={st.get('ExecMainStatus')} NRestarts={restarts}). "
                                 f"Last journal lines:\n{tail}"}))
        return 0

    if active == "failed" or sub == "auto-restart":
        return fail("exited instead of starting")
    if a.restarts_baseline is not None and restarts > a.restarts_baseline:
        return fail(f"crashed and was restarted by systemd ({restarts - a.restarts_baseline} time(s))")
    if active != "active":
        print(json.dumps({"done": False, "failed": False, "line": f"unit {active}/{sub}"}))
        return 0
    if a.worker:
        if a.dist_init_addr and not connected_to(a.dist_init_addr):
            print(json.dumps({"done": False, "failed": False,
                              "line": f"active, not connected to rank 0's rendezvous {a.dist_init_addr} yet: {last}"}))
            return 0
        joined = f", joined rank 0's rendezvous {a.dist_init_addr}" if a.dist_init_addr else ""
        print(json.dumps({"done": True, "failed": False, "line": f"worker rank active{joined} (no HTTP on ranks >= 1)"}))
        return 0
    with socket.socket() as s:
        s.settimeout(1)
        bound = s.connect_ex(("127.0.0.1", a.port)) == 0
    if not bound:
        print(json.dumps({"done": False, "failed": False, "line": f"loading (port {a.port} not bound yet): {last}"}))
        return 0
    code, _ = http(f"http://127.0.0.1:{a.port}/health", None, 30)
    if code != 200:
        print(json.dumps({"done": False, "failed": False, "line": f"warming up (/health {code or 'no answer'}): {last}"}))
        return 0
    code, body = http(f"http://127.0.0.1:{a.port}/v1/models", api_key(a.key_file), 10)
    ids = []
    if code == 200:
        try:
            ids = [m.get("id") for m in json.loads(body).get("data", [])]
        except ValueError:
            ids = []
    if a.model not in ids:
        print(json.dumps({"done": False, "failed": False,
                          "line": f"/v1/models answered {code or 'nothing'} with {ids}, waiting for {a.model!r}"}))
        return 0
    print(json.dumps({"done": True, "failed": False, "line": f"ready: /health 200, /v1/models lists {a.model!r}"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
