"""Pipelined tree fan-out of the model_weights tool (roles/model_weights/files/sgl_weights.py),
stdlib only, on 127.0.0.1: the controller's plan, source selection, the mirror's fan-out limit
and upload cap, live serving of verified files only, a source dying mid-copy (switch + resume)
and a corrupt copy caught by its sha256 and fetched again."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab" / "hub"))
import harness  # noqa: E402

sw = harness.proto
MODEL = "SglLab/Fanout-Test"


# ---------------------------------------------------------------------------------------------
# helpers: a source dir filled by hand (what the seed's client + publisher leave), mirrors in threads
# ---------------------------------------------------------------------------------------------
def make_source(root: Path, sizes: dict[str, int], publish: list[str] | None = None) -> dict:
    """Write the files, the fan-out listing, and verified.json for ``publish`` (default: all)."""
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (path, size) in enumerate(sorted(sizes.items())):
        data = bytes((j * 7 + i) % 251 for j in range(size))
        (root / path).write_bytes(data)
        files.append({"path": path, "size": size, "sha256": hashlib.sha256(data).hexdigest()})
    listing = {"model_id": MODEL, "revision": "master", "hub": "modelscope", "endpoint": "http://hub.invalid",
               "allow_patterns": [], "ignore_patterns": [], "files": files, "file_count": len(files),
               "total_bytes": sum(f["size"] for f in files)}
    sw.publish_listing(root, listing)
    log = sw.VerifiedLog(root)
    for f in files:
        if publish is None or f["path"] in publish:
            log.record(f)
    return listing


class Mirror:
    """serve-mirror --live in a thread of this process."""

    def __init__(self, wdir: Path, limit: int = 0, upload_bps: float = 0, server_cls=None):
        self.log = wdir.parent / f"{wdir.name}-access.log"
        cls = server_cls or sw.FanoutServer
        self.server = cls(("127.0.0.1", 0), sw.LiveCatalog(wdir), access_log=str(self.log), limit=limit,
                          upload_bps=upload_bps)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def gets(self):
        return harness.file_gets(self.log) if self.log.exists() else []


@pytest.fixture
def mirrors():
    started = []

    def start(*a, **kw):
        m = Mirror(*a, **kw)
        started.append(m)
        return m

    yield start
    for m in started:
        try:
            m.stop()
        except OSError:
            pass


def copy_args(wdir: Path, sources: list[str], **kw) -> types.SimpleNamespace:
    args = dict(dir=str(wdir), model_id=MODEL, revision="master", allow=[], ignore=[], source=sources, margin_gb=0,
                workers=2, max_download_bps=0, poll=0.05, source_timeout=5, timeout=60, stall_s=30,
                progress_interval=0.2)
    args.update(kw)
    return types.SimpleNamespace(**args)


def tree(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name not in (sw.MANIFEST, sw.MARKER)}


def get(url: str, headers=None):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10)


# ---------------------------------------------------------------------------------------------
# the plan (controller side)
# ---------------------------------------------------------------------------------------------
def test_plan_is_a_tree_under_the_seed_with_limit_children():
    hosts = [f"h{i:02d}" for i in range(16)]
    plan = sw.fanout_plan(hosts, "h00", complete=[], limit=2)
    assert plan["hub"] == "h00" and plan["roots"] == ["h00"]
    children = {}
    for child, parent in plan["parent"].items():
        children.setdefault(parent, []).append(child)
    assert max(len(c) for c in children.values()) == 2
    assert children["h00"] == ["h01", "h02"] and children["h01"] == ["h03", "h04"]
    assert plan["rounds"] == 4  # 1 + 2 + 4 + 8 + 1: log2(16)
    assert plan["sources"]["h07"][:4] == ["h03", "h01", "h00", "h02"]  # parent, ancestors, then the rest
    assert sorted(plan["sources"]["h07"]) == sorted(h for h in hosts if h != "h07")
    assert "h00" not in plan["sources"]
    assert sw.fanout_plan(hosts, "h00", complete=[], limit=4)["rounds"] == 2


def test_plan_with_complete_hosts_needs_no_hub():
    plan = sw.fanout_plan(["a", "b", "c", "d"], "a", complete=["c"], limit=2)
    assert plan["hub"] is None and plan["roots"] == ["c"]
    assert plan["sources"]["a"][0] == "c" and plan["sources"]["d"][:2] == ["a", "c"]
    with pytest.raises(ValueError, match="seed"):
        sw.fanout_plan(["a"], "z", complete=[])
    with pytest.raises(ValueError, match="limit"):
        sw.fanout_plan(["a", "b"], "a", complete=[], limit=0)


# ---------------------------------------------------------------------------------------------
# the mirror: verified files only, fan-out limit, state
# ---------------------------------------------------------------------------------------------
def test_live_mirror_serves_only_verified_files(tmp_path, mirrors):
    src = tmp_path / "src"
    make_source(src, {"a.json": 100, "s1.bin": 5000, "s2.bin": 5000}, publish=["a.json"])
    (src / "s3.bin.incomplete").write_bytes(b"x" * 10)
    m = mirrors(src)
    state = json.loads(get(m.url + sw.FANOUT_STATE_PATH).read())
    assert state["ready"] and not state["complete"] and state["verified"] == ["a.json"]
    assert [f["path"] for f in state["listing"]["files"]] == ["a.json", "s1.bin", "s2.bin"]
    assert get(sw.file_url(m.url, MODEL, "master", "a.json")).read() == (src / "a.json").read_bytes()
    for path in ("s1.bin", "s3.bin.incomplete", "s3.bin"):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(sw.file_url(m.url, MODEL, "master", path))
        assert err.value.code == 404
    sw.VerifiedLog(src).record(next(f for f in state["listing"]["files"] if f["path"] == "s1.bin"))
    assert get(sw.file_url(m.url, MODEL, "master", "s1.bin")).read() == (src / "s1.bin").read_bytes()
    with open(src / "s1.bin", "r+b") as f:  # changed after it was hashed: no longer served
        f.write(b"changed")
    with pytest.raises(urllib.error.HTTPError):
        get(sw.file_url(m.url, MODEL, "master", "s1.bin"))


def test_mirror_fanout_limit_answers_busy_and_caps_uploads(tmp_path, mirrors):
    src = tmp_path / "src"
    make_source(src, {"s1.bin": 200_000})
    m = mirrors(src, limit=1, upload_bps=400_000)  # one body at a time, 0.5 s per file
    url = sw.file_url(m.url, MODEL, "master", "s1.bin")
    first = get(url)  # headers read, body still streaming
    with pytest.raises(urllib.error.HTTPError) as err:
        get(url)
    assert err.value.code == 503 and err.value.headers["Retry-After"] == "1"
    t0 = time.monotonic()
    assert len(first.read()) == 200_000
    assert time.monotonic() - t0 > 0.3  # the upload cap
    first.close()
    time.sleep(0.1)
    assert len(get(url).read()) == 200_000  # slot free again
    for _ in range(40):  # the body is read before the server's handler releases its slot
        state = json.loads(get(m.url + sw.FANOUT_STATE_PATH + "?listing=0").read())
        if state["uploads"] == 0:
            break
        time.sleep(0.05)
    assert state["peak_uploads"] == 1 and state["limit"] == 1 and state["uploads"] == 0 and "listing" not in state


# ---------------------------------------------------------------------------------------------
# the copier: source selection, pipelining, switch + resume, corrupt refetch
# ---------------------------------------------------------------------------------------------
def test_source_selection_prefers_plan_order_and_skips_busy_dead_and_missing(tmp_path, mirrors):
    a, b = tmp_path / "a", tmp_path / "b"
    listing = make_source(a, {"s1.bin": 1000, "s2.bin": 1000}, publish=["s1.bin"])
    make_source(b, {"s1.bin": 1000, "s2.bin": 1000})
    ma, mb = mirrors(a), mirrors(b)
    dead = f"http://127.0.0.1:{harness.free_port()}"
    src = sw.Sources([dead, ma.url, mb.url], poll=0.05, timeout=2)
    assert src.choose("s1.bin") == ma.url  # the dead one is skipped, then plan order
    assert src.choose("s2.bin") == mb.url  # a has not verified s2 yet
    assert src.choose("s1.bin", avoid={ma.url}) == mb.url
    sw.VerifiedLog(a).record(listing["files"][1])  # a has s2 now too
    ma.server.limit, ma.server.uploads = 1, 1  # a is at its fan-out limit
    time.sleep(0.06)
    assert src.choose("s1.bin") == mb.url  # both hold the same files: b is as good
    assert src.view(dead) is None and src.choose("nope.bin") is None


def test_source_selection_keeps_the_uplink_of_the_holder_of_a_rarer_file(tmp_path, mirrors):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_source(a, {"s1.bin": 1000, "s2.bin": 1000}, publish=["s1.bin"])
    make_source(b, {"s1.bin": 1000, "s2.bin": 1000})  # the only holder of s2 (the newest shard)
    make_source(c, {"s1.bin": 1000, "s2.bin": 1000}, publish=["s1.bin"])
    ma, mb, mc = mirrors(a, limit=1), mirrors(b, limit=2), mirrors(c, limit=1)
    src = sw.Sources([mb.url, ma.url, mc.url], poll=0.01, timeout=2)
    snap = src.snapshot()
    assert snap.holders == {"s1.bin": 3, "s2.bin": 1}
    assert src.choose("s1.bin") == ma.url  # b comes first in plan order, but it alone has s2
    assert src.choose("s2.bin") == mb.url
    ma.server.uploads = 1
    time.sleep(0.02)
    assert src.choose("s1.bin") == mc.url
    mc.server.uploads = 1
    time.sleep(0.02)
    assert src.choose("s1.bin") is None  # a and c are busy: wait for them, b's uplink is for s2
    assert src.choose("s2.bin") == mb.url
    ma.stop()  # a plain holder gone: nobody else can send s1, so b does
    time.sleep(0.02)
    src.mark_dead(ma.url)
    mc.stop()
    src.mark_dead(mc.url)
    assert src.choose("s1.bin") == mb.url


def test_mirror_sends_one_body_at_a_time_rarest_first_never_starving_one_that_started(tmp_path, mirrors,
                                                                                    monkeypatch):
    monkeypatch.setattr(sw, "SMALL_BODY", 100_000)  # small bodies skip the queue
    src = tmp_path / "src"
    make_source(src, {"moving.bin": 300_000, "old.bin": 300_000, "new.bin": 300_000, "tiny.json": 20_000})
    m = mirrors(src, limit=4, upload_bps=1_000_000)  # 0.3 s per body alone
    done = {}

    def fetch(path, holders):
        with get(sw.file_url(m.url, MODEL, "master", path), {sw.HOLDERS_HEADER: str(holders)}) as resp:
            assert len(resp.read()) == (20_000 if path == "tiny.json" else 300_000)
        done[path] = time.monotonic()

    threads = []
    for path, holders, delay in (("moving.bin", 5, 0.1), ("old.bin", 9, 0.05), ("new.bin", 1, 0.05),
                                 ("tiny.json", 9, 0)):
        threads.append(threading.Thread(target=fetch, args=(path, holders)))
        threads[-1].start()
        time.sleep(delay)
    for t in threads:
        t.join()
    # the body that had the uplink keeps it; then the rarest file; the plentiful one last
    assert done["moving.bin"] < done["new.bin"] < done["old.bin"], done
    assert done["tiny.json"] < done["moving.bin"], done  # never queued behind a big body
    assert done["old.bin"] - done["new.bin"] > 0.15, done  # one after the other, not shared


def test_source_selection_keeps_the_downloading_seed_for_files_no_peer_has(tmp_path, mirrors):
    seed, peer, done = tmp_path / "seed", tmp_path / "peer", tmp_path / "done"
    listing = make_source(seed, {"s1.bin": 1000, "s2.bin": 1000})
    sw.publish_listing(seed, listing, origin="hub")
    make_source(peer, {"s1.bin": 1000, "s2.bin": 1000}, publish=["s1.bin"])
    ms, mp = mirrors(seed, limit=2), mirrors(peer, limit=1)
    src = sw.Sources([ms.url, mp.url], poll=0.01, timeout=2)
    assert src.view(ms.url)["origin"] == "hub" and src.view(mp.url)["origin"] == "peer"
    assert src.choose("s1.bin") == mp.url  # the peer, although the seed comes first in plan order
    assert src.choose("s2.bin") == ms.url  # only the seed has it
    mp.server.uploads = 1  # the peer is busy: wait for it rather than take the seed's uplink
    time.sleep(0.02)
    assert src.choose("s1.bin") is None and src.choose("s2.bin") == ms.url
    mp.server.uploads = 0
    sw.VerifiedLog(peer).record(listing["files"][1])  # the peer has s2 too: nothing is rarer on the complete host
    listing = make_source(done, {"s1.bin": 1000, "s2.bin": 1000})
    sw.write_complete(done, sw.build_manifest(listing, done))  # a complete host: used when peers are busy
    md = mirrors(done)
    src = sw.Sources([md.url, mp.url], poll=0.01, timeout=2)
    assert src.view(md.url)["origin"] == "complete" and src.choose("s1.bin") == mp.url
    mp.server.uploads = 1
    time.sleep(0.02)
    assert src.choose("s1.bin") == md.url


def test_the_downloading_seed_sends_each_file_once_until_only_small_files_are_left(tmp_path, mirrors, monkeypatch):
    seed = tmp_path / "seed"
    listing = make_source(seed, {"s1.bin": 100_000, "s2.bin": 3000}, publish=["s1.bin"])
    sw.publish_listing(seed, listing, origin="hub")
    m = mirrors(seed, limit=2, upload_bps=200_000)  # 0.5 s per body of s1
    url = sw.file_url(m.url, MODEL, "master", "s1.bin")
    monkeypatch.setattr(sw, "SMALL_BODY", 1000)  # s2 (3000 bytes) still to come: a large file
    first = get(url)
    with pytest.raises(urllib.error.HTTPError) as err:
        get(url)  # the peer getting it passes it on
    assert err.value.code == 503
    state = json.loads(get(m.url + sw.FANOUT_STATE_PATH + "?listing=0").read())
    assert state["origin"] == "hub" and state["pending_bytes"] == 3000 and state["sending"] == ["s1.bin"]
    assert sw.seeding(state["origin"], state["pending_bytes"])
    monkeypatch.setattr(sw, "SMALL_BODY", 4000)  # only a small file left: the seed is as free as a complete host
    second = get(url)
    assert len(first.read()) == len(second.read()) == 100_000
    assert not sw.seeding("hub", 3000) and not sw.seeding("complete", 10**9) and sw.seeding("hub", None)


def test_a_stuck_reader_does_not_hold_the_uplink(tmp_path, mirrors):
    src = tmp_path / "src"
    make_source(src, {"stuck.bin": 48 << 20, "next.bin": 12 << 20})
    m = mirrors(src, limit=2)  # no cap: 1 MiB chunks, one body at a time
    stuck = get(sw.file_url(m.url, MODEL, "master", "stuck.bin"))  # headers read, the body never is
    time.sleep(0.3)  # it has the uplink, then fills the socket buffers and stops moving
    t0 = time.monotonic()
    with get(sw.file_url(m.url, MODEL, "master", "next.bin")) as resp:
        assert len(resp.read()) == 12 << 20
    took = time.monotonic() - t0
    stuck.close()
    assert took < 3.0, took  # ~0.5 s until it counts as stuck, then full speed (not 1 MiB per 0.5 s: ~6 s)


def test_copy_is_pipelined_and_ends_with_manifest_and_marker(tmp_path, mirrors):
    seed, peer = tmp_path / "seed", tmp_path / "peer"
    listing = make_source(seed, {"a.json": 300, "s1.bin": 50_000, "s2.bin": 50_000}, publish=["a.json", "s1.bin"])
    s2 = next(f for f in listing["files"] if f["path"] == "s2.bin")
    m = mirrors(seed)
    result = {}
    t = threading.Thread(target=lambda: result.update(sw.copy_from_peers(copy_args(peer, [m.url]))))
    t.start()
    deadline = time.monotonic() + 20
    while not (peer / "s1.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (peer / "s1.bin").exists() and not (peer / "s2.bin").exists()  # s1 before the seed has s2
    assert not (peer / sw.MARKER).exists()
    peer_state = sw.LiveCatalog(peer).state(False)  # the peer serves what it verified, already
    assert "s1.bin" in peer_state["verified"] and "s2.bin" not in peer_state["verified"]
    sw.VerifiedLog(seed).record(s2)
    t.join(timeout=30)
    assert result["changed"] and result["complete"], result
    assert tree(peer) == tree(seed) and sw.evaluate(peer, MODEL, "master")["complete"]
    manifest = json.loads((peer / sw.MANIFEST).read_text())
    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {f["path"]: f["sha256"] for f in listing["files"]}
    # rerun: complete, no source contacted, nothing rehashed
    n = len(m.gets())
    again = sw.copy_from_peers(copy_args(peer, ["http://127.0.0.1:9"]))
    assert again["changed"] is False and len(m.gets()) == n


class CutServer(sw.FanoutServer):
    """A source that dies mid-body: sends ``cut_after`` bytes of the first body, then stops serving."""

    cut_after = 30_000

    def send_body(self, handler, f, entry, start, length):
        block = f.read(self.cut_after)
        handler.wfile.write(block)
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(2)
        threading.Thread(target=self.shutdown, daemon=True).start()  # the whole mirror is gone
        return len(block)


def test_source_dying_mid_copy_switches_and_resumes_the_partial_file(tmp_path, mirrors):
    a, b, peer = tmp_path / "a", tmp_path / "b", tmp_path / "peer"
    make_source(a, {"s1.bin": 100_000})
    make_source(b, {"s1.bin": 100_000})
    ma = mirrors(a, server_cls=CutServer)
    mb = mirrors(b)
    out = sw.copy_from_peers(copy_args(peer, [ma.url, mb.url], workers=1))
    assert out["complete"] and (peer / "s1.bin").read_bytes() == (a / "s1.bin").read_bytes()
    switch = [e for e in out["events"] if e["event"] == "switch"]
    assert switch and switch[0]["source"] == ma.url and switch[0]["offset"] == CutServer.cut_after
    [resumed] = mb.gets()
    assert resumed["range"] == f"bytes={CutServer.cut_after}-" and resumed["bytes"] == 100_000 - CutServer.cut_after
    assert out["by_source"] == {mb.url: 1}
    assert not (peer / "s1.bin.incomplete").exists()


def test_corrupt_copy_is_caught_by_sha256_and_fetched_again_elsewhere(tmp_path, mirrors):
    a, b, peer = tmp_path / "a", tmp_path / "b", tmp_path / "peer"
    make_source(a, {"s1.bin": 80_000, "s2.bin": 80_000})
    make_source(b, {"s1.bin": 80_000, "s2.bin": 80_000})
    st = (a / "s2.bin").stat()
    with open(a / "s2.bin", "r+b") as f:  # bitrot on a after it verified the file: same size and mtime
        f.seek(4000)
        f.write(b"rot")
    os.utime(a / "s2.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    ma, mb = mirrors(a), mirrors(b)
    out = sw.copy_from_peers(copy_args(peer, [ma.url, mb.url], workers=1))
    assert out["complete"] and tree(peer) == tree(b)
    assert [e for e in out["events"] if e["event"] == "corrupt"] == [{"event": "corrupt", "path": "s2.bin",
                                                                       "source": ma.url}]
    assert [r["file"] for r in mb.gets()] == ["s2.bin"]  # refetched from the other source
    assert out["by_source"] == {ma.url: 1, mb.url: 1}


def test_corrupt_everywhere_is_never_marked_complete(tmp_path, mirrors):
    a, peer = tmp_path / "a", tmp_path / "peer"
    listing = make_source(a, {"s1.bin": 20_000})
    bad = dict(listing["files"][0], sha256="0" * 64)  # every source's bytes mismatch the listing
    listing["files"] = [bad]
    sw.publish_listing(a, listing)
    sw.VerifiedLog(a).record(bad)
    ma = mirrors(a)
    with pytest.raises(sw.WeightsError, match="no source served s1.bin"):
        sw.copy_from_peers(copy_args(peer, [ma.url], timeout=1.5))
    assert not (peer / sw.MARKER).exists() and not (peer / "s1.bin").exists()
    assert "s1.bin" not in sw.LiveCatalog(peer).state(False)["verified"]
    assert json.loads((peer / sw.STATE_DIR / sw.PROGRESS).read_text())["state"] == "failed"


@pytest.mark.parametrize("published", [["a.json"], None])
def test_seed_download_failing_stops_the_peers_fast_with_its_message(tmp_path, mirrors, published):
    """The seed's hub download fails (after the listing, or before it): the peers do not wait for
    --timeout; they fail after --stall-s with the seed's message, their partial files kept."""
    seed, other, peer = tmp_path / "seed", tmp_path / "other", tmp_path / "peer"
    if published is not None:
        listing = make_source(seed, {"a.json": 100, "s1.bin": 5000}, publish=published)
        sw.publish_listing(seed, listing, origin="hub")
    else:
        seed.mkdir()
    sw.Progress(seed, MODEL, "master").write(state="failed", msg="cannot reach the hub at http://hub.invalid")
    other.mkdir()  # another peer, itself still waiting for a listing
    sw.Progress(other, MODEL, "master").write(state="listing", role="copy")
    ms, mo = mirrors(seed), mirrors(other)
    t0 = time.monotonic()
    with pytest.raises(sw.WeightsError, match="failed: .*cannot reach the hub at http://hub.invalid") as err:
        sw.copy_from_peers(copy_args(peer, [mo.url, ms.url], stall_s=0.5, timeout=60))
    assert time.monotonic() - t0 < 15 and err.value.rc == sw.EXIT_HUB_UNREACHABLE
    assert not (peer / sw.MARKER).exists()
    if published is not None:
        assert (peer / "a.json").exists()  # what it could get, it kept (verified)
