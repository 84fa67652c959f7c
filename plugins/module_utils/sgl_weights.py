#!/usr/bin/env python3
"""sgl_weights: the model weights tool of the ``model_weights`` role.

Runs on each GPU host with the SGLang venv's python (stdlib + ``modelscope``, or
``huggingface_hub`` for the Hugging Face mode). Every subcommand prints ONE JSON object on
stdout (errors too: ``{"failed": true, "rc": N, "msg": ...}``) and exits with a distinct code.

Subcommands:
  listing       hub file listing (exact total size) + free-space check for --dir
  status        marker + manifest + on-disk sizes (stat only; never contacts the hub)
  fetch         download with the real client into --dir, then MANIFEST.json, then the marker
  verify        rehash every file against MANIFEST.json; --delete-bad / --repair
  progress      one progress report of a running fetch (JSON with done/failed/line/msg)
  serve-mirror  serve a weights dir over HTTP with the ModelScope protocol (LAN fan-out); --live
                serves each verified file of a dir still being filled, with a fan-out limit
  copy          fan-out peer: copy shard by shard from peers' mirrors (switch + resume, sha256)
  stop-mirror   stop a mirror started with serve-mirror

Layout of a weights dir::

  <dir>/<repo files>            what the hub lists (local_dir of snapshot_download)
  <dir>/MANIFEST.json           path, size, sha256 of every file + model_id, revision, endpoint
  <dir>/.sgl-complete           the marker, written LAST (temp file + rename)
  <dir>/.sgl-weights/           tool state: progress.json, locks, the client's lock dir

The same file is the controller verb ``sgl-deploy weights`` (src/sgl_deploy/weights.py is a
link to it) and the protocol core of the lab's test hub (lab/hub/server.py imports it).
"""

from __future__ import annotations

import argparse
import collections
import errno
import fnmatch
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MARKER = ".sgl-complete"
MANIFEST = "MANIFEST.json"
STATE_DIR = ".sgl-weights"
PROGRESS = "progress.json"
MANIFEST_FORMAT = 1
HASH_CHUNK = 8 << 20
TOKEN_ENV = "SGL_WEIGHTS_TOKEN"

# exit codes (also in the JSON as "rc"); documented in the role README
EXIT_OK = 0
EXIT_ERROR = 1  # unexpected error (bug, traceback in "msg")
EXIT_USAGE = 2  # bad arguments
EXIT_HUB_UNREACHABLE = 3  # network error / 5xx from the hub or mirror
EXIT_DISK = 4  # not enough free space (checked before downloading), ENOSPC
EXIT_INTEGRITY = 5  # sha256/size mismatch (verify, or the client's integrity check)
EXIT_INCOMPLETE = 6  # status: weights not complete; serve-mirror on incomplete weights
EXIT_NOT_FOUND = 7  # repo / revision not found, or access denied
EXIT_DOWNLOAD = 8  # download failed for another reason (see "failed_files")
EXIT_CLIENT = 9  # python too old, or the hub client is not importable
EXIT_BUSY = 10  # another fetch/verify holds the lock on this dir


