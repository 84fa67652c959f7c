"""Helpers shared by the weights/hub tests and scripts/bench/weights.py (test-only).

- ``sglang_python()``: the python with the real ModelScope client (the SGLang venv).
- ``make_repo()``: run make_repo.py with that python (it needs ``tokenizers``).
- ``Hub``: the lab hub (server.py) in a thread of this process, on a free port.
- ``run_tool()`` / ``start_tool()``: the role's sgl_weights.py with the SGLang python.
- ``access()``: the hub's JSON access log as a list of dicts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
TOOL = REPO_ROOT / "roles" / "model_weights" / "files" / "sgl_weights.py"
MAKE_REPO = HERE / "make_repo.py"

def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


server = _load("sgl_lab_hub_server", HERE / "server.py")

proto = server.proto  # the role's sgl_weights module (protocol, manifest, progress helpers)


def sglang_python() -> Path | None:
    """SGL_SGLANG_PYTHON, else <repo>/.venv-sglang/bin/python; None when absent."""
    cand = Path(os.environ.get("SGL_SGLANG_PYTHON") or REPO_ROOT / ".venv-sglang" / "bin" / "python")
    return cand if cand.exists() else None


def make_repo(root: Path, model: str = "m3", shards: int = 2, shard_mib: float = 4) -> dict:
    py = sglang_python()
    out = subprocess.run(
        [str(py), str(MAKE_REPO), "--root", str(root), "--model", model, "--shards", str(shards),
         "--shard-mib", str(shard_mib)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def tool_env(home: Path | None = None, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("MODELSCOPE_ENDPOINT", None)
    env.pop("MODELSCOPE_DOMAIN", None)
    if home is not None:  # the client writes a session id under $HOME/.modelscope
        env["HOME"] = str(home)
    env.update(extra or {})
    return env


def run_tool(*args, env: dict | None = None, timeout: float = 300) -> tuple[int, dict, str]:
    """Run sgl_weights.py <args> with the SGLang python; -> (rc, json_result, stderr)."""
    proc = subprocess.run([str(sglang_python()), str(TOOL), *map(str, args)], capture_output=True, text=True,
                          env=env or tool_env(), timeout=timeout)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    return proc.returncode, json.loads(last), proc.stderr


def start_tool(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([str(sglang_python()), str(TOOL), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or tool_env())


class Hub:
    """The lab hub on <host>:<free port> (default 127.0.0.1), served from a thread of this process."""

    def __init__(self, root: Path, access_log: Path, faults: dict | None = None, port: int = 0,
                 host: str = "127.0.0.1"):
        self.access_log = Path(access_log)
        self.server = server.LabHubServer((host, port), Path(root), access_log=str(access_log), faults=faults)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def faults(self, **update) -> dict:
        """Flip fault switches through the control endpoint (as a test in the lab would)."""
        req = urllib.request.Request(f"{self.url}/_lab/faults", data=json.dumps(update).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["faults"]

    def stop(self) -> None:
        """Stop listening: the port refuses connections afterwards (a dead hub)."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def access(log: Path) -> list[dict]:
    try:
        with open(log, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def file_gets(log: Path) -> list[dict]:
    """Access-log records of file downloads (not listings)."""
    return [r for r in access(log) if r.get("file") and r["method"] == "GET"]
