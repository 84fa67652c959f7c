"""The test-only hub (lab/hub): generated repos, the ModelScope protocol, fault switches, and the
real ModelScope client (modelscope 1.40.2 / modelscope-hub 0.5.1 from the SGLang venv) against it."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab" / "hub"))
import harness  # noqa: E402

pytestmark = pytest.mark.skipif(harness.sglang_python() is None, reason="needs .venv-sglang (SGL_SGLANG_PYTHON)")

M3 = "SglLab/MiniMax-M3-Lab"
M25 = "SglLab/MiniMax-M2.5-Lab"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubroot")
    info = harness.make_repo(root, "all", shards=2, shard_mib=2)
    return root, info


@pytest.fixture
def hub(hub_root, tmp_path):
    with harness.Hub(hub_root[0], tmp_path / "access.log") as h:
        yield h


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(repo: Path) -> dict:
    return {p.relative_to(repo).as_posix(): sha(p) for p in sorted(repo.rglob("*")) if p.is_file()}


def get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------------------------------------
# make_repo.py
# ---------------------------------------------------------------------------------------------
def test_make_repo_is_deterministic_and_realistic(hub_root, tmp_path):
    root, info = hub_root
    again = harness.make_repo(tmp_path, "all", shards=2, shard_mib=2)
    assert {k: v["digest"] for k, v in again.items()} == {k: v["digest"] for k, v in info.items()}

    m3 = root / M3
    cfg = json.loads((m3 / "config.json").read_text())
    assert cfg["architectures"] == ["MiniMaxM3SparseForConditionalGeneration"]
    assert cfg["model_type"] == "minimax_m3_vl"  # sglang srt/configs/minimax_vl.py MiniMaxM3VLConfig
    assert json.loads((root / M25 / "config.json").read_text())["architectures"] == ["MiniMaxM2ForCausalLM"]
    gen = json.loads((m3 / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_p"], gen["top_k"]) == (1.0, 0.95, 40)
    assert (m3 / "preprocessor_config.json").is_file() and not (root / M25 / "preprocessor_config.json").exists()
    assert "chat_template" in json.loads((m3 / "tokenizer_config.json").read_text())

    index = json.loads((m3 / "model.safetensors.index.json").read_text())
    shards = sorted(m3.glob("model-*-of-00002.safetensors"))
    assert len(shards) == 2
    seen, data_total = {}, 0
    for shard in shards:  # valid safetensors: u64 header length, JSON header, contiguous data
        raw = shard.read_bytes()
        (hlen,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + hlen])
        header.pop("__metadata__")
        ends = sorted(v["data_offsets"] for v in header.values())
        assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:]))
        assert 8 + hlen + ends[-1][1] == len(raw)
        for name, meta in header.items():
            assert meta["dtype"] == "BF16"
            n = 1
            for d in meta["shape"]:
                n *= d
            assert n * 2 == meta["data_offsets"][1] - meta["data_offsets"][0]
            seen[name] = shard.name
        data_total += ends[-1][1]
        assert abs(len(raw) - 2 * (1 << 20)) < 16 << 10
    assert seen == index["weight_map"] and index["metadata"]["total_size"] == data_total


@pytest.mark.slow
def test_tokenizer_loads_with_autotokenizer_and_renders_chat(hub_root):
    root, _ = hub_root
    code = r"""
import json, sys
from transformers import AutoTokenizer
out = {}
for repo in sys.argv[1:]:
    tok = AutoTokenizer.from_pretrained(repo)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is the weather in Paris?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok.encode("hello world, the model weights server")
    out[repo] = {"text": text, "n": len(ids), "roundtrip": tok.decode(ids), "vocab": len(tok)}
