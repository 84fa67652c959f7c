"""Fan-out faults on the lab (own hosts: tests/lab/inventories/weights, wt1-wt3 .101-.103; SGL_LAB=1).

wt1 is the seed (from a lab hub of this test on the controller's bridge address, with its own access
log), wt2 and wt3 copy from the mirrors in a chain (fan-out limit 1: wt1 -> wt2 -> wt3) with every
host's uplink capped (model_weights_fanout_max_upload_mb_s=1: an 8 MiB shard takes ~8 s per copy).
While one peer copies a shard from the other (whichever got it from the seed first), the serving
peer's mirror is killed (SIGKILL): the copying peer resumes the partial file from wt1, every host ends with verified weights (MANIFEST.json + marker), and the hub sent every file
once, to wt1. A rerun is changed=0 with no hub request and no rehash (MANIFEST.json untouched).

Only wt1 needs the SGLang venv (the hub client); the fixture installs it once (preflight + install,
--limit wt1; a no-op after the first run). The peers' copy is stdlib: /usr/bin/python3.
SGL_LAB_KEEP=1 keeps the hosts afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, labctl, ssh

sys.path.insert(0, str(REPO / "lab" / "hub"))
import harness  # noqa: E402

pytestmark = [pytest.mark.lab]
INV = REPO / "tests/lab/inventories/weights/hosts.yml"
ADDRS = {"wt1": "10.77.0.101", "wt2": "10.77.0.102", "wt3": "10.77.0.103"}
MODEL = "SglLab/MiniMax-M3-Lab"
BIN = REPO / ".venv" / "bin"
TOOL = "/opt/sglang/libexec/sgl_weights.py"
PORT = 18191


def run_playbook(inv: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))


@pytest.fixture(scope="module")
def hosts():
    labctl("up", "-i", str(INV))
    run = run_playbook(INV, "playbooks/preflight.yml", "playbooks/install.yml", "--limit", "wt1")
    assert run.returncode == 0, run.stdout[-4000:]
    python = ssh(ADDRS["wt1"], "ls -d /opt/sglang/venvs/*/bin/python")  # the venv's, not the one it links to
    yield python.strip().splitlines()[-1]
    if os.environ.get("SGL_LAB_KEEP") != "1":
        labctl("down", "-i", str(INV))


@pytest.fixture
def hub(tmp_path):
    root = tmp_path / "hubroot"
    harness.make_repo(root, "m3", shards=3, shard_mib=8)
    with harness.Hub(root, root / "access.log", host=os.environ.get("SGL_LAB_CONTROLLER_IP", "10.77.0.1")) as h:
        h.root = root
        yield h


def status(host: str, python: str, wdir: str) -> dict:
    out = ssh(ADDRS[host], f"{python} {TOOL} status --dir {wdir} --model-id {MODEL} --revision master", check=False)
    return json.loads(out.strip().splitlines()[-1])


def test_source_killed_mid_copy_every_host_completes_hub_once_rerun_unchanged(hosts, hub, tmp_path):
    inv_dir = tmp_path / "inventory"
    shutil.copytree(INV.parent, inv_dir, symlinks=False)
    python = {"wt1": hosts, "wt2": "/usr/bin/python3", "wt3": "/usr/bin/python3"}
    host_vars = {h: {"ansible_host": a, "lab_gpu_profile": "h100-80gb-x4", "model_weights_python": python[h]}
                 for h, a in ADDRS.items()}
    (inv_dir / "hosts.yml").write_text(json.dumps({"all": {"children": {"sglang_servers": {"hosts": host_vars}}}}))
    wdir = f"/srv/models/wt-faults-{uuid.uuid4().hex[:8]}"
    extra = {
        "model_weights_model_id": MODEL, "model_weights_revision": "master", "model_weights_dir": wdir,
        "model_weights_endpoint": hub.url, "model_weights_source": "fanout", "model_weights_fanout_seed": "wt1",
        "model_weights_poll_interval_s": 2, "model_weights_fanout_port": PORT, "model_weights_fanout_limit": 1,
        "model_weights_fanout_max_upload_mb_s": 1, "model_weights_disk_margin_gb": 0,
    }
    hub.faults(throttle_bps=4_000_000)
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inv_dir / "hosts.yml"), "playbooks/weights.yml",
           "-e", json.dumps(extra)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    try:
        killed, deadline = None, time.monotonic() + 300
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            for peer in ("wt2", "wt3"):  # the first peer that serves the other one mid-copy loses its mirror
                try:
                    with urllib.request.urlopen(f"http://{ADDRS[peer]}:{PORT}/_sgl/fanout?listing=0", timeout=5) as r:
                        state = json.loads(r.read())
                except OSError:
                    continue
                if state.get("uploads", 0) >= 1 and not state.get("complete"):
                    time.sleep(1.5)  # a few bytes in: the partial file must resume, not restart
                    ssh(ADDRS[peer], "python3 -c \"import json,os,signal; "
                        f"os.kill(json.load(open('{wdir}/.sgl-weights/mirror.pid'))['pid'], signal.SIGKILL)\"")
                    killed = peer
                    break
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=600)
        assert killed, "no peer served the other one mid-copy; the fault was not injected\n" + out[-4000:]
        assert proc.returncode == 0, out[-6000:]
        for host in ADDRS:  # verified weights everywhere: MANIFEST.json + marker bound to it, sizes
            st = status(host, python[host], wdir)
            assert st["complete"] and st["manifest"] and st["marker"], (host, st)
        expected = {p.relative_to(hub.root / MODEL).as_posix() for p in (hub.root / MODEL).rglob("*") if p.is_file()}
        gets = harness.file_gets(hub.access_log)
        assert Counter(r["file"] for r in gets) == Counter(expected)  # the hub sent the model once
        assert {r["client"] for r in gets} == {ADDRS["wt1"]}
        seed_log = [json.loads(line) for line in ssh(ADDRS["wt1"], f"cat {wdir}/.sgl-weights/mirror-access.log")
                    .splitlines() if line.strip()]
        other = ADDRS["wt3" if killed == "wt2" else "wt2"]
        resumed = [r for r in seed_log if r.get("file") and r["client"] == other and (r["start"] or 0) > 0]
        assert resumed, f"the other peer did not resume a partial file from wt1 after {killed}'s mirror died"

        # rerun: nothing to do, no hub request from a host, no rehash (the manifest is not rewritten)
        stamps = {h: ssh(a, f"stat -c %Y.%s {wdir}/MANIFEST.json") for h, a in ADDRS.items()}
        n_requests = len(harness.access(hub.access_log))
        again = run_playbook(inv_dir / "hosts.yml", "playbooks/weights.yml", "-e", json.dumps(extra))
        assert again.returncode == 0, again.stdout[-4000:]
        for host in ADDRS:
            line = next(ln for ln in again.stdout.splitlines() if ln.startswith(host + " ") and "ok=" in ln)
            assert " changed=0 " in line, line
        # no host asks the hub again; the controller's validation may list the model once (docs/validation.md:
        # an unknown model or revision is refused before any host is touched), no file is fetched
        new = harness.access(hub.access_log)[n_requests:]
        assert all(r["path"].endswith("/repo/files") and not r.get("file") for r in new), new
        assert len(new) <= 1 and not {r["client"] for r in new} & set(ADDRS.values()), new
        assert {h: ssh(a, f"stat -c %Y.%s {wdir}/MANIFEST.json") for h, a in ADDRS.items()} == stamps
    finally:
        if proc.poll() is None:
            proc.kill()
        hub.faults(throttle_bps=None)
        for addr in ADDRS.values():
            ssh(addr, f"rm -rf {wdir}", check=False)
