#!/usr/bin/env python3
"""Test-only ModelScope-protocol hub for the lab and the unit tests (stdlib only).

Serves every repo under ``--root`` laid out as ``<root>/<owner>/<name>/<files>`` for any
revision, with the contract of the ModelScope reference, modelscope.md §8 (listing with Sha256,
file GET with Range/206/416, 404 JSON, model info, /revisions for the old engine).

The protocol itself is the production LAN mirror's (plugins/module_utils/sgl_weights.py, the
shared code of the sgl_model_weights module, the role's tool and ``sgl-deploy weights``, imported
by path): this file only adds a directory-tree catalog, fault switches and a control endpoint.

Fault switches (CLI flags, or at runtime ``POST /_lab/faults`` with a JSON object; ``GET
/_lab/faults`` shows them, ``POST /_lab/faults/reset`` clears them; a key set to null clears it):

  drop            {"path": GLOB, "after": N, "times": K}  cut the connection after N body bytes of a
                  matching file, K times (0 = always)
  wrong_sha256    [GLOB, ...]   advertise a wrong Sha256 for these files in the listing
  throttle_bps    N             limit the body rate (bytes/s); 0/null = unlimited
  throttle_scope  "global" | "connection"
  down            null | "close" (close every API request unanswered) | "503"
  ignore_range    bool          answer Range requests with 200 + the whole file

Access log: one JSON object per request (ts, client, method, path, query, range, status, file,
start, bytes, size, complete) appended to ``--access-log``.

  python lab/hub/server.py --root DIR --host 0.0.0.0 --port 18080 --access-log FILE [faults...]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

ROLE_TOOL = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "sgl_weights.py"


def _load_protocol():
    """The production mirror's protocol module (one implementation for mirror and lab hub)."""
    name = "sgl_weights_protocol"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROLE_TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


proto = _load_protocol()

FAULT_DEFAULTS = {
    "drop": None,
    "wrong_sha256": [],
    "throttle_bps": 0,
    "throttle_scope": "global",
    "down": None,
    "ignore_range": False,
}


