"""The model_weights role's host tool (roles/model_weights/files/sgl_weights.py) with the real
ModelScope client against the lab hub on 127.0.0.1: resume after kill -9, verify + re-fetch,
offline reruns, clear failures, the disk-space gate, manifest-then-marker, the LAN mirror."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import sys
import time
import types
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab" / "hub"))
import harness  # noqa: E402

sw = harness.proto  # the tool module itself (stdlib-only at import)
M3 = "SglLab/MiniMax-M3-Lab"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
needs_client = pytest.mark.skipif(harness.sglang_python() is None, reason="needs .venv-sglang (SGL_SGLANG_PYTHON)")


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    if harness.sglang_python() is None:
        pytest.skip("needs .venv-sglang")
    root = tmp_path_factory.mktemp("hubroot")
    harness.make_repo(root, "m3", shards=2, shard_mib=2)
    return root


@pytest.fixture
def hub(hub_root, tmp_path):
    h = harness.Hub(hub_root, tmp_path / "access.log")
    yield h
    try:
        h.stop()
    except OSError:
        pass


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(repo: Path) -> dict:
    """Repo files only (no MANIFEST.json, marker or .sgl-weights state)."""
    return {p.relative_to(repo).as_posix(): sha(p) for p in sorted(repo.rglob("*"))
            if p.is_file() and not p.relative_to(repo).as_posix().startswith(".")
            and p.name != sw.MANIFEST}


def fetch(hub_url, wdir, tmp_path, *extra):
    return harness.run_tool("fetch", "--model-id", M3, "--endpoint", hub_url, "--dir", wdir, "--margin-gb", 0,
                            "--progress-interval", 0.2, *extra, env=harness.tool_env(tmp_path))


# ---------------------------------------------------------------------------------------------
@needs_client
def test_fetch_writes_manifest_then_marker_and_rerun_is_offline_noop(hub, hub_root, tmp_path):
    wdir = tmp_path / "w"
    rc, out, err = fetch(hub.url, wdir, tmp_path)
    assert rc == 0 and out["changed"] and out["complete"], (out, err[-2000:])
    assert tree(wdir) == tree(hub_root / M3)

    manifest = json.loads((wdir / sw.MANIFEST).read_text())
    assert (manifest["model_id"], manifest["revision"], manifest["endpoint"]) == (M3, "master", hub.url)
    assert manifest["created"] and manifest["hub"] == "modelscope"
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == tree(hub_root / M3)
    assert manifest["total_bytes"] == sum(f["size"] for f in manifest["files"]) == out["total_bytes"]
    marker = json.loads((wdir / sw.MARKER).read_text())
    assert marker["manifest_sha256"] == sha(wdir / sw.MANIFEST)
    assert (wdir / sw.MARKER).stat().st_mtime_ns >= (wdir / sw.MANIFEST).stat().st_mtime_ns  # marker last
    gets = harness.file_gets(hub.access_log)
    assert Counter(r["file"] for r in gets) == Counter(tree(hub_root / M3).keys())  # each file once

    n_requests = len(harness.access(hub.access_log))
    t0 = time.monotonic()
    rc, out, _ = fetch(hub.url, wdir, tmp_path)
    assert rc == 0 and out["changed"] is False and "hub not contacted" in out["msg"]
    assert len(harness.access(hub.access_log)) == n_requests  # no request at all, not even a listing
    assert time.monotonic() - t0 < 10
    rc, st, _ = harness.run_tool("status", "--dir", wdir, "--model-id", M3, "--revision", "master")
    assert rc == 0 and st["complete"] and st["reason"] == "marker + manifest present, all sizes match"


@needs_client
def test_kill_midway_then_rerun_resumes_with_range(hub, hub_root, tmp_path):
    wdir = tmp_path / "w"
    hub.faults(throttle_bps=400_000)
    proc = harness.start_tool("fetch", "--model-id", M3, "--endpoint", hub.url, "--dir", wdir, "--margin-gb", 0,
                              "--progress-interval", 0.2, "--max-workers", 2, env=harness.tool_env(tmp_path))
    partial, report, deadline = {}, None, time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = {p.name: p.stat().st_size for p in wdir.glob("*.incomplete")} if wdir.exists() else {}
        report = sw.progress_report(wdir)
        if any(size >= 300_000 for size in parts.values()) and report.get("state") == "downloading":
            partial = parts
            break
        time.sleep(0.1)
    assert partial, f"download did not start: {report}"
    assert re.fullmatch(r"weights [\d.]+/[\d.]+ MB [\d.]+%  (--|[\d.]+ [KM]B/s)( MB/s)?  ETA \S+  \[\d/10 files\]",
                        report["line"]), report["line"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    dead = sw.progress_report(wdir)  # the poller's view of a crashed download
    assert dead["failed"] and "is gone" in dead["msg"] and not dead["done"]
    assert not (wdir / sw.MARKER).exists()
    rc, st, _ = harness.run_tool("status", "--dir", wdir)
    assert rc == sw.EXIT_INCOMPLETE and not st["complete"]

    hub.faults(throttle_bps=None)
    rc, out, err = fetch(hub.url, wdir, tmp_path)
    assert rc == 0, (out, err[-2000:])
    assert tree(wdir) == tree(hub_root / M3)
    resumed = [r for r in harness.file_gets(hub.access_log) if r["range"] and r["start"] > 0]
    assert resumed, "no Range request from a non-zero offset after the kill"
    for r in resumed:
        name = r["file"] + ".incomplete"
        assert name in partial and r["start"] >= partial[name] and r["range"] == f"bytes={r['start']}-"
    assert not list(wdir.glob("*.incomplete"))


@needs_client
def test_verify_detects_corruption_and_refetches_only_that_file(hub, hub_root, tmp_path):
    wdir = tmp_path / "w"
    assert fetch(hub.url, wdir, tmp_path)[0] == 0
    with open(wdir / SHARD2, "r+b") as f:  # same size, different bytes: only a rehash sees it
        f.seek(12345)
        f.write(b"\x00corrupt\x00")
    rc, st, _ = harness.run_tool("status", "--dir", wdir)
    assert rc == 0 and st["complete"]  # status is stat-only by design

    rc, out, _ = harness.run_tool("verify", "--dir", wdir)
    assert rc == sw.EXIT_INTEGRITY and SHARD2 in out["msg"] and [b["path"] for b in out["bad"]] == [SHARD2]
    assert (wdir / sw.MARKER).exists()  # report-only mode changes nothing

    before = len(harness.file_gets(hub.access_log))
    rc, out, err = harness.run_tool("verify", "--dir", wdir, "--endpoint", hub.url, "--repair", "--margin-gb", 0,
                                    env=harness.tool_env(tmp_path))
    assert rc == 0 and out["repaired"] and out["removed"] == [SHARD2], (out, err[-2000:])
    assert [r["file"] for r in harness.file_gets(hub.access_log)[before:]] == [SHARD2]
    assert tree(wdir) == tree(hub_root / M3)
    rc, out, _ = harness.run_tool("verify", "--dir", wdir)
    assert rc == 0 and out["ok"] and (wdir / sw.MARKER).exists()


@needs_client
def test_hub_down_with_complete_weights_succeeds_offline(hub, tmp_path):
    wdir = tmp_path / "w"
    assert fetch(hub.url, wdir, tmp_path)[0] == 0
    hub.stop()
    rc, out, _ = fetch(hub.url, wdir, tmp_path)
    assert rc == 0 and out["complete"] and "hub not contacted" in out["msg"]
    assert harness.run_tool("status", "--dir", wdir, "--model-id", M3, "--revision", "master")[0] == 0
    rc, out, _ = fetch(hub.url, wdir, tmp_path, "--force")  # a forced refresh that cannot reach the hub...
    assert rc == sw.EXIT_HUB_UNREACHABLE
    assert harness.run_tool("status", "--dir", wdir)[0] == 0  # ...leaves complete weights complete


@needs_client
def test_hub_down_with_incomplete_weights_fails_clearly(hub, tmp_path):
    wdir = tmp_path / "w"
    url = hub.url
    hub.stop()
    rc, out, _ = fetch(url, wdir, tmp_path)
    assert rc == sw.EXIT_HUB_UNREACHABLE, out
    assert url in out["msg"] and "incomplete" in out["msg"] and "model_weights_endpoint" in out["msg"]
    assert not (wdir / sw.MARKER).exists()
    report = sw.progress_report(wdir)
    assert report["failed"] and report["line"].startswith("weights FAILED: cannot reach the hub at " + url)


@needs_client
def test_not_enough_disk_fails_before_any_download(hub, tmp_path):
    wdir = tmp_path / "w"
    rc, out, _ = harness.run_tool("listing", "--model-id", M3, "--endpoint", hub.url, "--dir", wdir,
                                  "--margin-gb", 1e9, env=harness.tool_env(tmp_path))
    assert rc == sw.EXIT_DISK and not out["space_ok"]
    for needle in ("model_weights_dir", "model_weights_disk_margin_gb", str(wdir), "free", "need"):
        assert needle in out["msg"]
    assert out["required_bytes"] > out["free_bytes"] and out["todo_bytes"] == out["total_bytes"] > 0
    rc, out, _ = fetch(hub.url, wdir, tmp_path, "--margin-gb", 1e9)  # the fetch's own gate (last one wins)
    assert rc == sw.EXIT_DISK and "model_weights_disk_margin_gb" in out["msg"]
    assert harness.file_gets(hub.access_log) == []  # listings only, no file GET
    assert not list(wdir.glob("*.safetensors*"))


@needs_client
def test_listing_total_and_patterns(hub, hub_root, tmp_path):
    rc, out, _ = harness.run_tool("listing", "--model-id", M3, "--endpoint", hub.url, "--files",
                                  env=harness.tool_env(tmp_path))
    assert rc == 0 and out["total_bytes"] == sum(p.stat().st_size for p in (hub_root / M3).rglob("*") if p.is_file())
    assert out["file_count"] == 10 and all(len(f["sha256"]) == 64 for f in out["files"])
    rc, out, _ = harness.run_tool("listing", "--model-id", M3, "--endpoint", hub.url, "--files", "--allow", "*.json",
                                  "--ignore", "tokenizer*", env=harness.tool_env(tmp_path))
    assert rc == 0 and sorted(f["path"] for f in out["files"]) == [
        "config.json", "configuration.json", "generation_config.json", "model.safetensors.index.json",
        "preprocessor_config.json"]
    rc, out, _ = harness.run_tool("listing", "--model-id", M3, "--endpoint", hub.url, "--allow", r".*\.json",
                                  env=harness.tool_env(tmp_path))
    assert rc == sw.EXIT_NOT_FOUND and "no files match" in out["msg"]
    rc, out, _ = harness.run_tool("listing", "--model-id", "SglLab/Nope", "--endpoint", hub.url,
                                  env=harness.tool_env(tmp_path))
    assert rc == sw.EXIT_NOT_FOUND and "SglLab/Nope" in out["msg"]


@needs_client
def test_fanout_mirror_serves_a_peer_with_the_real_client(hub, hub_root, tmp_path):
    seed, peer = tmp_path / "seed", tmp_path / "peer"
    assert fetch(hub.url, seed, tmp_path)[0] == 0
    rc, out, _ = harness.run_tool("serve-mirror", "--dir", peer, "--port", 0, "--max-seconds", 1)
    assert rc == sw.EXIT_INCOMPLETE and "incomplete" in out["msg"]

    port = harness.free_port()
    mirror_log = tmp_path / "mirror.log"
    mirror = harness.start_tool("serve-mirror", "--dir", seed, "--host", "127.0.0.1", "--port", port,
                                "--access-log", mirror_log, "--max-seconds", 120)
    try:
        deadline = time.monotonic() + 30
        while not (seed / sw.STATE_DIR / "mirror.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        rc, out, err = fetch(f"http://127.0.0.1:{port}", peer, tmp_path)
        assert rc == 0, (out, err[-2000:])
        rc, stop, _ = harness.run_tool("stop-mirror", "--dir", seed)
        assert rc == 0 and stop["changed"]
        assert mirror.wait(timeout=20) == 0
        assert json.loads(mirror.stdout.read().strip().splitlines()[-1])["bytes_sent"] > 0
    finally:
        if mirror.poll() is None:
            mirror.kill()
    assert tree(peer) == tree(hub_root / M3)
    assert json.loads((peer / sw.MANIFEST).read_text())["endpoint"] == f"http://127.0.0.1:{port}"
    hub_files = Counter(r["file"] for r in harness.file_gets(hub.access_log))
    assert hub_files == Counter(tree(hub_root / M3).keys())  # the hub saw the model once
    assert Counter(r["file"] for r in harness.file_gets(mirror_log)) == hub_files
    assert harness.run_tool("stop-mirror", "--dir", seed)[1]["changed"] is False


# ---------------------------------------------------------------------------------------------
# pure functions (no client, no network)
# ---------------------------------------------------------------------------------------------
def test_progress_line_format():
    line = sw.progress_line({"state": "downloading", "bytes_done": 12.3e9, "bytes_total": 220e9,
                             "rate_bps": 410e6, "eta_s": 531, "files_done": 3, "files_total": 62})
    assert line == "weights 12.3/220.0 GB 5.6%  410 MB/s  ETA 8m51s  [3/62 files]"
    assert sw.progress_line({"state": "downloading", "bytes_done": 0, "bytes_total": 8.5e6, "rate_bps": None,
                             "eta_s": None, "files_done": 0, "files_total": 10}) == \
        "weights 0.0/8.5 MB 0.0%  -- MB/s  ETA --  [0/10 files]"
    assert sw.progress_line({"state": "failed", "msg": "boom"}) == "weights FAILED: boom"
    assert sw.progress_line({"state": "listing", "model_id": "a/b", "revision": "v1", "endpoint": "http://h"}) == \
        "weights: listing a/b@v1 on http://h"
    assert sw.fmt_duration(3725) == "1h02m" and sw.fmt_duration(45) == "45s"
    assert sw.fmt_rate(1.5e9) == "1.50 GB/s" and sw.fmt_rate(5.6e6) == "5.6 MB/s"


def test_progress_counts_partial_files_of_both_clients(tmp_path):
    files = [{"path": "a.bin", "size": 1000}, {"path": "sub/b.bin", "size": 500}, {"path": "c.bin", "size": 300}]
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin.incomplete").write_bytes(b"x" * 100)  # single stream
    (tmp_path / "sub" / "b.bin_0_99").write_bytes(b"x" * 100)  # parallel parts + merge file
    (tmp_path / "sub" / "b.bin.parallel_tmp").write_bytes(b"x" * 50)
    (tmp_path / "c.bin").write_bytes(b"x" * 300)  # done
    hf = tmp_path / ".cache" / "huggingface" / "download"
    hf.mkdir(parents=True)
    (hf / "a.bin.0123abcd.incomplete").write_bytes(b"x" * 7)
    d = sw.disk_bytes(tmp_path, files)
    assert (d["complete_bytes"], d["partial_bytes"], d["files_done"]) == (300, 257, 1)


def test_status_reasons(tmp_path):
    wdir = tmp_path / "w"
    assert "does not exist" in sw.evaluate(wdir)["reason"]
    wdir.mkdir()
    (wdir / "a.bin").write_bytes(b"abc")
    listing = {"model_id": "o/n", "revision": "r1", "hub": "modelscope", "endpoint": "http://x",
               "allow_patterns": [], "ignore_patterns": [], "files": [{"path": "a.bin", "size": 3, "sha256": None}]}
    sw.write_complete(wdir, sw.build_manifest(listing, wdir))
    assert sw.evaluate(wdir, "o/n", "r1")["complete"]
    assert json.loads((wdir / sw.MANIFEST).read_text())["files"][0]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert "revision" in sw.evaluate(wdir, "o/n", "r2")["reason"]
    assert "allow_patterns" in sw.evaluate(wdir, "o/n", "r1", allow=["*.bin"])["reason"]
    (wdir / "a.bin").write_bytes(b"abcd")
    st = sw.evaluate(wdir, "o/n", "r1")
    assert not st["complete"] and st["size_mismatch"] == [{"path": "a.bin", "size": 4, "expected": 3}]
    (wdir / "a.bin").write_bytes(b"abc")
    (wdir / sw.MANIFEST).write_text((wdir / sw.MANIFEST).read_text() + " ")
    assert "does not belong" in sw.evaluate(wdir)["reason"]
    (wdir / sw.MARKER).unlink()
    assert "no .sgl-complete" in sw.evaluate(wdir)["reason"]


def test_hf_mode_command_construction(monkeypatch, tmp_path):
    monkeypatch.setenv(sw.TOKEN_ENV, "hf_secret")
    args = types.SimpleNamespace(model_id="MiniMaxAI/MiniMax-M2.5", revision="main", max_workers=8,
                                 hf_endpoint="https://hf-mirror.com", file_timeout=21600, parallel_workers=1)
    kw = sw.hf_download_kwargs(args, tmp_path, ["*.safetensors", "*.json"], None)
    assert kw == {"repo_id": "MiniMaxAI/MiniMax-M2.5", "revision": "main", "local_dir": str(tmp_path),
                  "allow_patterns": ["*.safetensors", "*.json"], "ignore_patterns": None, "max_workers": 8,
                  "token": "hf_secret", "endpoint": "https://hf-mirror.com"}
    env = sw.client_env(args)
    assert env["HF_ENDPOINT"] == "https://hf-mirror.com" and env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert env["TQDM_DISABLE"] == "1" and env["MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT"] == "21600"
    assert env["MODELSCOPE_DOWNLOAD_INTRA_CLOUD"] == "false"
    ms = sw.ms_download_kwargs(args, tmp_path, "http://hub", ["a[1].bin"], None)
    assert ms["cache_dir"] == str(tmp_path / sw.STATE_DIR / "cache") and ms["endpoint"] == "http://hub"
    assert sw.glob_escape("a[1]*.bin") == "a[[]1][*].bin" and sw.fnmatch_any("a[1]*.bin", ["a[[]1][*].bin"])


def test_client_errors_map_to_exit_codes():
    def exc(name, text="boom", base=Exception):
        return type(name, (base,), {})(text)

    cases = {
        "NetworkError": sw.EXIT_HUB_UNREACHABLE, "ServerError": sw.EXIT_HUB_UNREACHABLE,
        "NotExistError": sw.EXIT_NOT_FOUND, "AuthenticationError": sw.EXIT_NOT_FOUND,
        "FileIntegrityError": sw.EXIT_INTEGRITY, "Weird": sw.EXIT_DOWNLOAD,
    }
    for name, rc in cases.items():
        assert sw.classify_client_error(exc(name), "http://hub", "listing").rc == rc, name
    assert sw.classify_client_error(OSError(28, "No space left on device"), "h", "x").rc == sw.EXIT_DISK
    assert sw.classify_client_error(exc("HTTPError", "404 Client Error: not found"), "h", "x").rc == sw.EXIT_NOT_FOUND


def test_range_parsing():
    assert sw.parse_range(None, 10) is None
    assert sw.parse_range("bytes=2-5", 10) == (2, 5)
    assert sw.parse_range("bytes=2-", 10) == (2, 9)
    assert sw.parse_range("bytes=-3", 10) == (7, 9)
    assert sw.parse_range("bytes=5-100", 10) == (5, 9)
    assert sw.parse_range("bytes=10-", 10) == "unsatisfiable"
    assert sw.parse_range("bytes=0-1,4-5", 10) is None  # multi-range: ignored, full body
