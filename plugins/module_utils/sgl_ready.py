"""The SGLang readiness check: the code of the module and action ``sgl_ready`` (plugins/modules,
plugins/action), and the one copy of :func:`connected_to`, which the group watchdog imports too
(roles/sglang_watchdog/files/sgl_ready.py is a link to this file, shipped next to the watchdog).

Stdlib only (it runs on the host). Ready means, in order: the unit is active, the port is bound
(SGLang binds it only after the weights are loaded), GET /health is 200 (503 during warmup), GET
/v1/models lists the served name. It fails at once (not at the deadline) when the unit failed, is
waiting to auto-restart, or restarted since the gate began (``restarts_baseline``), with the
journal's last lines. Ranks >= 1 of a multi-node group (``worker``) serve no HTTP: ready means the
unit is active and, with ``dist_init_addr``, holds an established TCP connection to rank 0's
rendezvous address (torch's TCP store client keeps one open for the life of the process group).
Never calls /server_info (it echoes the API key).
"""

from __future__ import annotations

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


def connected_to(host: str, port: int, tables=("/proc/net/tcp", "/proc/net/tcp6")) -> bool:
    """Whether this host holds an ESTABLISHED TCP connection to ``host:port``."""
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
    """``api-key`` from the service role's config file (``api-key: "<json string>"``); None: no file or no key."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("api-key:"):
                    raw = line.split(":", 1)[1].strip()
                    try:
                        value = json.loads(raw)
                    except ValueError:
                        value = raw.strip("'\"")
                    return str(value) if value else None
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


def port_bound(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def check(unit: str, port: int | None = None, model: str | None = None, key_file: str | None = None,
          since: str | None = None, restarts_baseline: int | None = None, worker: bool = False,
          dist_init_addr: str = "", probe=None) -> dict:
    """One readiness check -> {"ready": bool, "crashed": bool, "line": progress, "msg": why it crashed}.

    ``probe`` overrides the side effects (unit tests): an object with unit_state, journal,
    connected_to, port_bound and http, each like the functions of this module."""
    io = probe or _Host()
    st = io.unit_state(unit)
    active, sub = st.get("ActiveState", "?"), st.get("SubState", "?")
    restarts = int(st.get("NRestarts", "0") or 0)
    recent = io.journal(unit, 200, since)
    progress = [ln for ln in recent if PROGRESS.search(ln)]
    last = (progress or recent or [""])[-1][:200]

    def crashed(why: str) -> dict:
        tail = "\n".join(io.journal(unit, 25, since))
        return {"ready": False, "crashed": True, "line": f"{unit}: {active}/{sub}",
                "msg": f"{unit} {why} (ActiveState={active} SubState={sub} ExecMainStatus={st.get('ExecMainStatus')} "
                       f"NRestarts={restarts}). Last journal lines:\n{tail}"}

    def waiting(line: str) -> dict:
        return {"ready": False, "crashed": False, "line": line, "msg": ""}

    if active == "failed" or sub == "auto-restart":
        return crashed("exited instead of starting")
    if restarts_baseline is not None and restarts > restarts_baseline:
        return crashed(f"crashed and was restarted by systemd ({restarts - restarts_baseline} time(s))")
    if active != "active":
        return waiting(f"unit {active}/{sub}")
    if worker:
        if dist_init_addr and not io.connected_to(*split_addr(dist_init_addr)):
            return waiting(f"active, not connected to rank 0's rendezvous {dist_init_addr} yet: {last}")
        joined = f", joined rank 0's rendezvous {dist_init_addr}" if dist_init_addr else ""
        return {"ready": True, "crashed": False, "line": f"worker rank active{joined} (no HTTP on ranks >= 1)", "msg": ""}
    if not io.port_bound(port):
        return waiting(f"loading (port {port} not bound yet): {last}")
    code, _ = io.http(f"http://127.0.0.1:{port}/health", None, 30)
    if code != 200:
        return waiting(f"warming up (/health {code or 'no answer'}): {last}")
    code, body = io.http(f"http://127.0.0.1:{port}/v1/models", api_key(key_file), 10)
    ids = []
    if code == 200:
        try:
            ids = [m.get("id") for m in json.loads(body).get("data", [])]
        except (ValueError, AttributeError):
            ids = []
    if model not in ids:
        return waiting(f"/v1/models answered {code or 'nothing'} with {ids}, waiting for {model!r}")
    return {"ready": True, "crashed": False, "line": f"ready: /health 200, /v1/models lists {model!r}", "msg": ""}


class _Host:
    """The real side effects of :func:`check`."""

    unit_state = staticmethod(unit_state)
    journal = staticmethod(journal)
    connected_to = staticmethod(connected_to)
    port_bound = staticmethod(port_bound)
    http = staticmethod(http)