class TreeCatalog:
    """Repos from ``<root>/<owner>/<name>/``; every revision serves the same tree.
    Sha256 is computed on first listing and cached per (path, size, mtime)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._sha: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def _repo_dir(self, model_id: str) -> Path | None:
        owner, _, name = model_id.partition("/")
        if not owner or not name or owner.startswith(".") or name.startswith("."):
            return None
        repo = self.root / owner / name
        return repo if repo.is_dir() else None

    def has_model(self, model_id: str) -> bool:
        return self._repo_dir(model_id) is not None

    def _sha256(self, path: Path, st) -> str:
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._sha:
                return self._sha[key]
        digest = proto.sha256_file(path)
        with self._lock:
            self._sha[key] = digest
        return digest

    def entries_for(self, model_id: str, revision: str):
        repo = self._repo_dir(model_id)
        if repo is None:
            return None
        entries = {}
        for dirpath, dirnames, filenames in os.walk(repo):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith("."):
                    continue
                local = Path(dirpath) / fn
                st = local.stat()
                rel = local.relative_to(repo).as_posix()
                entries[rel] = proto.RepoEntry(rel, st.st_size, self._sha256(local, st), local)
        return entries


# the production mirror's token bucket (sgl_weights.RateLimiter): one throttle for the hub and the LAN copies
RateLimiter = proto.RateLimiter


class LabHandler(proto.HubHandler):
    def _control(self) -> bool:
        if not self.path.startswith("/_lab/"):
            return False
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.rstrip("/") == "/_lab/faults/reset":
                self.server.set_faults(None)
            elif self.path.rstrip("/") == "/_lab/faults":
                try:
                    self.server.set_faults(json.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    self.send_json(400, {"Code": 400, "Message": f"bad faults: {exc}"})
                    return True
            else:
                self.not_found(f"no such lab path {self.path}")
                return True
        elif self.path.rstrip("/") != "/_lab/faults":
            self.not_found(f"no such lab path {self.path}")
            return True
        self.send_json(200, {"faults": self.server.get_faults()})
        return True

    def do_GET(self):
        if not self._control():
            super().do_GET()

    def do_POST(self):
        if not self._control():
            self.send_json(405, {"Code": 405, "Message": "method not allowed"})


class LabHubServer(proto.HubServer):
    handler_class = LabHandler

    def __init__(self, address, root: Path, access_log: str | None = None, faults: dict | None = None):
        self._faults_lock = threading.Lock()
        self._drops_done: dict[str, int] = {}
        self.faults = dict(FAULT_DEFAULTS)
        self._global_limiter = None
        super().__init__(address, TreeCatalog(root), access_log=access_log)
        if faults:
            self.set_faults(faults)

    # -- fault state --------------------------------------------------------
    def set_faults(self, update: dict | None) -> None:
        with self._faults_lock:
            if update is None:
                self.faults = dict(FAULT_DEFAULTS)
                self._drops_done.clear()
            else:
                unknown = set(update) - set(FAULT_DEFAULTS)
                if unknown:
                    raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULT_DEFAULTS)}")
                for key, value in update.items():
                    self.faults[key] = FAULT_DEFAULTS[key] if value is None else value
                    if key == "drop":
                        self._drops_done.clear()
            bps = self.faults["throttle_bps"]
            self._global_limiter = RateLimiter(bps) if bps else None

    def get_faults(self) -> dict:
        with self._faults_lock:
            return json.loads(json.dumps(self.faults))

    # -- hooks --------------------------------------------------------------
    def reject(self, handler) -> bool:
        down = self.faults["down"]
        if not down:
            return False
        if down == "503":
            handler.send_json(503, {"Code": 503, "Message": "lab hub is down (fault switch)", "Success": False})
        else:
            handler.close_connection = True
            handler.access(status=0, bytes=0, fault="down-close")
        return True

    def listing_sha256(self, model_id, entry):
        if any(fnmatch.fnmatch(entry.path, g) for g in self.faults["wrong_sha256"] or ()):
            return hashlib.sha256(b"wrong:" + entry.path.encode()).hexdigest()
        return entry.sha256

    def honour_range(self, handler) -> bool:
        return not self.faults["ignore_range"]

    def _drop_after(self, path: str) -> int | None:
        rule = self.faults["drop"]
        if not rule or not fnmatch.fnmatch(path, rule.get("path", "*")):
            return None
        with self._faults_lock:
            done = self._drops_done.get(path, 0)
            times = int(rule.get("times", 1))
            if times and done >= times:
                return None
            self._drops_done[path] = done + 1
        return int(rule.get("after", 0))

    def send_body(self, handler, f, entry, start, length):
        bps = self.faults["throttle_bps"]
        limiter = None
        if bps:
            limiter = self._global_limiter if self.faults["throttle_scope"] == "global" else RateLimiter(bps)
        drop_after = self._drop_after(entry.path)
        limit = length if drop_after is None else min(length, drop_after)
        chunk = 1 << 20 if not bps else max(4096, min(64 << 10, int(bps) // 20))
        sent = 0
        try:
            while sent < limit:
                block = f.read(min(chunk, limit - sent))
                if not block:
                    break
                if limiter:
                    limiter.consume(len(block))
                handler.wfile.write(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
            return sent
        if sent < length:  # the drop fault: cut the connection mid-body
            handler.wfile.flush()
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return sent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Test-only ModelScope-protocol hub (lab, unit tests).")
    p.add_argument("--root", required=True, type=Path, help="dir with <owner>/<name>/ repos")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    p.add_argument("--access-log", help="JSON-lines access log file")
    p.add_argument("--drop-file", default="*", metavar="GLOB", help="files the drop fault applies to")
    p.add_argument("--drop-after", type=int, metavar="N", help="cut the connection after N body bytes")
    p.add_argument("--drop-times", type=int, default=1, metavar="K", help="how many times per file (0 = always)")
    p.add_argument("--wrong-sha256", action="append", default=[], metavar="GLOB")
    p.add_argument("--throttle", type=int, default=0, metavar="BPS", help="bytes/s (0 = unlimited)")
    p.add_argument("--throttle-scope", choices=("global", "connection"), default="global")
    p.add_argument("--down", choices=("close", "503"))
    p.add_argument("--ignore-range", action="store_true")
    return p


def faults_from_args(args) -> dict:
    faults = {
        "wrong_sha256": args.wrong_sha256,
        "throttle_bps": args.throttle,
        "throttle_scope": args.throttle_scope,
        "down": args.down,
        "ignore_range": args.ignore_range,
    }
    if args.drop_after is not None:
        faults["drop"] = {"path": args.drop_file, "after": args.drop_after, "times": args.drop_times}
    return faults


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    server = LabHubServer((args.host, args.port), args.root, access_log=args.access_log, faults=faults_from_args(args))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"listening": f"http://{args.host}:{server.server_address[1]}", "root": str(args.root),
                      "faults": server.get_faults()}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