class WeightsError(Exception):
    """An expected failure: exit code + one clear message + structured details."""

    def __init__(self, rc: int, msg: str, **details):
        super().__init__(msg)
        self.rc = rc
        self.msg = msg
        self.details = details


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
def utcnow() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data, mode: int = 0o644) -> None:
    """Write JSON to a temp file in the same dir, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fmt_bytes(n: float, unit_of: float | None = None) -> str:
    """Decimal units; ``unit_of`` picks the unit from another number (e.g. the total)."""
    ref = abs(unit_of if unit_of is not None else n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if ref >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def fmt_rate(bps: float | None) -> str:
    if not bps or bps <= 0:
        return "-- MB/s"
    if bps >= 1e9:
        return f"{bps / 1e9:.2f} GB/s"
    if bps >= 1e6:
        return f"{bps / 1e6:.0f} MB/s" if bps >= 100e6 else f"{bps / 1e6:.1f} MB/s"
    return f"{bps / 1e3:.0f} KB/s"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds != seconds:
        return "--"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def glob_escape(path: str) -> str:
    """Escape a literal repo path for fnmatch (the client's allow_patterns)."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def fnmatch_any(path: str, patterns) -> bool:
    """The ModelScope client's rule (modelscope_hub/_download.py::_matches_patterns):
    fnmatch on the full repo path; a pattern with ``.*`` is also tried with ``.*`` -> ``*``."""
    for pat in patterns or ():
        if fnmatch.fnmatch(path, pat) or (".*" in pat and fnmatch.fnmatch(path, pat.replace(".*", "*"))):
            return True
    return False


def select_files(files: list[dict], allow, ignore) -> list[dict]:
    return [
        f
        for f in files
        if (not allow or fnmatch_any(f["path"], allow)) and not (ignore and fnmatch_any(f["path"], ignore))
    ]


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> tuple[Path, int]:
    """Free bytes (for unprivileged users: f_bavail) on the filesystem holding ``path``."""
    where = nearest_existing(path)
    st = os.statvfs(where)
    return where, st.f_bavail * st.f_frsize


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 = state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    """Is ``pid`` running (not a zombie, and, when ``start`` is known, still the same process)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:  # no /proc: trust kill(0)
        return True
    return fields[0] not in ("Z", "X") and (start is None or fields[19] == start)


# ---------------------------------------------------------------------------
# on-disk state: manifest, marker, status, partial bytes
# ---------------------------------------------------------------------------
def state_dir(weights_dir: Path) -> Path:
    return weights_dir / STATE_DIR


def manifest_digest(weights_dir: Path) -> str | None:
    try:
        return hashlib.sha256((weights_dir / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def scan_partials(weights_dir: Path, paths) -> dict[str, int]:
    """Bytes on disk per repo path: the final file when it has its full size is counted by the
    caller; here: ``<f>.incomplete``, ``<f>.parallel_tmp`` and the parallel part files
    ``<f>_<start>_<end>`` (ModelScope), and ``.cache/huggingface/download/<f>.<etag>.incomplete``.
    One scandir per directory."""
    partial: dict[str, int] = collections.defaultdict(int)
    dirs = {os.path.dirname(p) for p in paths}
    part_re = re.compile(r"^(.*)_(\d+)_(\d+)$")
    hf_root = weights_dir / ".cache" / "huggingface" / "download"
    for rel in dirs:
        for base, kind in ((weights_dir / rel, "ms"), (hf_root / rel, "hf")):
            try:
                entries = list(os.scandir(base))
            except OSError:
                continue
            for e in entries:
                name = e.name
                try:
                    size = e.stat().st_size
                except OSError:
                    continue
                if kind == "hf":
                    if name.endswith(".incomplete"):
                        stem = name[: -len(".incomplete")].rsplit(".", 1)[0]
                        partial[os.path.join(rel, stem)] += size
                    continue
                if name.endswith(".incomplete"):
                    partial[os.path.join(rel, name[: -len(".incomplete")])] += size
                elif name.endswith(".parallel_tmp"):
                    partial[os.path.join(rel, name[: -len(".parallel_tmp")])] += size
                else:
                    m = part_re.match(name)
                    if m:
                        partial[os.path.join(rel, m.group(1))] += size
    return partial


def disk_bytes(weights_dir: Path, files: list[dict]) -> dict:
    """How much of ``files`` is on disk: full-size final files + partial files (capped)."""
    partial = scan_partials(weights_dir, [f["path"] for f in files])
    done = present = files_done = 0
    complete_paths = set()
    for f in files:
        try:
            size = os.stat(weights_dir / f["path"]).st_size
        except OSError:
            size = -1
        if size == f["size"]:
            done += f["size"]
            files_done += 1
            complete_paths.add(f["path"])
        else:
            present += min(partial.get(f["path"], 0), f["size"])
    return {
        "complete_bytes": done,
        "partial_bytes": present,
        "bytes_done": done + present,
        "files_done": files_done,
        "complete_paths": complete_paths,
    }


def evaluate(weights_dir: Path, model_id=None, revision=None, allow=None, ignore=None) -> dict:
    """Cheap completeness check (stat only, no hashing, no network).

    Complete = marker present and bound to the current MANIFEST.json (its sha256), the manifest
    is for the expected model/revision/patterns, and every manifest file has its size."""
    weights_dir = Path(weights_dir)
    out = {
        "dir": str(weights_dir),
        "complete": False,
        "marker": (weights_dir / MARKER).is_file(),
        "manifest": (weights_dir / MANIFEST).is_file(),
        "missing": [],
        "size_mismatch": [],
        "total_bytes": None,
        "file_count": None,
    }
    if not weights_dir.is_dir():
        out["reason"] = f"{weights_dir} does not exist"
        return out
    manifest = read_json(weights_dir / MANIFEST) if out["manifest"] else None
    if manifest is None:
        out["reason"] = "no MANIFEST.json (no download has finished in this dir)"
        return out
    out.update(
        model_id=manifest.get("model_id"),
        revision=manifest.get("revision"),
        total_bytes=manifest.get("total_bytes"),
        file_count=len(manifest.get("files", [])),
        endpoint=manifest.get("endpoint"),
    )
    expected = {"model_id": model_id, "revision": revision}
    for key, want in expected.items():
        if want is not None and manifest.get(key) != want:
            out["reason"] = f"MANIFEST.json is for {key}={manifest.get(key)!r}, expected {want!r}"
            return out
    if model_id is not None:
        for key, want in (("allow_patterns", allow), ("ignore_patterns", ignore)):
            if list(manifest.get(key) or []) != list(want or []):
                out["reason"] = f"MANIFEST.json was made with {key}={manifest.get(key)!r}, now {list(want or [])!r}"
                return out
    for f in manifest.get("files", []):
        try:
            size = os.stat(weights_dir / f["path"]).st_size
        except OSError:
            out["missing"].append(f["path"])
            continue
        if size != f["size"]:
            out["size_mismatch"].append({"path": f["path"], "size": size, "expected": f["size"]})
    if out["missing"] or out["size_mismatch"]:
        out["reason"] = (
            f"{len(out['missing'])} file(s) missing, {len(out['size_mismatch'])} with the wrong size "
            f"(first: {(out['missing'] + [m['path'] for m in out['size_mismatch']])[0]})"
        )
        return out
    marker = read_json(weights_dir / MARKER) if out["marker"] else None
    if marker is None:
        out["reason"] = f"no {MARKER} marker (download or repair not finished)"
        return out
    if marker.get("manifest_sha256") != manifest_digest(weights_dir):
        out["reason"] = f"{MARKER} does not belong to the current MANIFEST.json"
        return out
    out["complete"] = True
    out["reason"] = "marker + manifest present, all sizes match"
    return out


def build_manifest(listing: dict, weights_dir: Path) -> dict:
    files = []
    for f in sorted(listing["files"], key=lambda x: x["path"]):
        sha = f.get("sha256")
        if not sha:  # e.g. Hugging Face non-LFS files: hash our own copy once
            sha = sha256_file(weights_dir / f["path"])
        files.append({"path": f["path"], "size": f["size"], "sha256": sha})
    return {
        "format": MANIFEST_FORMAT,
        "model_id": listing["model_id"],
        "revision": listing["revision"],
        "hub": listing["hub"],
        "endpoint": listing["endpoint"],
        "allow_patterns": listing["allow_patterns"],
        "ignore_patterns": listing["ignore_patterns"],
        "created": utcnow(),
        "total_bytes": sum(f["size"] for f in files),
        "file_count": len(files),
        "files": files,
    }


def write_complete(weights_dir: Path, manifest: dict) -> None:
    """MANIFEST.json first, then the marker bound to it, both atomically: the marker is last."""
    write_json_atomic(weights_dir / MANIFEST, manifest)
    write_json_atomic(
        weights_dir / MARKER,
        {
            "model_id": manifest["model_id"],
            "revision": manifest["revision"],
            "manifest_sha256": manifest_digest(weights_dir),
            "total_bytes": manifest["total_bytes"],
            "file_count": manifest["file_count"],
            "completed": utcnow(),
        },
    )


def remove_marker(weights_dir: Path) -> bool:
    try:
        (weights_dir / MARKER).unlink()
        return True
    except FileNotFoundError:
        return False


class DirLock:
    """Exclusive, non-blocking flock on <dir>/.sgl-weights/lock (fetch and verify)."""

    def __init__(self, weights_dir: Path, what: str):
        self.path = state_dir(weights_dir) / "lock"
        self.what = what
        self.fd = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise WeightsError(
                EXIT_BUSY, f"another fetch/verify is running on {self.path.parent.parent} ({holder or 'unknown pid'})"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{self.what} pid {os.getpid()}".encode(), 0)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


# ---------------------------------------------------------------------------
# progress (written by fetch, read by `progress`)
# ---------------------------------------------------------------------------
class Progress:
    """Writes <dir>/.sgl-weights/progress.json; a thread samples on-disk sizes while downloading."""

    def __init__(self, weights_dir: Path, model_id: str, revision: str, interval: float = 2.0):
        self.dir = weights_dir
        self.path = state_dir(weights_dir) / PROGRESS
        self.interval = interval
        self.base = {
            "pid": os.getpid(),
            "pid_start": proc_start(os.getpid()),
            "host": socket.gethostname(),
            "model_id": model_id,
            "revision": revision,
            "started": time.time(),
        }
        self.data = dict(self.base, state="starting")
        self.files: list[dict] = []
        self.samples: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def write(self, **fields) -> None:
        with self._lock:
            self.data.update(fields, updated=time.time())
            write_json_atomic(self.path, self.data)

    def sample(self) -> None:
        now = time.monotonic()
        d = disk_bytes(self.dir, self.files)
        self.samples.append((now, d["bytes_done"]))
        while len(self.samples) > 2 and now - self.samples[0][0] > 20:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        rate = (d["bytes_done"] - b0) / (now - t0) if now - t0 >= 1 else None
        total = sum(f["size"] for f in self.files)
        self.write(
            bytes_done=d["bytes_done"],
            bytes_total=total,
            files_done=d["files_done"],
            files_total=len(self.files),
            rate_bps=rate,
            eta_s=(total - d["bytes_done"]) / rate if rate else None,
        )

    def start(self, files: list[dict], **fields) -> None:
        self.files = files
        self.write(state="downloading", **fields)
        self.sample()

        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self.sample()
                except Exception:  # never kill the download because of progress
                    pass

        self._thread = threading.Thread(target=loop, name="sgl-weights-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


def progress_report(weights_dir: Path) -> dict:
    """The `progress` subcommand: {done, failed, line, msg, ...} for sgl_poll."""
    data = read_json(state_dir(weights_dir) / PROGRESS)
    if data is None:
        return {"done": False, "failed": False, "state": "waiting", "line": "weights: waiting for the download to start", "msg": ""}
    state = data.get("state", "starting")
    rep = dict(data)
    rep.update(done=state == "done", failed=state == "failed", msg=data.get("msg", ""))
    if state not in ("done", "failed") and not pid_alive(data.get("pid"), data.get("pid_start")):
        rep.update(
            failed=True,
            state="failed",
            msg=(
                f"the download process (pid {data.get('pid')}) on {data.get('host')} is gone while {state}; "
                "partial files are kept, rerun to resume"
            ),
        )
    rep["line"] = progress_line(rep)
    return rep


def progress_line(p: dict) -> str:
    state = p.get("state")
    total = p.get("bytes_total") or 0
    if state == "failed":
        return f"weights FAILED: {p.get('msg', '')}"
    if state == "done":
        return f"weights complete: {p.get('msg', '')}".rstrip(": ")
    if state in ("starting", "listing"):
        return f"weights: listing {p.get('model_id')}@{p.get('revision')} on {p.get('endpoint') or 'the hub'}"
    if state == "finalizing":
        return "weights: all files downloaded, writing MANIFEST.json and the marker"
    done = p.get("bytes_done") or 0
    pct = 100.0 * done / total if total else 100.0
    return (
        f"weights {fmt_bytes(done, total).split()[0]}/{fmt_bytes(total)} {pct:.1f}%  "
        f"{fmt_rate(p.get('rate_bps'))}  ETA {fmt_duration(p.get('eta_s'))}  "
        f"[{p.get('files_done', 0)}/{p.get('files_total', 0)} files]"
    )


# ---------------------------------------------------------------------------
# hub clients (ModelScope: the real modelscope / modelscope_hub; Hugging Face: huggingface_hub)
# ---------------------------------------------------------------------------
def require_python() -> None:
    if sys.version_info < (3, 10):
        raise WeightsError(
            EXIT_CLIENT,
            f"{sys.executable} is Python {sys.version.split()[0]}; modelscope 1.40.2 needs >= 3.10 "
            "(older pythons silently get the old 1.37/1.31 client). Point model_weights_python at the SGLang venv.",
        )


def client_env(args) -> dict:
    """Environment for the download client; set BEFORE importing it (its knobs are read at import)."""
    env = {
        "TQDM_DISABLE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false",
        "MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT": str(args.file_timeout),
        "MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS": str(args.parallel_workers),
    }
    if args.hf_endpoint:
        env["HF_ENDPOINT"] = args.hf_endpoint
    return env


def import_modelscope():
    """The ModelScope client. ``modelscope.hub.snapshot_download`` (1.40.2) is a pass-through to
    ``modelscope_hub.compat.snapshot_download`` when local_dir is given; we call the latter
    directly because ``import modelscope`` also imports torch when it is installed (the SGLang
    venv: ~2-9 s and a GB of RSS for nothing)."""
    require_python()
    try:
        from modelscope_hub import HubApi
        from modelscope_hub import errors as mserrors
        from modelscope_hub.compat.snapshot_download import snapshot_download
    except ImportError as exc:
        raise WeightsError(
            EXIT_CLIENT,
            f"the ModelScope client is not importable by {sys.executable} ({exc}); "
            "install modelscope==1.40.2 modelscope-hub==0.5.1 into that venv (the sglang_install role does)",
        ) from None
    return HubApi, snapshot_download, mserrors


def hub_unreachable(endpoint: str, what: str, text: str) -> WeightsError:
    """The one message for a hub that does not answer (the client's and the plain-HTTP listing's)."""
    return WeightsError(
        EXIT_HUB_UNREACHABLE,
        f"cannot reach the hub at {endpoint} while {what}: {text}. Fix: start or repair the hub, or point "
        "model_weights_endpoint at one that answers; check the host's route, DNS, proxy and firewall; "
        "then rerun (files already downloaded are kept and resume)",
    )


def classify_client_error(exc: BaseException, endpoint: str, what: str) -> WeightsError:
    """Map an exception of the ModelScope/HF client (or requests) to an exit code + message."""
    name = type(exc).__name__
    names = {c.__name__ for c in type(exc).__mro__}
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return WeightsError(EXIT_DISK, f"disk full while {what}: {text}")
    if names & {"NotExistError", "RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"} or (
        "HTTPError" in names and re.search(r"\b(404|E3020|not exist|not found)\b", str(exc), re.I)
    ):
        return WeightsError(EXIT_NOT_FOUND, f"{what}: not found on {endpoint}: {text}")
    if names & {"AuthenticationError", "PermissionDeniedError", "GatedRepoError"} or (
        "HTTPError" in names and re.search(r"\b(401|403)\b", str(exc))
    ):
        return WeightsError(EXIT_NOT_FOUND, f"{what}: access denied by {endpoint} (check model_weights_token): {text}")
    if names & {"NetworkError", "ServerError", "RateLimitError", "ConnectionError", "Timeout", "ConnectTimeout",
                "ReadTimeout", "OfflineModeIsEnabled", "HfHubHTTPError", "LocalEntryNotFoundError"}:
        return hub_unreachable(endpoint, what, text)
    if names & {"FileIntegrityError"}:
        return WeightsError(EXIT_INTEGRITY, f"integrity check failed while {what}: {text}")
    return WeightsError(EXIT_DOWNLOAD, f"{what} failed ({name}): {text}")


def listing_modelscope(args) -> dict:
    HubApi, _snap, _errors = import_modelscope()
    token = os.environ.get(TOKEN_ENV) or None
    endpoint = args.endpoint or None
    try:
        api = HubApi(endpoint=endpoint, token=token)
        if endpoint is None:  # the client's own default: modelscope.cn, then modelscope.ai
            endpoint = api.resolve_endpoint_for_read(args.model_id, repo_type="model")
            api = HubApi(endpoint=endpoint, token=token)
        raw = api.list_repo_files(args.model_id, "model", revision=args.revision, recursive=True)
    except Exception as exc:  # noqa: BLE001 - classified below
        raise classify_client_error(exc, endpoint or "the default ModelScope endpoint", f"listing {args.model_id}@{args.revision}") from None
    files = [
        {"path": f.path, "size": int(f.size or 0), "sha256": (f.sha256 or None)}
        for f in raw
        if f.type != "tree" and f.path
    ]
    return {"endpoint": endpoint, "files": files}


def listing_huggingface(args) -> dict:
    require_python()
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise WeightsError(EXIT_CLIENT, f"huggingface_hub is not importable by {sys.executable} ({exc})") from None
    endpoint = args.hf_endpoint or "https://huggingface.co"
    try:
        api = HfApi(endpoint=args.hf_endpoint or None, token=os.environ.get(TOKEN_ENV) or None)
        items = api.list_repo_tree(args.model_id, recursive=True, expand=False, revision=args.revision)
        files = []
        for item in items:
            if not hasattr(item, "size"):  # RepoFolder
                continue
            lfs = getattr(item, "lfs", None)
            sha = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
            files.append({"path": item.path, "size": int(item.size), "sha256": sha})
    except Exception as exc:  # noqa: BLE001
        raise classify_client_error(exc, endpoint, f"listing {args.model_id}@{args.revision}") from None
    return {"endpoint": endpoint, "files": files}


def listing_entries(answer) -> list[dict]:
    """Files (not trees) of a ModelScope ``repo/files`` answer, as ``{path, size, sha256}``: the
    fields the 1.40.2 client reads (``Data.Files`` or ``Data`` or the body; ``Path``/``path``/``Name``;
    ``Type`` "tree" skipped). The plan's size listing (sgl_deploy.hub) parses with this too."""
    data = answer.get("Data", answer) if isinstance(answer, dict) else answer
    if isinstance(data, dict):
        data = data.get("Files", [])
    files = []
    for entry in data or []:
        if entry.get("Type") == "tree":
            continue
        path = entry.get("Path") or entry.get("path") or entry.get("Name")
        if path:
            files.append({"path": path, "size": int(entry.get("Size") or 0), "sha256": entry.get("Sha256") or None})
    return files


def listing_url(endpoint: str, model_id: str, revision: str) -> str:
    q = urllib.parse.urlencode({"Revision": revision, "Recursive": "True"})
    return f"{endpoint.rstrip('/')}/api/v1/models/{model_id}/repo/files?{q}"


def listing_modelscope_http(args, timeout: float = 15.0) -> dict:
    """The ModelScope listing over plain HTTP (stdlib): where the client is not installed yet
    (a check-mode preview of a fresh host). Same request and fields as the client (reference
    modelscope.md section 2); an empty endpoint means modelscope.cn."""
    import urllib.error
    import urllib.request

    endpoint = (args.endpoint or "https://modelscope.cn").rstrip("/")
    what = f"listing {args.model_id}@{args.revision}"
    headers = {"Accept": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(listing_url(endpoint, args.model_id, args.revision), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):  # not found / access denied: worded as for the client's errors
            raise classify_client_error(exc, endpoint, what) from None
        raise hub_unreachable(endpoint, what, f"HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise hub_unreachable(endpoint, what, f"{type(exc).__name__}: {exc}") from None
    return {"endpoint": endpoint, "files": listing_entries(answer)}


def get_listing(args, client: bool = True) -> dict:
    """Hub listing filtered with allow/ignore patterns -> files + exact total bytes. ``client``
    False: a ModelScope listing over plain HTTP when the client is not importable here."""
    if args.hub == "huggingface":
        raw = listing_huggingface(args)
    elif client:
        raw = listing_modelscope(args)
    else:
        try:
            import_modelscope()
            raw = listing_modelscope(args)
        except WeightsError as exc:
            if exc.rc != EXIT_CLIENT:
                raise
            raw = listing_modelscope_http(args)
    files = sorted(select_files(raw["files"], args.allow, args.ignore), key=lambda f: f["path"])
    if not files:
        raise WeightsError(
            EXIT_NOT_FOUND,
            f"{args.model_id}@{args.revision} on {raw['endpoint']}: no files match "
            f"allow={args.allow or []} ignore={args.ignore or []} (regex-style patterns like '.*\\.json' match nothing)",
        )
    return {
        "model_id": args.model_id,
        "revision": args.revision,
        "hub": args.hub,
        "endpoint": raw["endpoint"],
        "allow_patterns": list(args.allow or []),
        "ignore_patterns": list(args.ignore or []),
        "files": files,
        "file_count": len(files),
        "total_bytes": sum(f["size"] for f in files),
    }


def space_required(total_bytes: int, present_bytes: int, margin_bytes: int) -> int:
    """THE disk rule (the plan's check, sgl_deploy.preflight.disk_problem, uses it too): free space
    must hold what is still missing of the weights (the total minus what is already on disk) plus
    the margin. A host that holds all the weights needs only the margin."""
    return max(int(total_bytes) - int(present_bytes), 0) + int(margin_bytes)


def space_check(weights_dir: Path, listing: dict, margin_gb: float) -> dict:
    """Free space vs what is still to download (+ margin). Never contacts anything."""
    d = disk_bytes(weights_dir, listing["files"]) if weights_dir.is_dir() else {"bytes_done": 0, "files_done": 0}
    todo = listing["total_bytes"] - d["bytes_done"]
    margin = int(margin_gb * 1e9)
    where, free = free_bytes(weights_dir)
    ok = free >= space_required(listing["total_bytes"], d["bytes_done"], margin)
    out = {
        "present_bytes": d["bytes_done"],
        "todo_bytes": todo,
        "margin_bytes": margin,
        "required_bytes": todo + margin,
        "free_bytes": free,
        "free_path": str(where),
        "space_ok": ok,
    }
    if not ok:
        out["space_msg"] = (
            f"not enough disk space on {socket.gethostname()} for {listing['model_id']}@{listing['revision']} in "
            f"{weights_dir}: need {fmt_bytes(todo + margin)} (still to download {fmt_bytes(todo)} of "
            f"{fmt_bytes(listing['total_bytes'])} + margin {fmt_bytes(margin)}), free {fmt_bytes(free)} on "
            f"{where}. Fix: free space there, set model_weights_dir to a bigger filesystem, or lower "
            f"model_weights_disk_margin_gb ({margin_gb:g})."
        )
    return out


def hf_download_kwargs(args, weights_dir: Path, allow, ignore) -> dict:
    """Arguments of huggingface_hub.snapshot_download for the Hugging Face mode."""
    return {
        "repo_id": args.model_id,
        "revision": args.revision,
        "local_dir": str(weights_dir),
        "allow_patterns": list(allow) if allow else None,
        "ignore_patterns": list(ignore) if ignore else None,
        "max_workers": args.max_workers,
        "token": os.environ.get(TOKEN_ENV) or None,
        "endpoint": args.hf_endpoint or None,
    }


def ms_download_kwargs(args, weights_dir: Path, endpoint: str, allow, ignore) -> dict:
    """Arguments of the ModelScope client's snapshot_download (same in modelscope.hub and
    modelscope_hub.compat)."""
    return {
        "model_id": args.model_id,
        "revision": args.revision,
        "cache_dir": str(state_dir(weights_dir) / "cache"),  # the client's lock files live here
        "local_dir": str(weights_dir),
        "allow_patterns": list(allow) if allow else None,
        "ignore_patterns": list(ignore) if ignore else None,
        "max_workers": args.max_workers,
        "token": os.environ.get(TOKEN_ENV) or None,
        "endpoint": endpoint,
    }


def run_client(args, weights_dir: Path, listing: dict, only: list[str] | None) -> None:
    """Download with the real client. ``only``: exact paths (a repair or a resume that can trust
    the manifest) instead of the user's patterns, so the client does not rehash everything."""
    allow = [glob_escape(p) for p in only] if only is not None else args.allow
    ignore = None if only is not None else args.ignore
    what = f"downloading {args.model_id}@{args.revision} from {listing['endpoint']}"
    try:
        if args.hub == "huggingface":
            from huggingface_hub import snapshot_download as hf_snapshot

            hf_snapshot(**hf_download_kwargs(args, weights_dir, allow, ignore))
        else:
            _api, snapshot_download, _errors = import_modelscope()
            snapshot_download(**ms_download_kwargs(args, weights_dir, listing["endpoint"], allow, ignore))
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001
        failed = getattr(exc, "failed_files", None) or {}
        if failed:
            errs = [classify_client_error(e, listing["endpoint"], what) for e in failed.values()]
            rc = min((e.rc for e in errs), key=[EXIT_DISK, EXIT_INTEGRITY, EXIT_HUB_UNREACHABLE, EXIT_NOT_FOUND, EXIT_DOWNLOAD].index)
            raise WeightsError(
                rc,
                f"{what}: {len(failed)} file(s) failed: "
                + "; ".join(f"{p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}" for p, e in sorted(failed.items())),
                failed_files=sorted(failed),
            ) from None
        raise classify_client_error(exc, listing["endpoint"], what) from None


def trusted_subset(weights_dir: Path, listing: dict) -> list[str] | None:
    """If an old MANIFEST.json matches the hub listing exactly (same paths, sizes, sha256),
    full-size files were already verified (at download or by `verify`): return the paths still
    to fetch. None = no usable manifest; let the client check everything."""
    manifest = read_json(weights_dir / MANIFEST)
    if not manifest or manifest.get("model_id") != listing["model_id"] or manifest.get("revision") != listing["revision"]:
        return None
    old = {f["path"]: (f["size"], f.get("sha256")) for f in manifest.get("files", [])}
    for f in listing["files"]:
        if old.get(f["path"], (None, None))[0] != f["size"] or (f.get("sha256") and old[f["path"]][1] != f["sha256"]):
            return None
    have = disk_bytes(weights_dir, listing["files"])["complete_paths"]
    return [f["path"] for f in listing["files"] if f["path"] not in have]


def fetch(args) -> dict:
    weights_dir = Path(args.dir)
    status = evaluate(weights_dir, args.model_id, args.revision, args.allow, args.ignore)
    if status["complete"] and not args.force:
        msg = f"weights already complete in {weights_dir} (marker + manifest, sizes match); hub not contacted"
        Progress(weights_dir, args.model_id, args.revision).write(
            state="done", msg=msg, bytes_done=status["total_bytes"], bytes_total=status["total_bytes"],
            files_done=status["file_count"], files_total=status["file_count"])
        return {"changed": False, "complete": True, "total_bytes": status["total_bytes"], "msg": msg}
    weights_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(weights_dir, "fetch"):
        prog = Progress(weights_dir, args.model_id, args.revision, interval=args.progress_interval)
        prog.write(state="listing", endpoint=args.endpoint or args.hf_endpoint or None)
        try:
            return _fetch_locked(args, weights_dir, prog, status)
        except WeightsError as exc:
            prog.write(state="failed", msg=exc.msg, rc=exc.rc)
            raise
        except BaseException as exc:  # KeyboardInterrupt, SystemExit (SIGTERM), bugs
            prog.write(state="failed", msg=f"interrupted: {type(exc).__name__}: {exc}", rc=EXIT_ERROR)
            raise
        finally:
            prog.stop()


def _fetch_locked(args, weights_dir: Path, prog: Progress, status: dict) -> dict:
    try:
        listing = get_listing(args)
    except WeightsError as exc:
        if exc.rc == EXIT_HUB_UNREACHABLE:
            exc.msg += (
                f". The weights in {weights_dir} are incomplete ({status.get('reason')}); "
                "SGLang must not start on them. Fix the hub/endpoint (model_weights_endpoint) and rerun: partial files resume."
            )
        raise
    space = space_check(weights_dir, listing, args.margin_gb)
    if not space["space_ok"]:
        raise WeightsError(EXIT_DISK, space["space_msg"], **space)
    only = trusted_subset(weights_dir, listing)
    remove_marker(weights_dir)  # from here on files change: never leave a marker behind
    publisher = Publisher(weights_dir, listing) if getattr(args, "publish", False) else None
    try:
        prog.start(listing["files"], endpoint=listing["endpoint"])
        if only != []:
            run_client(args, weights_dir, listing, only)
    finally:
        if publisher:
            publisher.stop()
    prog.stop()
    prog.write(state="finalizing")
    bad = [f["path"] for f in listing["files"] if not (weights_dir / f["path"]).is_file()
           or (weights_dir / f["path"]).stat().st_size != f["size"]]
    if bad:
        raise WeightsError(EXIT_DOWNLOAD, f"the client returned but {len(bad)} file(s) are missing or short: {bad[:5]}", failed_files=bad)
    manifest = build_manifest(listing, weights_dir)
    write_complete(weights_dir, manifest)
    elapsed = time.time() - prog.base["started"]
    scope = ("every file through the client" if only is None
             else f"{len(only)} fetched, {manifest['file_count'] - len(only)} kept from the previous manifest")
    msg = (
        f"{fmt_bytes(manifest['total_bytes'])} in {manifest['file_count']} files from {listing['endpoint']} "
        f"({fmt_duration(elapsed)}; {scope})"
    )
    prog.write(state="done", msg=msg, bytes_done=manifest["total_bytes"], bytes_total=manifest["total_bytes"],
               files_done=manifest["file_count"], files_total=manifest["file_count"], eta_s=0)
    return {
        "changed": True,
        "complete": True,
        "msg": "downloaded " + msg,
        "endpoint": listing["endpoint"],
        "total_bytes": manifest["total_bytes"],
        "file_count": manifest["file_count"],
        "fetched_paths": only,
    }


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------
def verify(args) -> dict:
    weights_dir = Path(args.dir)
    manifest = read_json(weights_dir / MANIFEST)
    if manifest is None:
        raise WeightsError(EXIT_INCOMPLETE, f"no MANIFEST.json in {weights_dir}: nothing to verify (download first)")
    with DirLock(weights_dir, "verify"):
        t0 = time.monotonic()

        def check(f):
            path = weights_dir / f["path"]
            try:
                size = path.stat().st_size
            except OSError:
                return {"path": f["path"], "problem": "missing"}
            if size != f["size"]:
                return {"path": f["path"], "problem": f"size {size} != {f['size']}"}
            digest = sha256_file(path)
            if digest != f["sha256"]:
                return {"path": f["path"], "problem": f"sha256 {digest[:12]}... != {f['sha256'][:12]}..."}
            return None

        with ThreadPoolExecutor(max_workers=max(1, args.hash_workers)) as pool:
            bad = [r for r in pool.map(check, manifest["files"]) if r]
        report = {
            "changed": False,
            "ok": not bad,
            "bad": bad,
            "checked": len(manifest["files"]),
            "total_bytes": manifest.get("total_bytes"),
            "elapsed_s": round(time.monotonic() - t0, 2),
        }
        if not bad:
            if not (weights_dir / MARKER).is_file() and args.repair:
                write_complete(weights_dir, manifest)  # everything verified: the marker can come back
                report["changed"] = True
            report["msg"] = f"all {len(manifest['files'])} files match MANIFEST.json ({fmt_bytes(manifest.get('total_bytes') or 0)}, {report['elapsed_s']}s)"
            return report
        listing_msg = ", ".join(f"{b['path']} ({b['problem']})" for b in bad)
        if not (args.delete_bad or args.repair):
            raise WeightsError(EXIT_INTEGRITY, f"{len(bad)} file(s) in {weights_dir} do not match MANIFEST.json: {listing_msg}", bad=bad)
        remove_marker(weights_dir)
        for b in bad:
            for p in (weights_dir / b["path"], (weights_dir / b["path"]).with_name(Path(b["path"]).name + ".incomplete")):
                p.unlink(missing_ok=True)
        report.update(changed=True, removed=[b["path"] for b in bad],
                      msg=f"removed {len(bad)} bad file(s) and the marker: {listing_msg}")
    if args.repair:
        args.force = True
        fetched = fetch(args)
        report.update(repaired=True, fetch=fetched, ok=True, msg=report["msg"] + f"; re-fetched from {fetched.get('endpoint')}")
    return report


# ---------------------------------------------------------------------------
# ModelScope-protocol HTTP server (LAN mirror; the lab hub extends it)
# ---------------------------------------------------------------------------
class RepoEntry:
    __slots__ = ("path", "size", "sha256", "local")

    def __init__(self, path: str, size: int, sha256: str | None, local: Path):
        self.path, self.size, self.sha256, self.local = path, size, sha256, local


class ManifestCatalog:
    """One complete weights dir, served from its MANIFEST.json (read-only)."""

    def __init__(self, weights_dir: Path):
        manifest = read_json(weights_dir / MANIFEST)
        self.model_id = manifest["model_id"]
        self.revision = manifest["revision"]
        self.entries = {
            f["path"]: RepoEntry(f["path"], f["size"], f["sha256"], weights_dir / f["path"]) for f in manifest["files"]
        }

    def has_model(self, model_id: str) -> bool:
        return model_id == self.model_id

    def entries_for(self, model_id: str, revision: str):
        """dict path -> RepoEntry, or None (no such repo/revision)."""
        return self.entries if model_id == self.model_id and revision == self.revision else None


def parse_range(header: str | None, size: int):
    """-> None (no/ignored range: send all), "unsatisfiable", or (start, end) inclusive."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multi-range or garbage: RFC 9110 lets us ignore it
    if not m.group(1):  # suffix: last N bytes
        n = int(m.group(2))
        return (max(0, size - n), size - 1) if n and size else "unsatisfiable"
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


class HubHandler(http.server.BaseHTTPRequestHandler):
    """The subset of the ModelScope API the 1.40.2 client (and the old <=1.37 one) uses:
    repo/files listing, repo?FilePath= file GET with Range, model info, revisions."""

    protocol_version = "HTTP/1.1"
    server_version = "sgl-weights-hub/1"
    ROUTES = (
        (re.compile(r"^/api/v1/models/([^/]+)/([^/]+)/repo/files/?$"), "listing"),
        (re.compile(r"^/api/v1/models/([^/]+)/([^/]+)/repo/?$"), "file"),
        (re.compile(r"^/api/v1/models/([^/]+)/([^/]+)/revisions/?$"), "revisions"),
        (re.compile(r"^/api/v1/models/([^/]+)/([^/]+)/?$"), "model"),
    )

    def log_message(self, fmt, *args):  # the JSON access log replaces stderr logging
        pass

    # -- plumbing -----------------------------------------------------------
    def send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
        self.access(status=status, bytes=len(raw))

    def not_found(self, message: str) -> None:
        self.send_json(404, {"Code": 10010205001, "Message": message, "RequestId": uuid.uuid4().hex, "Success": False})

    def access(self, **fields) -> None:
        rec = {
            "ts": round(time.time(), 3),
            "client": self.client_address[0],
            "method": self.command,
            "path": urllib.parse.urlsplit(self.path).path,
            "query": urllib.parse.urlsplit(self.path).query,
            "range": self.headers.get("Range"),
        }
        rec.update(fields)
        self.server.log_access(rec)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.server.reject(self):
            return
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        for pattern, route in self.ROUTES:
            m = pattern.match(url.path)
            if m:
                model_id = f"{urllib.parse.unquote(m.group(1))}/{urllib.parse.unquote(m.group(2))}"
                try:
                    getattr(self, f"route_{route}")(model_id, query)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                return
        self.not_found(f"no such API path: {url.path}")

    # -- routes -------------------------------------------------------------
    def route_model(self, model_id: str, query: dict) -> None:
        if not self.server.catalog.has_model(model_id):
            return self.not_found(f"model {model_id} not exist")
        owner, name = model_id.split("/", 1)
        self.send_json(200, {"Code": 200, "Success": True, "Message": "success",
                             "Data": {"Name": name, "Path": owner, "ModelId": model_id}})

    def route_revisions(self, model_id: str, query: dict) -> None:
        if not self.server.catalog.has_model(model_id):
            return self.not_found(f"model {model_id} not exist")
        rev = getattr(self.server.catalog, "revision", "master")
        self.send_json(200, {"Code": 200, "Success": True, "Message": "success",
                             "Data": {"RevisionMap": {"Branches": [{"Revision": rev, "CreatedAt": int(time.time())}], "Tags": []}}})

    def route_listing(self, model_id: str, query: dict) -> None:
        revision = query.get("Revision") or "master"
        entries = self.server.catalog.entries_for(model_id, revision)
        if entries is None:
            return self.not_found(f"model {model_id} revision {revision} not exist")
        root = (query.get("Root") or "").strip("/")
        files, dirs = [], set()
        for path in sorted(entries):
            if root and not path.startswith(root + "/"):
                continue
            entry = entries[path]
            parent = os.path.dirname(path)
            while parent and parent != root:
                dirs.add(parent)
                parent = os.path.dirname(parent)
            files.append({"Name": os.path.basename(path), "Path": path, "Type": "blob", "Size": entry.size,
                          "Sha256": self.server.listing_sha256(model_id, entry), "Revision": revision})
        trees = [{"Name": os.path.basename(d), "Path": d, "Type": "tree", "Size": 0, "Revision": revision} for d in sorted(dirs)]
        self.send_json(200, {"Code": 200, "Success": True, "Message": "success", "Data": {"Files": trees + files}})

    def route_file(self, model_id: str, query: dict) -> None:
        revision = query.get("Revision") or "master"
        file_path = query.get("FilePath", "").lstrip("/")
        entries = self.server.catalog.entries_for(model_id, revision)
        if entries is None:
            return self.not_found(f"model {model_id} revision {revision} not exist")
        entry = entries.get(file_path)
        if entry is None:
            return self.not_found(f"file {file_path} not exist in {model_id}@{revision}")
        size = entry.size
        rng = parse_range(self.headers.get("Range"), size) if self.server.honour_range(self) else None
        if rng == "unsatisfiable":
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self.access(status=416, file=file_path, size=size, start=None, bytes=0)
        start, end = rng if rng else (0, size - 1)
        length = max(0, end - start + 1)
        status = 206 if rng else 200
        self.sgl_path = file_path
        admitted = self.command == "HEAD" or not length or self.server.admit(self)
        if not admitted:  # the fan-out limit: the peer picks another source or retries
            return self.send_json(503, {"Code": 503, "Message": "busy: fan-out limit reached", "Busy": True,
                                        "Success": False}, headers={"Retry-After": "1"})
        try:
            self._send_file(entry, file_path, size, rng, start, end, length, status)
        finally:
            if self.command != "HEAD" and length:
                self.server.release(self)

    def _send_file(self, entry, file_path, size, rng, start, end, length, status) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        sent = 0
        try:
            if self.command != "HEAD" and length:
                with open(entry.local, "rb") as f:
                    f.seek(start)
                    sent = self.server.send_body(self, f, entry, start, length)
        finally:
            self.sgl_sent_all = sent == length
            self.access(status=status, file=file_path, size=size, start=start, bytes=sent, complete=sent == length)


class HubServer(http.server.ThreadingHTTPServer):
    """ModelScope-protocol file server. Subclasses (the lab hub) override the hooks below."""

    daemon_threads = True
    allow_reuse_address = True
    handler_class = HubHandler

    def __init__(self, address, catalog, access_log: str | None = None):
        self.catalog = catalog
        self.access_log = access_log
        self._log_lock = threading.Lock()
        self.bytes_sent = 0
        super().__init__(address, self.handler_class)

    # hooks -------------------------------------------------------------------
    def reject(self, handler: HubHandler) -> bool:
        """Return True after answering/closing the request yourself (fault injection)."""
        return False

    def admit(self, handler: HubHandler) -> bool:
        """May this file body go out now? (False: 503 busy; the fan-out mirror's upload limit)."""
        return True

    def release(self, handler: HubHandler) -> None:
        """A body admitted by ``admit`` is finished (sent, cut, or failed)."""

    def listing_sha256(self, model_id: str, entry: RepoEntry) -> str | None:
        return entry.sha256

    def honour_range(self, handler: HubHandler) -> bool:
        return True

    def send_body(self, handler: HubHandler, f, entry: RepoEntry, start: int, length: int) -> int:
        """Copy ``length`` bytes of ``f`` (positioned at ``start``) to the client with sendfile(2);
        return how many went out."""
        try:
            return handler.connection.sendfile(f, start, length)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
            return max(0, f.tell() - start)

    def log_access(self, record: dict) -> None:
        with self._log_lock:
            self.bytes_sent += record.get("bytes") or 0
            if self.access_log:
                with open(self.access_log, "a", encoding="utf-8") as log:
                    log.write(json.dumps(record, sort_keys=True) + "\n")


def serve_mirror(args) -> dict:
    weights_dir = Path(args.dir)
    status = evaluate(weights_dir)
    if args.live:  # fan-out: serve each verified file as soon as it is there
        catalog = LiveCatalog(weights_dir)
    elif not status["complete"]:
        raise WeightsError(EXIT_INCOMPLETE, f"refusing to serve incomplete weights from {weights_dir}: {status['reason']}")
    else:
        catalog = ManifestCatalog(weights_dir)
    try:
        server = FanoutServer((args.host, args.port), catalog, access_log=args.access_log, limit=args.fanout_limit,
                              upload_bps=args.max_upload_bps)
    except OSError as exc:
        raise WeightsError(EXIT_ERROR, f"cannot listen on {args.host}:{args.port} ({exc}); change model_weights_fanout_port") from None
    pidfile = Path(args.pidfile or state_dir(weights_dir) / "mirror.pid")
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(pidfile, {"pid": os.getpid(), "start": proc_start(os.getpid()), "port": args.port})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    t0 = time.monotonic()
    stop.wait(args.max_seconds if args.max_seconds > 0 else None)
    server.shutdown()
    server.server_close()
    if (read_json(pidfile) or {}).get("pid") == os.getpid():
        pidfile.unlink(missing_ok=True)
    return {
        "changed": False,
        "msg": f"served {catalog.model_id}@{catalog.revision} on {args.host}:{args.port} for {fmt_duration(time.monotonic() - t0)}",
        "bytes_sent": server.bytes_sent,
        "peak_uploads": server.peak_uploads,
        "state_answers": server.state_answers,
        "timed_out": not stop.is_set(),
    }


def stop_mirror(args) -> dict:
    pidfile = Path(args.pidfile or state_dir(Path(args.dir)) / "mirror.pid")
    info = read_json(pidfile)
    if not info:
        return {"changed": False, "msg": f"no mirror running ({pidfile} absent)"}
    pid, start = info.get("pid"), info.get("start")
    if pid_alive(pid, start):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid, start):
            os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        return {"changed": True, "msg": f"stopped the mirror (pid {pid})"}
    pidfile.unlink(missing_ok=True)
    return {"changed": False, "msg": f"the mirror (pid {pid}) was not running"}


# ---------------------------------------------------------------------------
# pipelined tree fan-out: every host serves the shards it has verified, peers copy shard by
# shard from whichever candidate source has it and a free upload slot (fan-out limit).
#
# State files (in <dir>/.sgl-weights/):
#   fanout-listing.json  the listing being fetched (paths, sizes, sha256; from the hub or a peer)
#   verified.json        {path: {size, sha256, mtime_ns}}: files hashed against that listing
# The mirror (serve-mirror --live) serves exactly the verified files whose size and mtime still
# match, never an .incomplete file; a complete dir (marker + manifest) is served whole.
# ---------------------------------------------------------------------------
FANOUT_LISTING = "fanout-listing.json"
VERIFIED = "verified.json"
FANOUT_STATE_PATH = "/_sgl/fanout"
SMALL_BODY = 4 << 20  # bodies up to this size skip the uplink's queue; a seed with no more than this to come is free
SENT_GRACE_S = 2.0  # the downloading seed's "sent once": how long a finished body still counts as going out
HOLDERS_HEADER = "X-Sgl-Holders"  # a copier's GET: how many hosts have the file (the mirror sends the rarest first)
LISTING_KEYS = ("model_id", "revision", "hub", "endpoint", "allow_patterns", "ignore_patterns", "files",
                "file_count", "total_bytes")


def fanout_plan(hosts: list[str], seed: str, complete: list[str], limit: int = 2) -> dict:
    """Who downloads from the hub, and each waiting host's candidate sources in tree order.

    Roots are the hosts that already have complete weights; with none, the seed (it downloads
    from the hub, so the hub sends the model once). The waiting hosts hang below the roots in a
    ``limit``-ary tree in play order. Each waiting host's candidates: its parent, the parent's
    ancestors up to a root, then every other host (roots first, tree order). The copier takes
    the first candidate that has a verified shard and a free upload slot, so shards spread
    down the tree as soon as they are verified, and a dead or busy parent costs nothing."""
    if limit < 1:
        raise ValueError(f"fan-out limit must be >= 1, got {limit}")
    hosts = list(dict.fromkeys(hosts))
    done = [h for h in hosts if h in set(complete)]
    if not done and seed not in hosts:
        raise ValueError(f"no host has complete weights and the fan-out seed {seed!r} is not one of the hosts "
                         f"{hosts}: nobody can download from the hub")
    roots = done or [seed]
    waiting = [h for h in hosts if h not in roots]
    order = roots + waiting
    parent = {h: order[j // limit] for j, h in enumerate(waiting)}
    sources = {}
    for h in waiting:
        chain, p = [], parent[h]
        while True:
            chain.append(p)
            if p not in parent:
                break
            p = parent[p]
        sources[h] = chain + [o for o in order if o != h and o not in chain]
    levels = {}
    for h in order:
        levels[h] = 0 if h in roots else levels[parent[h]] + 1
    return {
        "hub": None if done else seed,
        "roots": roots,
        "parent": parent,
        "sources": sources,
        "rounds": max(levels.values(), default=0),
    }


class VerifiedLog:
    """The verified.json of one weights dir (one writer: the fetch/copy process holding the lock)."""

    def __init__(self, weights_dir: Path):
        self.path = state_dir(weights_dir) / VERIFIED
        self.dir = weights_dir
        self.lock = threading.Lock()
        self.data = read_json(self.path) or {}

    def valid(self, f: dict) -> bool:
        """Is ``f`` (path, size, sha256) recorded and unchanged on disk since it was hashed?"""
        rec = self.data.get(f["path"])
        if not rec or rec.get("size") != f["size"] or rec.get("sha256") != f["sha256"]:
            return False
        try:
            st = os.stat(self.dir / f["path"])
        except OSError:
            return False
        return st.st_size == rec["size"] and st.st_mtime_ns == rec.get("mtime_ns")

    def record(self, f: dict) -> None:
        st = os.stat(self.dir / f["path"])
        with self.lock:
            self.data[f["path"]] = {"size": f["size"], "sha256": f["sha256"], "mtime_ns": st.st_mtime_ns}
            write_json_atomic(self.path, self.data)


def publish_listing(weights_dir: Path, listing: dict, origin: str = "peer") -> None:
    """``origin``: "hub" on the seed (it downloads from the hub), "peer" on a host that copies."""
    write_json_atomic(state_dir(weights_dir) / FANOUT_LISTING,
                      dict({k: listing.get(k) for k in LISTING_KEYS}, origin=origin))


class Publisher:
    """On the seed: while the real client downloads, hash every file that reached its final name
    with its full size against the listing and record it in verified.json, so the mirror can
    serve it before the whole model is there (pipelining)."""

    def __init__(self, weights_dir: Path, listing: dict, log: VerifiedLog | None = None, interval: float = 0.2,
                 background: bool = True, origin: str = "hub"):
        self.dir = weights_dir
        self.files = [f for f in listing["files"] if f.get("sha256")]
        self.log = log or VerifiedLog(weights_dir)
        self.interval = interval
        self.tried: dict[str, int] = {}  # path -> mtime_ns of a copy that did not match
        self._stop = threading.Event()
        self._thread = None
        publish_listing(weights_dir, listing, origin)
        if background:
            self._thread = threading.Thread(target=self._loop, name="sgl-weights-publish", daemon=True)
            self._thread.start()

    def scan(self) -> int:
        n = 0
        for f in self.files:
            if self.log.valid(f):
                continue
            path = self.dir / f["path"]
            try:
                st = path.stat()
            except OSError:
                continue
            if st.st_size != f["size"] or self.tried.get(f["path"]) == st.st_mtime_ns:
                continue
            if sha256_file(path) == f["sha256"] and path.stat().st_mtime_ns == st.st_mtime_ns:
                self.log.record(f)
                n += 1
            else:
                self.tried[f["path"]] = st.st_mtime_ns
        return n

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:  # never kill the download because of publishing
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)


class _CheckedEntries(dict):
    """Verified entries; ``get`` (the file route) checks again that the file is unchanged on disk."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def get(self, path, default=None):
        entry = super().get(path)
        if entry is None or not self.log.valid({"path": path, "size": entry.size, "sha256": entry.sha256}):
            return default
        return entry


class LiveCatalog:
    """What a fan-out mirror may serve: the whole dir once complete, else the verified files."""

    def __init__(self, weights_dir: Path):
        self.dir = Path(weights_dir)
        self._key = None
        self._lock = threading.Lock()
        self.listing = None
        self.entries: dict[str, RepoEntry] = {}
        self.complete = False

    def _stamp(self):
        out = []
        for p in (self.dir / MARKER, self.dir / MANIFEST, state_dir(self.dir) / FANOUT_LISTING,
                  state_dir(self.dir) / VERIFIED):
            try:
                st = p.stat()
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def stamp_key(self):
        """Changes whenever what this mirror may serve can have changed (cheap: a few stats)."""
        return self._stamp()

    def refresh(self) -> None:
        with self._lock:
            key = self._stamp()
            if key == self._key:
                return
            self._key = key
            if evaluate(self.dir)["complete"]:
                manifest = read_json(self.dir / MANIFEST)
                self.listing = {k: manifest.get(k) for k in LISTING_KEYS}
                self.entries = {f["path"]: RepoEntry(f["path"], f["size"], f["sha256"], self.dir / f["path"])
                                for f in manifest["files"]}
                self.complete = True
                return
            self.complete = False
            self.listing = read_json(state_dir(self.dir) / FANOUT_LISTING)
            self.entries = {}
            if not self.listing:
                return
            log = VerifiedLog(self.dir)
            self.entries = _CheckedEntries(log)
            for f in self.listing.get("files", []):
                if log.valid(f):
                    self.entries[f["path"]] = RepoEntry(f["path"], f["size"], f["sha256"], self.dir / f["path"])

    @property
    def origin(self):
        """"hub" while this host's own download from the hub runs (the fan-out seed)."""
        self.refresh()
        return "complete" if self.complete else (self.listing or {}).get("origin")

    @property
    def pending_bytes(self) -> int:
        """Bytes of the listing not verified here yet (0 once complete)."""
        self.refresh()
        if self.complete or not self.listing:
            return 0
        return sum(f["size"] for f in self.listing.get("files", []) if f["path"] not in self.entries)

    @property
    def sends_once(self) -> bool:
        """The seed while a large file is still to come from the hub: it sends each file once
        (its uplink is the only way out for that file). With only small files left, it is
        as free as a complete host: the last shard leaves it as often as peers ask."""
        return seeding(self.origin, self.pending_bytes)

    @property
    def model_id(self):
        self.refresh()
        return (self.listing or {}).get("model_id")

    @property
    def revision(self):
        self.refresh()
        return (self.listing or {}).get("revision")

    def has_model(self, model_id: str) -> bool:
        return model_id == self.model_id

    def entries_for(self, model_id: str, revision: str):
        self.refresh()
        if not self.listing or model_id != self.listing.get("model_id") or revision != self.listing.get("revision"):
            return None
        return self.entries

    def state(self, with_listing: bool) -> dict:
        self.refresh()
        out = {"ready": bool(self.listing), "complete": self.complete, "verified": sorted(self.entries),
               "origin": "complete" if self.complete else (self.listing or {}).get("origin", "peer"),
               "pending_bytes": self.pending_bytes}
        prog = progress_report(self.dir)  # the fetch/copy filling this dir: failed (also: its pid is gone)?
        out.update(fetch_state=prog.get("state"), fetch_role=prog.get("role", "fetch"),
                   fetch_msg=prog.get("msg", "") if prog.get("failed") else "")
        if with_listing:
            out["listing"] = self.listing
        return out


class RateLimiter:
    """Token bucket: callers sleep so the long-run rate stays <= bps (0: no limit). Like a NIC's
    shaper it holds ``burst_s`` seconds of credit: a sender that fell behind its schedule (a
    busy CPU, a slow disk) catches up by at most that much instead of losing the time for good;
    an idle one starts with at most that much. It starts empty."""

    def __init__(self, bps: float, burst_s: float = 0.25):
        self.bps = float(bps)
        self.burst_s = max(0.0, float(burst_s))
        self.next_t = time.monotonic()
        self.lock = threading.Lock()

    def consume(self, n: int) -> None:
        if self.bps <= 0:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now - self.burst_s, self.next_t)
            self.next_t = start + n / self.bps
            wait = self.next_t - now
        if wait > 0:
            time.sleep(wait)


def _holders(handler) -> int:
    try:
        return max(0, int(handler.headers.get(HOLDERS_HEADER) or 1 << 30))
    except ValueError:
        return 1 << 30


class FanoutHandler(HubHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.rstrip("/") == FANOUT_STATE_PATH:  # polled often: answered without an access-log line
            query = urllib.parse.parse_qs(url.query)
            if "version" in query:  # long poll: answer once the state differs from the caller's version
                self.server.wait_change(int(query["version"][-1]), min(float(query.get("wait", ["5"])[-1]), 30.0))
            raw = json.dumps(self.server.fanout_state(query.get("listing", ["1"])[-1] != "0")).encode()
            self.server.state_answers += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return None
        return super().do_GET()


class FanoutServer(HubServer):
    """The LAN mirror: at most ``limit`` file bodies at once (0: no limit), all bodies together
    at most ``upload_bps`` (the per-host cap; 0: no cap)."""

    handler_class = FanoutHandler

    def __init__(self, address, catalog, access_log=None, limit: int = 0, upload_bps: float = 0,
                 watch_interval: float = 0.1):
        self.limit = limit
        self.limiter = RateLimiter(upload_bps) if upload_bps else None
        self.uploads = self.peak_uploads = 0
        self.version = 0  # bumped on every change a peer cares about: a newly verified file, a slot taken/freed
        self._slots = threading.Condition(threading.Lock())
        self._rank: dict[int, tuple] = {}  # ticket -> (holders of its file, ticket) of the bodies taking turns
        self._ticket = 0
        self._sending: dict[int, str] = {}  # ticket -> repo path of the body going out
        self._active: int | None = None  # the body that has the uplink (kept until it ends)
        self._moved = 0.0  # when it last sent a chunk
        self._sent: dict[str, float] = {}  # path -> when a whole body of it last went out
        self._state_cache: dict[bool, tuple] = {}  # with_listing -> (key, built at, state)
        self.state_answers = 0
        super().__init__(address, catalog, access_log=access_log)
        if hasattr(catalog, "stamp_key"):
            threading.Thread(target=self._watch, args=(watch_interval,), name="sgl-mirror-watch", daemon=True).start()

    def _watch(self, interval: float) -> None:
        """Notice what the fetch/copy process verified (its files: a few stats per tick)."""
        last = None
        while True:
            key = self.catalog.stamp_key()
            with self._slots:
                now = time.monotonic()
                expired = [p for p, t in self._sent.items() if now - t >= SENT_GRACE_S]
                for p in expired:
                    del self._sent[p]
            if key != last or expired:
                last = key
                self.bump()
            time.sleep(interval)

    def bump(self) -> None:
        with self._slots:
            self.version += 1
            self._slots.notify_all()

    def wait_change(self, version: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._slots:
            while self.version == version and (left := deadline - time.monotonic()) > 0:
                self._slots.wait(left)

    def admit(self, handler) -> bool:
        path = getattr(handler, "sgl_path", None) or ""
        with self._slots:
            if self.limit and self.uploads >= self.limit:
                return False
            if path and path in self._busy_paths() and getattr(self.catalog, "sends_once", False):
                return False  # the downloading seed sends each file once: the peer getting it passes it on
            self.uploads += 1
            self.peak_uploads = max(self.peak_uploads, self.uploads)
            self._ticket += 1
            handler.sgl_ticket = self._ticket
            self._sending[self._ticket] = getattr(handler, "sgl_path", None) or ""
            return True  # no version bump: a busier source is news to nobody (a freed slot is)

    def release(self, handler) -> None:
        ticket = getattr(handler, "sgl_ticket", None)
        with self._slots:
            self.uploads -= 1
            path = self._sending.pop(ticket, None)
            self._rank.pop(ticket, None)
            if path and getattr(handler, "sgl_sent_all", False):
                self._sent[path] = time.monotonic()
            if self._active == ticket:
                self._active = None
            self.version += 1
            self._slots.notify_all()

    def fanout_state(self, with_listing: bool) -> dict:
        """What this mirror has and does. Every change wakes all the peers' long polls at once:
        the answer is built once per change (and at least once a second: the fetch's progress)."""
        with self._slots:
            key = (self.version, self.uploads, with_listing)
        now = time.monotonic()
        cached = self._state_cache.get(with_listing)
        if cached and cached[0] == key and now - cached[1] < 1.0:
            return cached[2]
        state = self.catalog.state(with_listing) if hasattr(self.catalog, "state") else {
            "ready": True, "complete": True, "verified": sorted(self.catalog.entries)}
        with self._slots:
            state.update(uploads=self.uploads, limit=self.limit, peak_uploads=self.peak_uploads,
                         bytes_sent=self.bytes_sent, version=self.version, sending=sorted(self._busy_paths()))
            key = (self.version, self.uploads, with_listing)
        self._state_cache[with_listing] = (key, now, state)
        return state

    def _my_turn(self, handler, stalled: float = 0.5) -> None:
        """The uplink goes to one body at a time: the rarest file's (fewest hosts have it, as the
        copier said), then the oldest. A peer that gets a whole shard sooner can pass it on
        sooner: the tree fills in fewer full-speed hops than with every body at 1/limit of the
        uplink, and the newest shard waits for at most one body. A body keeps the uplink until it
        ends (one that started is never starved by rarer ones arriving). The others wait while it
        moves; once it has not moved for ``stalled`` seconds (a stuck reader), they go on."""
        me = handler.sgl_ticket
        with self._slots:
            self._rank.setdefault(me, (_holders(handler), me))
            while True:
                if self._active not in self._rank:
                    self._active = min(self._rank, key=self._rank.__getitem__)
                    self._moved = time.monotonic()
                if self._active == me:
                    self._moved = time.monotonic()
                    return
                left = self._moved + stalled - time.monotonic()
                if left <= 0:
                    return
                self._slots.wait(left)

    def _busy_paths(self) -> set:
        """Files going out now or sent whole in the last SENT_GRACE_S seconds (the peer that got
        one is about to announce it). Call with ``_slots`` held."""
        now = time.monotonic()
        return set(self._sending.values()) | {p for p, t in self._sent.items() if now - t < SENT_GRACE_S}

    def send_body(self, handler, f, entry, start, length) -> int:
        """Chunk by chunk with sendfile(2), each chunk paced by the upload cap (if any) and
        handed out in the uplink's order (``_my_turn``; without a cap the socket paces it). A
        small body (config, tokenizer: <= SMALL_BODY) never waits its turn: it costs the body
        that has the uplink nothing, and the last hosts often wait only for it."""
        chunk = max(64 << 10, min(1 << 20, int(self.limiter.bps) // 20)) if self.limiter else 1 << 20
        ordered = self.limit != 1 and length > SMALL_BODY
        sent = 0
        handler.wfile.flush()
        try:
            while sent < length:
                n = min(chunk, length - sent)
                if ordered:
                    self._my_turn(handler)
                if self.limiter:
                    self.limiter.consume(n)
                done = handler.connection.sendfile(f, start + sent, n)  # zero-copy, paced by the bucket
                if not done:
                    break
                sent += done
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            handler.close_connection = True
        return sent


# -- the peer side: copy shard by shard from the candidate sources -----------------------------
class SourceError(Exception):
    """A source failed (unreachable, cut mid-body, busy, bad answer)."""

    def __init__(self, msg: str, busy: bool = False):
        super().__init__(msg)
        self.busy = busy


class Sources:
    """Candidate sources (URLs in preference order) and what each one last said it has."""

    def __init__(self, urls: list[str], poll: float = 0.25, timeout: float = 10.0, dead_for: float = 2.0,
                 watch: bool = False, wait: float = 20.0):
        self.urls = list(dict.fromkeys(u.rstrip("/") for u in urls))
        self.poll, self.timeout, self.dead_for = poll, timeout, dead_for
        self.state: dict[str, tuple[float, dict | None]] = {}
        self.dead_until: dict[str, float] = {}
        self.busy_at: dict[str, int | None] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._conns = threading.local()  # keep-alive connection per (thread, source) for the state polls
        self.watching = watch
        self._closed = threading.Event()
        if watch:  # one long poll per source: a state arrives when it changes, not on a timer
            for url in self.urls:
                threading.Thread(target=self._watch, args=(url, wait), name="sgl-source-watch", daemon=True).start()

    def _watch(self, url: str, wait: float) -> None:
        version = None
        while not self._closed.is_set():
            with self.lock:
                dead = self.dead_until.get(url, 0) - time.monotonic()
            if dead > 0:
                self._closed.wait(dead)
                continue
            path = FANOUT_STATE_PATH + "?listing=0" + (f"&version={version}&wait={wait:g}" if version is not None else "")
            try:
                st = self.get_json(url, path, timeout=self.timeout + wait)
            except SourceError:
                self.mark_dead(url)
                version = None
                continue
            with self.changed:
                self.state[url] = (time.monotonic(), st)
                self.changed.notify_all()
            if st.get("version") is None:  # a mirror without long polls: plain polling
                self._closed.wait(self.poll)
            version = st.get("version")

    def close(self) -> None:
        self._closed.set()

    def wait(self, timeout: float) -> None:
        """Until a source's state changes (watching), or ``timeout`` seconds."""
        if not self.watching:
            time.sleep(timeout)
            return
        with self.changed:
            self.changed.wait(timeout)

    def get_json(self, url: str, path: str, timeout: float | None = None) -> dict:
        import http.client

        conns = self._conns.__dict__.setdefault("by_url", {})
        for attempt in (1, 2):  # a kept-alive connection the source closed: reconnect once
            conn = conns.get(url)
            if conn is None:
                parts = urllib.parse.urlsplit(url)
                conn = conns[url] = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                                               timeout=timeout or self.timeout)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise SourceError(f"{url}: HTTP {resp.status}")
                return json.loads(body)
            except SourceError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure makes the source unusable for a while
                conn.close()
                conns.pop(url, None)
                if attempt == 2 or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                                                        ConnectionResetError)):
                    raise SourceError(f"{url}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def mark_dead(self, url: str) -> None:
        with self.lock:
            self.dead_until[url] = time.monotonic() + self.dead_for
            self.state.pop(url, None)
            self.changed.notify_all()

    def mark_busy(self, url: str) -> None:
        with self.lock:
            if self.watching:  # busy until its state changes (a slot freed)
                cached = self.state.get(url)
                self.busy_at[url] = cached[1].get("version") if cached else None
            else:
                self.state.pop(url, None)  # ask again next time

    def view(self, url: str) -> dict | None:
        """The source's state (cached for ``poll`` seconds, or as last watched), None while it is
        dead/unreachable."""
        now = time.monotonic()
        with self.lock:
            if self.dead_until.get(url, 0) > now:
                return None
            cached = self.state.get(url)
            if self.watching:
                if not cached:
                    return None
                st = cached[1]
                if url in self.busy_at and self.busy_at[url] == st.get("version"):
                    return dict(st, uploads=max(st.get("uploads", 0), st.get("limit") or 1 << 30))
                return st
            if cached and now - cached[0] < self.poll:
                return cached[1]
        try:
            st = self.get_json(url, FANOUT_STATE_PATH + "?listing=0")
        except SourceError:
            self.mark_dead(url)
            return None
        with self.lock:
            self.state[url] = (time.monotonic(), st)
        return st

    def hopeless(self, pending: set[str]) -> str | None:
        """Why no file of ``pending`` can come any more, or None: no live source holds one, and
        no live source is still downloading from the hub (the seed failed, or every source died)."""
        views = {url: self.view(url) for url in self.urls}
        alive = {u: v for u, v in views.items() if v}
        if any(pending & set(v.get("verified", ())) for v in alive.values()):
            return None
        if any(v.get("fetch_state") != "failed" and v.get("fetch_role") != "copy" and not v.get("complete")
               for v in alive.values()):
            return None  # a seed is still downloading
        failed = [f"{u}: {v['fetch_msg']}" for u, v in alive.items() if v.get("fetch_state") == "failed"]
        dead = [u for u, v in views.items() if not v]
        return ("no source has or can still get " + ", ".join(sorted(pending)[:3])
                + (f"; failed: {'; '.join(failed)}" if failed else "")
                + (f"; unreachable: {', '.join(dead)}" if dead else "")
                + "; partial files are kept, rerun to resume")

    def listing(self) -> dict | None:
        for url in self.urls:
            try:
                st = self.get_json(url, FANOUT_STATE_PATH)
            except SourceError:
                continue
            if st.get("listing"):
                return st["listing"]
        return None

    def snapshot(self) -> "SourceSnapshot":
        """What every live source has now, and how many of them hold each file (its rarity)."""
        return SourceSnapshot({url: self.view(url) for url in self.urls})

    def choose(self, path: str, avoid=(), snap: "SourceSnapshot | None" = None) -> str | None:
        """A source that has ``path`` verified and a free upload slot, or None (wait).

        Rarest first: a source holding a file that fewer hosts have than ``path`` (above all the
        seed and the first peers with the newest shard) keeps its uplink for that file; it gets
        ``path`` only when no other holder exists. Likewise the seed while it downloads: it sends
        each file once (a file it is already sending reaches the others through that peer). So
        when such a source is the best free one but a plainer holder exists (busy now), wait for
        that one. Among the rest: a peer still copying, then a complete host; the least busy;
        then preference (tree) order; an idle plain peer ends the search."""
        snap = snap or self.snapshot()
        rank = snap.holders.get(path, 0)
        best, best_key, plain_holder = None, None, False
        for i, url in enumerate(self.urls):
            st = snap.views.get(url)
            if url in avoid or not st or path not in st.get("verified", ()):
                continue
            origin, once = st.get("origin"), seeding(st.get("origin"), st.get("pending_bytes"))
            if once and path in st.get("sending", ()):
                plain_holder = True  # a peer is getting it from the seed: wait for that peer
                continue
            reserved = once or snap.rarest(url, path) < rank
            plain_holder = plain_holder or not reserved
            load = st.get("uploads", 0)
            if st.get("limit") and load >= st["limit"]:
                continue
            key = (reserved, origin == "complete", load, i)
            if key[:3] == (False, False, 0):
                return url
            if best_key is None or key < best_key:
                best, best_key = url, key
        if best_key and best_key[0] and plain_holder:
            return None
        return best


def seeding(origin: str | None, pending_bytes: int | None) -> bool:
    """Does a source with this state keep its uplink for what it still downloads from the hub
    (sends each file once)? The seed, while more than SMALL_BODY is still to come."""
    return origin == "hub" and (pending_bytes is None or pending_bytes > SMALL_BODY)


class SourceSnapshot:
    """One look at every source: ``views`` (url -> state, None when dead) and ``holders``
    (path -> how many live sources have it verified)."""

    def __init__(self, views: dict):
        self.views = views
        self.holders = collections.Counter(p for v in views.values() if v for p in v.get("verified", ()))
        self._rarest: dict[tuple, int] = {}

    def rarest(self, url: str, other_than: str) -> int:
        """The fewest holders of any file ``url`` has verified, ``other_than`` left out."""
        key = (url, other_than)
        if key not in self._rarest:
            counts = [self.holders[p] for p in (self.views.get(url) or {}).get("verified", ()) if p != other_than]
            self._rarest[key] = min(counts, default=1 << 30)
        return self._rarest[key]


def file_url(source: str, model_id: str, revision: str, path: str) -> str:
    owner, name = model_id.split("/", 1)
    q = urllib.parse.urlencode({"Revision": revision, "FilePath": path})
    return f"{source}/api/v1/models/{urllib.parse.quote(owner)}/{urllib.parse.quote(name)}/repo?{q}"


class PartialFile:
    """``<f>.incomplete`` with the sha256 of what it holds; resumes from any source."""

    def __init__(self, weights_dir: Path, f: dict):
        self.f = f
        self.final = weights_dir / f["path"]
        self.tmp = self.final.with_name(self.final.name + ".incomplete")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.hasher = hashlib.sha256()
        self.offset = 0
        if self.tmp.exists():
            if self.tmp.stat().st_size > f["size"]:
                self.tmp.unlink()
            else:
                with open(self.tmp, "rb") as fh:
                    while block := fh.read(HASH_CHUNK):
                        self.hasher.update(block)
                        self.offset += len(block)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)
        self.hasher, self.offset = hashlib.sha256(), 0

    def pull(self, url: str, timeout: float, limiter: RateLimiter | None, holders: int | None = None) -> None:
        """Append the bytes from ``offset`` on; SourceError when the source fails mid-way.
        ``holders``: how many sources have the file (the mirror sends the rarest body first)."""
        import urllib.error
        import urllib.request

        if self.offset >= self.f["size"]:
            return
        headers = {"Range": f"bytes={self.offset}-"}
        if holders:
            headers[HOLDERS_HEADER] = str(holders)
        req = urllib.request.Request(url, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise SourceError(f"HTTP {exc.code}", busy=exc.code in (429, 503)) from None
        except Exception as exc:  # noqa: BLE001
            raise SourceError(f"{type(exc).__name__}: {exc}") from None
        with resp:
            if resp.status != 206 or not (resp.headers.get("Content-Range") or "").startswith(f"bytes {self.offset}-"):
                raise SourceError(f"answered {resp.status} without the range from {self.offset}")
            buf = memoryview(bytearray(1 << 20))
            with open(self.tmp, "ab") as out:
                try:
                    while self.offset < self.f["size"]:
                        n = resp.readinto(buf[: min(len(buf), self.f["size"] - self.offset)])
                        if not n:
                            break
                        if limiter:
                            limiter.consume(n)
                        out.write(buf[:n])
                        self.hasher.update(buf[:n])
                        self.offset += n
                except Exception as exc:  # noqa: BLE001 - cut mid-body: keep what we have
                    out.flush()
                    raise SourceError(f"cut at byte {self.offset}: {type(exc).__name__}: {exc}") from None
        if self.offset < self.f["size"]:
            raise SourceError(f"cut at byte {self.offset} of {self.f['size']}")

    def finish(self) -> bool:
        """True: the sha256 matches, the file has its final name. False: discarded (corrupt)."""
        if self.offset == self.f["size"] and self.hasher.hexdigest() == self.f["sha256"]:
            os.replace(self.tmp, self.final)
            return True
        self.discard()
        return False


class CopyScheduler:
    """The peer's copy loop. Each worker takes the rarest missing file (fewest sources have it;
    then listing order) that some source can send now (never a second slot of a source it
    already uses), so a file the sources do not have yet blocks nothing, and the newest shard
    spreads first: by the time the last one leaves the hub, the older ones are everywhere. A
    file cut mid-way keeps its partial bytes and hash state and resumes from the next source;
    a copy whose sha256 does not match is deleted and that source is not asked for that file
    again (unless nobody else has it)."""

    def __init__(self, weights_dir: Path, files: list[dict], listing: dict, sources: Sources, log: VerifiedLog,
                 limiter: RateLimiter | None, deadline: float, stall_s: float = 30.0):
        self.dir, self.listing, self.sources, self.log = weights_dir, listing, sources, log
        self.limiter, self.deadline = limiter, deadline
        self.pending = list(files)
        self.parts: dict[str, PartialFile] = {}
        self.corrupt_from: dict[str, set] = collections.defaultdict(set)
        self.busy_paths: set[str] = set()
        self.busy_urls: set[str] = set()
        self.events: list[dict] = []
        self.errors: list[WeightsError] = []
        self.lock = threading.Lock()
        self.stall_s = stall_s
        self.hopeless_since: float | None = None

    def claim(self):
        """-> (file, url, holders), None (nothing available right now) or "done"."""
        with self.lock:
            if not self.pending:
                return "done"
            files = [f for f in self.pending if f["path"] not in self.busy_paths]
            mine = set(self.busy_urls)
        snap = self.sources.snapshot()
        files.sort(key=lambda f: snap.holders.get(f["path"]) or 1 << 30)  # rarest first (stable: listing order)
        for f in files:
            if not snap.holders.get(f["path"]):
                continue
            bad = self.corrupt_from[f["path"]]
            url = self.sources.choose(f["path"], avoid=mine | bad, snap=snap)
            if url is None and bad and self.sources.choose(f["path"], avoid=mine, snap=snap) is None:
                bad.clear()  # nobody else has it: let the sources that failed the hash try again
            if url is not None:
                with self.lock:
                    if f["path"] in self.busy_paths or url in self.busy_urls:
                        continue
                    self.busy_paths.add(f["path"])
                    self.busy_urls.add(url)
                return f, url, snap.holders[f["path"]]
        return None

    def attempt(self, f: dict, url: str, holders: int | None = None) -> None:
        part = self.parts.get(f["path"]) or self.parts.setdefault(f["path"], PartialFile(self.dir, f))
        started = time.time()
        try:
            part.pull(file_url(url, self.listing["model_id"], self.listing["revision"], f["path"]),
                      self.sources.timeout, self.limiter, holders)
        except SourceError as exc:
            if exc.busy:
                self.sources.mark_busy(url)
            else:
                self.sources.mark_dead(url)
                self.events.append({"event": "switch", "path": f["path"], "source": url, "offset": part.offset,
                                    "msg": str(exc)})
            return
        if part.finish():
            self.log.record(f)
            with self.lock:
                self.pending.remove(f)
                self.parts.pop(f["path"], None)
            self.events.append({"event": "copied", "path": f["path"], "source": url, "t0": round(started, 3),
                                "t1": round(time.time(), 3)})
            return
        self.corrupt_from[f["path"]].add(url)
        self.events.append({"event": "corrupt", "path": f["path"], "source": url})

    def worker(self) -> None:
        idle = 0  # polls in a row that found nothing to do: wait up to 2 x poll between them
        while not self.errors:
            job = self.claim()
            if job == "done":
                return
            if job is None:
                with self.lock:
                    pending = {f["path"] for f in self.pending}
                why = self.sources.hopeless(pending) if pending else None
                if why is None:
                    self.hopeless_since = None
                elif self.hopeless_since is None:
                    self.hopeless_since = time.monotonic()
                elif time.monotonic() - self.hopeless_since > self.stall_s:
                    self.errors.append(WeightsError(EXIT_HUB_UNREACHABLE, why))
                    return
                if time.monotonic() > self.deadline:
                    with self.lock:
                        waiting = [f["path"] for f in self.pending]
                    self.errors.append(WeightsError(
                        EXIT_HUB_UNREACHABLE, f"no source served {', '.join(waiting[:3])} in time (sources: "
                        f"{', '.join(self.sources.urls)}); partial files are kept, rerun to resume"))
                    return
                idle += 1
                self.sources.wait(self.sources.poll * min(2.0, 0.5 + idle / 4) * (4 if self.sources.watching else 1))
                continue
            idle = 0
            f, url, holders = job
            try:
                self.attempt(f, url, holders)
            except OSError as exc:
                self.errors.append(classify_client_error(exc, "the fan-out sources", f"copying {f['path']}"))
            finally:
                with self.lock:
                    self.busy_paths.discard(f["path"])
                    self.busy_urls.discard(url)

    def run(self, workers: int) -> None:
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(max(1, workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]


def copy_from_peers(args) -> dict:
    """The ``copy`` subcommand: a fan-out peer fills --dir from the --source mirrors."""
    weights_dir = Path(args.dir)
    status = evaluate(weights_dir, args.model_id, args.revision, args.allow, args.ignore)
    if status["complete"]:
        return {"changed": False, "complete": True, "total_bytes": status["total_bytes"],
                "msg": f"weights already complete in {weights_dir}; no source contacted"}
    weights_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(weights_dir, "copy"):
        prog = Progress(weights_dir, args.model_id, args.revision, interval=args.progress_interval)
        prog.write(state="listing", endpoint=", ".join(args.source), role="copy")
        try:
            return _copy_locked(args, weights_dir, prog)
        except WeightsError as exc:
            prog.write(state="failed", msg=exc.msg, rc=exc.rc)
            raise
        except BaseException as exc:
            prog.write(state="failed", msg=f"interrupted: {type(exc).__name__}: {exc}", rc=EXIT_ERROR)
            raise
        finally:
            prog.stop()


def _copy_locked(args, weights_dir: Path, prog: Progress) -> dict:
    sources = Sources(args.source, poll=args.poll, timeout=args.source_timeout, watch=True)
    try:
        return _copy_with(args, weights_dir, prog, sources)
    finally:
        sources.close()


def _copy_with(args, weights_dir: Path, prog: Progress, sources: Sources) -> dict:
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    listing, hopeless_since = None, None
    while listing is None:
        listing = sources.listing()
        if listing is None:
            why = sources.hopeless({"the listing"})
            hopeless_since = None if why is None else (hopeless_since or time.monotonic())
            if time.monotonic() > deadline or (why and time.monotonic() - hopeless_since > args.stall_s):
                raise WeightsError(EXIT_HUB_UNREACHABLE, why or f"no fan-out source had a listing: {', '.join(sources.urls)}")
            time.sleep(args.poll)
    want = {"model_id": args.model_id, "revision": args.revision, "allow_patterns": list(args.allow or []),
            "ignore_patterns": list(args.ignore or [])}
    for key, value in want.items():
        if (listing.get(key) or ([] if key.endswith("patterns") else None)) != value:
            raise WeightsError(EXIT_USAGE, f"the fan-out sources serve {key}={listing.get(key)!r}, this host wants {value!r}")
    if any(not f.get("sha256") for f in listing["files"]):
        raise WeightsError(EXIT_INTEGRITY, "the fan-out listing lacks sha256 for some files; cannot verify copies")
    space = space_check(weights_dir, listing, args.margin_gb)
    if not space["space_ok"]:
        raise WeightsError(EXIT_DISK, space["space_msg"], **space)
    remove_marker(weights_dir)
    log = VerifiedLog(weights_dir)
    Publisher(weights_dir, listing, log=log, background=False, origin="peer").scan()  # leftovers: hashed once
    todo = [f for f in listing["files"] if not log.valid(f)]
    prog.start(listing["files"], endpoint=", ".join(sources.urls))
    limiter = RateLimiter(args.max_download_bps) if args.max_download_bps else None
    sched = CopyScheduler(weights_dir, todo, listing, sources, log, limiter, deadline, args.stall_s)
    sched.run(args.workers)
    events = sched.events
    prog.stop()
    prog.write(state="finalizing")
    manifest = build_manifest(listing, weights_dir)
    write_complete(weights_dir, manifest)
    by_source = collections.Counter(e["source"] for e in events if e["event"] == "copied")
    msg = (f"{fmt_bytes(manifest['total_bytes'])} in {manifest['file_count']} files from {len(by_source)} peer(s) "
           f"({fmt_duration(time.monotonic() - t0)}; {len(todo)} copied, "
           f"{sum(e['event'] == 'switch' for e in events)} source switch(es), "
           f"{sum(e['event'] == 'corrupt' for e in events)} corrupt copy(ies) refetched)")
    prog.write(state="done", msg=msg, bytes_done=manifest["total_bytes"], bytes_total=manifest["total_bytes"],
               files_done=manifest["file_count"], files_total=manifest["file_count"], eta_s=0)
    return {"changed": True, "complete": True, "msg": "copied " + msg, "total_bytes": manifest["total_bytes"],
            "file_count": manifest["file_count"], "copied": [f["path"] for f in todo], "by_source": dict(by_source),
            "events": events}


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def _add_repo_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model-id", required=required, help="owner/name on the hub")
    p.add_argument("--revision", default="master" if required else None, help="branch, tag or commit (default master)")
    p.add_argument("--allow", action="append", default=[], metavar="GLOB", help="allow pattern (repeatable)")
    p.add_argument("--ignore", action="append", default=[], metavar="GLOB", help="ignore pattern (repeatable)")


def _add_hub_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub", choices=("modelscope", "huggingface"), default="modelscope")
    p.add_argument("--endpoint", default="", help="ModelScope endpoint URL (empty: the client's default)")
    p.add_argument("--hf-endpoint", default="", help="Hugging Face endpoint/mirror (HF_ENDPOINT)")
    p.add_argument("--margin-gb", type=float, default=10.0, help="free space to keep beyond the download")
    p.add_argument("--max-workers", type=int, default=4, help="files in parallel")
    p.add_argument("--file-timeout", type=int, default=21600, help="MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT (s per file)")
    p.add_argument("--parallel-workers", type=int, default=1, help="MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS")
    p.add_argument("--progress-interval", type=float, default=2.0, help="seconds between progress samples")


def add_subcommands(sub) -> None:
    p = sub.add_parser("listing", help="hub file listing + total size (+ free space check with --dir)")
    _add_repo_args(p)
    _add_hub_args(p)
    p.add_argument("--dir", help="weights dir: also check free space against what is still missing")
    p.add_argument("--files", action="store_true", help="include the file list in the output")
    p.set_defaults(handler=cmd_listing)

    p = sub.add_parser("status", help="is the weights dir complete? (stat only, offline)")
    p.add_argument("--dir", required=True)
    _add_repo_args(p, required=False)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("fetch", help="download into --dir, then MANIFEST.json, then the marker")
    p.add_argument("--dir", required=True)
    _add_repo_args(p)
    _add_hub_args(p)
    p.add_argument("--force", action="store_true", help="contact the hub even if the marker says complete")
    p.add_argument("--publish", action="store_true",
                   help="fan-out seed: record each file hashed against the listing, for serve-mirror --live")
    p.set_defaults(handler=cmd_fetch)

    p = sub.add_parser("verify", help="rehash every file against MANIFEST.json")
    p.add_argument("--dir", required=True)
    _add_repo_args(p, required=False)
    _add_hub_args(p)
    p.add_argument("--hash-workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--delete-bad", action="store_true", help="delete mismatching files and the marker")
    p.add_argument("--repair", action="store_true", help="delete mismatching files, then re-fetch them")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("progress", help="one JSON progress report of the fetch running on --dir")
    p.add_argument("--dir", required=True)
    p.set_defaults(handler=lambda a: progress_report(Path(a.dir)))

    p = sub.add_parser("serve-mirror", help="serve a complete weights dir with the ModelScope protocol")
    p.add_argument("--dir", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=18181)
    p.add_argument("--pidfile")
    p.add_argument("--access-log")
    p.add_argument("--max-seconds", type=float, default=0, help="exit after this long (0: until SIGTERM)")
    p.add_argument("--live", action="store_true",
                   help="fan-out: serve the verified files of a dir still being filled (never a partial file)")
    p.add_argument("--fanout-limit", type=int, default=0, help="file bodies served at once (0: no limit; 503 beyond)")
    p.add_argument("--max-upload-bps", type=float, default=0, help="cap on all uploads together, bytes/s (0: none)")
    p.set_defaults(handler=serve_mirror)

    p = sub.add_parser("copy", help="fan-out peer: copy --dir shard by shard from the --source mirrors")
    p.add_argument("--dir", required=True)
    _add_repo_args(p)
    p.add_argument("--source", action="append", required=True, metavar="URL",
                   help="a peer's mirror, e.g. http://10.0.0.2:18181 (repeatable; preference order)")
    p.add_argument("--margin-gb", type=float, default=10.0, help="free space to keep beyond the copy")
    p.add_argument("--workers", type=int, default=2, help="files copied at once (each from another source)")
    p.add_argument("--max-download-bps", type=float, default=0, help="cap on this host's copies, bytes/s (0: none)")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between asking a source what it has")
    p.add_argument("--source-timeout", type=float, default=30, help="socket timeout towards a source (s)")
    p.add_argument("--timeout", type=float, default=43200, help="give up after this long (s)")
    p.add_argument("--stall-s", type=float, default=30,
                   help="give up once no source has or can still get a missing file for this long (the seed failed)")
    p.add_argument("--progress-interval", type=float, default=2.0, help="seconds between progress samples")
    p.set_defaults(handler=copy_from_peers)

    p = sub.add_parser("stop-mirror", help="stop the mirror of --dir (or --pidfile)")
    p.add_argument("--dir", default=".")
    p.add_argument("--pidfile")
    p.set_defaults(handler=stop_mirror)


def cmd_listing(args) -> dict:
    listing = get_listing(args)
    out = {k: v for k, v in listing.items() if k != "files" or args.files}
    if args.dir:
        out.update(space_check(Path(args.dir), listing, args.margin_gb))
        if not out["space_ok"]:
            raise WeightsError(EXIT_DISK, out.pop("space_msg"), **out)
    return out


def cmd_status(args) -> dict:
    out = evaluate(Path(args.dir), args.model_id, args.revision if args.model_id else None, args.allow, args.ignore)
    out["changed"] = False
    return out


def cmd_fetch(args) -> dict:
    return fetch(args)


def cmd_verify(args) -> dict:
    if args.repair and not args.model_id:
        manifest = read_json(Path(args.dir) / MANIFEST) or {}
        args.model_id = manifest.get("model_id")
        args.revision = args.revision or manifest.get("revision")
        args.allow = args.allow or manifest.get("allow_patterns") or []
        args.ignore = args.ignore or manifest.get("ignore_patterns") or []
    if args.repair and not args.model_id:
        raise WeightsError(EXIT_USAGE, "--repair needs --model-id (or a MANIFEST.json)")
    return verify(args)


def run(args) -> int:
    """Run a parsed subcommand: print one JSON object, return the exit code."""
    if hasattr(args, "file_timeout"):  # the clients read their env knobs (and tqdm its) at import
        os.environ.update(client_env(args))
    try:
        result = args.handler(args)
        rc = EXIT_OK
        if args.handler is cmd_status and not result["complete"]:
            rc = EXIT_INCOMPLETE
        result.setdefault("rc", rc)
    except WeightsError as exc:
        rc = exc.rc
        result = dict(exc.details, failed=True, rc=rc, msg=exc.msg)
        print(f"sgl_weights: error: {exc.msg}", file=sys.stderr)
    except KeyboardInterrupt:
        rc = 130
        result = {"failed": True, "rc": rc, "msg": "interrupted"}
    except Exception as exc:  # noqa: BLE001 - last resort: still one JSON object
        import traceback

        rc = EXIT_ERROR
        result = {"failed": True, "rc": rc, "msg": f"unexpected error: {type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
        print(result["traceback"], file=sys.stderr)
    print(json.dumps(result, sort_keys=True, default=list))
    sys.stdout.flush()
    return rc


# `sgl-deploy weights <subcommand>` (src/sgl_deploy/weights.py is this file)
def register(subparsers) -> None:
    p = subparsers.add_parser("weights", help="model weights: listing, status, fetch, verify, mirror")
    add_subcommands(p.add_subparsers(dest="weights_cmd", metavar="<subcommand>", required=True))
    p.set_defaults(func=run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sgl_weights.py", description=__doc__.split("\n\n")[0])
    add_subcommands(parser.add_subparsers(dest="cmd", metavar="<subcommand>", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