print(json.dumps(out))
"""
    proc = subprocess.run([str(harness.sglang_python()), "-c", code, str(root / M3), str(root / M25)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    m3, m25 = out[str(root / M3)], out[str(root / M25)]
    for r in (m3, m25):
        assert r["roundtrip"] == "hello world, the model weights server" and 0 < r["n"] < 20 and r["vocab"] == 2048
    assert m3["text"].endswith("]~b]ai\n") and "What is the weather in Paris?" in m3["text"]
    assert m25["text"].endswith("]~b]ai\n<think>\n")


# ---------------------------------------------------------------------------------------------
# protocol (modelscope.md §8) without the client
# ---------------------------------------------------------------------------------------------
def test_protocol_listing_file_range_and_errors(hub, hub_root):
    root, _ = hub_root
    base = f"{hub.url}/api/v1/models/{M3}"
    status, _, body = get(f"{base}/repo/files?Revision=master&Recursive=True")
    listing = json.loads(body)
    assert status == 200 and (listing["Code"], listing["Success"], listing["Message"]) == (200, True, "success")
    files = {f["Path"]: f for f in listing["Data"]["Files"] if f["Type"] == "blob"}
    assert {f["Path"] for f in listing["Data"]["Files"] if f["Type"] == "tree"} == {"docs"}
    assert set(files) == set(tree(root / M3))
    shard = "model-00001-of-00002.safetensors"
    local = root / M3 / shard
    assert files[shard]["Size"] == local.stat().st_size and files[shard]["Sha256"] == sha(local)
    assert files[shard]["Name"] == shard and files[shard]["Revision"] == "master"
    assert files["docs/deploy_guide.md"]["Name"] == "deploy_guide.md"

    status, _, body = get(f"{base}/repo/files?Revision=master&Recursive=True&Root=docs")
    assert [f["Path"] for f in json.loads(body)["Data"]["Files"]] == ["docs/deploy_guide.md"]

    url = f"{base}/repo?Revision=master&FilePath={shard}"
    raw = local.read_bytes()
    status, headers, body = get(url)
    assert status == 200 and body == raw and int(headers["Content-Length"]) == len(raw)
    assert "Content-Encoding" not in headers
    status, headers, body = get(url, {"Range": "bytes=10-19"})
    assert status == 206 and body == raw[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(raw)}"
    status, headers, body = get(url, {"Range": "bytes=100-"})
    assert status == 206 and body == raw[100:] and headers["Content-Range"] == f"bytes 100-{len(raw) - 1}/{len(raw)}"
    status, headers, body = get(url, {"Range": "bytes=-5"})
    assert status == 206 and body == raw[-5:]
    status, headers, _ = get(url, {"Range": f"bytes={len(raw)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(raw)}"
    status, _, body = get(f"{base}/repo?Revision=master&FilePath=docs%2Fdeploy_guide.md")
    assert status == 200 and body == (root / M3 / "docs" / "deploy_guide.md").read_bytes()

    status, _, body = get(f"{hub.url}/api/v1/models/SglLab/Nope/repo/files?Revision=master&Recursive=True")
    assert status == 404 and isinstance(json.loads(body)["Code"], int)
    status, _, body = get(f"{base}/repo?Revision=master&FilePath=missing.bin")
    assert status == 404
    assert get(base)[0] == 200
    status, _, body = get(f"{base}/revisions")
    assert status == 200 and json.loads(body)["Data"]["RevisionMap"]["Branches"][0]["Revision"] == "master"
    assert get(f"{hub.url}/api/v1/repos/internalAccelerationInfo")[0] == 404

    log = harness.access(hub.access_log)
    rec = [r for r in log if r.get("file") == shard and r["status"] == 206][0]
    assert rec["range"] == "bytes=10-19" and rec["start"] == 10 and rec["bytes"] == 10 and rec["client"] == "127.0.0.1"


def test_control_endpoint_flips_faults(hub):
    base = f"{hub.url}/api/v1/models/{M3}/repo/files?Revision=master"
    assert hub.faults(down="503")["down"] == "503"
    assert get(base)[0] == 503
    assert get(f"{hub.url}/_lab/faults")[0] == 200  # the control endpoint works while "down"
    hub.faults(down="close")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(base, timeout=5)
    hub.faults(down=None, wrong_sha256=["config.json"])
    files = {f["Path"]: f for f in json.loads(get(base)[2])["Data"]["Files"]}
    assert files["config.json"]["Sha256"] != hashlib.sha256(get(
        f"{hub.url}/api/v1/models/{M3}/repo?Revision=master&FilePath=config.json")[2]).hexdigest()
    with pytest.raises(urllib.error.HTTPError):
        hub.faults(bogus=1)
    status, _, body = get(f"{hub.url}/_lab/faults")
    assert json.loads(body)["faults"]["wrong_sha256"] == ["config.json"]


# ---------------------------------------------------------------------------------------------
# the real client
# ---------------------------------------------------------------------------------------------
SNAPSHOT = r"""
import json, sys
from modelscope.hub.snapshot_download import snapshot_download
path = snapshot_download(sys.argv[1], revision="master", local_dir=sys.argv[2], endpoint=sys.argv[3])
print(json.dumps({"path": path}))
"""


def test_real_modelscope_client_downloads_byte_identical_once(hub, hub_root, tmp_path):
    root, _ = hub_root
    dest = tmp_path / "dl"
    env = harness.tool_env(tmp_path / "home", {"MODELSCOPE_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1",
                                               "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false"})
    proc = subprocess.run([str(harness.sglang_python()), "-c", SNAPSHOT, M25, str(dest), hub.url],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree(dest) == tree(root / M25)
    gets = harness.file_gets(hub.access_log)
    assert Counter(r["file"] for r in gets) == Counter(tree(root / M25).keys())  # each file once
    assert all(r["status"] == 200 and r["complete"] and r["range"] is None for r in gets)


@pytest.mark.parametrize("after, times, starts", [
    (1 << 20, 1, [0, 1 << 20]),  # cut once: one in-process resume
    (768 << 10, 0, [0, 768 << 10, 2 * (768 << 10)]),  # cut every response: resumes until done
])
def test_client_resumes_dropped_connections_with_range(hub, hub_root, tmp_path, after, times, starts):
    root, _ = hub_root
    shard = "model-00002-of-00002.safetensors"
    hub.faults(drop={"path": shard, "after": after, "times": times})
    rc, out, err = harness.run_tool("fetch", "--model-id", M3, "--endpoint", hub.url, "--dir", tmp_path / "w",
                                    "--margin-gb", 0, env=harness.tool_env(tmp_path))
    assert rc == 0, (out, err[-2000:])
    assert sha(tmp_path / "w" / shard) == sha(root / M3 / shard)
    recs = [r for r in harness.file_gets(hub.access_log) if r["file"] == shard]
    assert [r["start"] for r in recs] == starts
    assert [r["complete"] for r in recs] == [False] * (len(starts) - 1) + [True]
    assert all(r["bytes"] == after for r in recs[:-1])
    assert [r["range"] for r in recs[1:]] == [f"bytes={s}-" for s in starts[1:]]


def test_client_restarts_when_range_is_ignored(hub, hub_root, tmp_path):
    root, _ = hub_root
    shard = "model-00001-of-00002.safetensors"
    hub.faults(drop={"path": shard, "after": 1 << 20, "times": 1}, ignore_range=True)
    rc, out, err = harness.run_tool("fetch", "--model-id", M3, "--endpoint", hub.url, "--dir", tmp_path / "w",
                                    "--margin-gb", 0, env=harness.tool_env(tmp_path))
    assert rc == 0, (out, err[-2000:])
    recs = [r for r in harness.file_gets(hub.access_log) if r["file"] == shard]
    assert len(recs) == 2 and recs[1]["range"] == f"bytes={1 << 20}-" and recs[1]["status"] == 200
    assert recs[1]["start"] == 0 and recs[1]["complete"]
    assert sha(tmp_path / "w" / shard) == sha(root / M3 / shard)


def test_wrong_sha256_is_an_integrity_failure_naming_the_file(hub, tmp_path):
    hub.faults(wrong_sha256=["config.json"])
    rc, out, err = harness.run_tool("fetch", "--model-id", M3, "--endpoint", hub.url, "--dir", tmp_path / "w",
                                    "--margin-gb", 0, env=harness.tool_env(tmp_path))
    assert rc == harness.proto.EXIT_INTEGRITY, out
    assert "config.json" in out["msg"] and out["failed_files"] == ["config.json"]
    assert not (tmp_path / "w" / "config.json").exists() and not (tmp_path / "w" / ".sgl-complete").exists()
    assert (tmp_path / "w" / "tokenizer.json").is_file()  # the others finished and stay
    assert len([r for r in harness.file_gets(hub.access_log) if r["file"] == "config.json"]) == 3


def test_rate_limiter():
    import time

    limiter = harness.server.RateLimiter(1_000_000)
    t0 = time.monotonic()
    for _ in range(4):
        limiter.consume(50_000)
    assert 0.19 <= time.monotonic() - t0 < 1.0


def test_rate_limiter_catches_up_a_late_sender_by_its_burst_only():
    import time

    limiter = harness.server.RateLimiter(1_000_000, burst_s=0.25)
    t0 = time.monotonic()
    limiter.consume(100_000)  # starts empty: waits its 0.1 s
    assert time.monotonic() - t0 >= 0.09
    time.sleep(0.4)  # the sender was busy elsewhere: 0.25 s of credit, not 0.4
    t1 = time.monotonic()
    limiter.consume(200_000)  # within the credit: no wait
    assert time.monotonic() - t1 < 0.05
    t2 = time.monotonic()
    limiter.consume(200_000)  # the credit is spent: it waits ~0.15 s (0.2 s of bytes, 0.05 s of credit left)
    assert 0.1 <= time.monotonic() - t2 < 0.5


def test_server_cli_with_fault_flags(hub_root, tmp_path):
    root, _ = hub_root
    proc = subprocess.Popen([sys.executable, str(harness.HERE / "server.py"), "--root", str(root), "--port", "0",
                             "--access-log", str(tmp_path / "a.log"), "--throttle", "1000000", "--throttle-scope",
                             "connection", "--wrong-sha256", "config.json", "--drop-after", "100", "--drop-times", "0",
                             "--down", "503", "--ignore-range"], stdout=subprocess.PIPE, text=True)
    try:
        started = json.loads(proc.stdout.readline())
        status, _, body = get(started["listening"] + "/_lab/faults")
        faults = json.loads(body)["faults"]
        assert status == 200 and faults == {
            "drop": {"path": "*", "after": 100, "times": 0}, "wrong_sha256": ["config.json"],
            "throttle_bps": 1000000, "throttle_scope": "connection", "down": "503", "ignore_range": True}
        assert get(f"{started['listening']}/api/v1/models/{M3}")[0] == 503
        # the server appends the record once the response is out: the client may read the log first
        deadline = time.monotonic() + 5
        while json.loads((tmp_path / "a.log").read_text().splitlines()[-1])["status"] != 503 \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads((tmp_path / "a.log").read_text().splitlines()[-1])["status"] == 503
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
