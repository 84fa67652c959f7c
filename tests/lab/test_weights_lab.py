"""model_weights on the nspawn lab (needs `make lab-up`; run with SGL_LAB=1).

Two or more lab hosts with fan-out from a lab hub on the controller's bridge address: the hub
serves each file once, every host ends complete (marker + manifest), and a rerun is changed=0
without a single hub request. The weights role runs without the plan role: its inputs come
with -e.

Env: SGL_LAB=1; SGL_LAB_CONTROLLER_IP (default 10.77.0.1); SGL_LAB_WEIGHTS_PYTHON (python with
modelscope on the lab hosts, default /opt/sglang/venvs/sglang-0.5.23/bin/python).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab" / "hub"))
import harness  # noqa: E402

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get("SGL_LAB") != "1", reason="lab test: set SGL_LAB=1 after make lab-up"),
]
MODEL = "SglLab/MiniMax-M3-Lab"
BIN = REPO / ".venv" / "bin"


def ansible(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "ansible"), "-i", "inventory/lab/hosts.yml", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc


def playbook(extra: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "inventory/lab/hosts.yml", "playbooks/weights.yml",
                           "-e", json.dumps(extra)], cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))


def recap(out: str) -> dict:
    return {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", out, re.M)}


@pytest.fixture(scope="module")
def lab_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("labhub")
    harness.make_repo(root, "m3", shards=3, shard_mib=8)
    ip = os.environ.get("SGL_LAB_CONTROLLER_IP", "10.77.0.1")
    with harness.Hub(root, root / "access.log", host=ip) as hub:
        hub.root = root
        yield hub


def test_fanout_each_file_once_and_rerun_unchanged(site, lab_hub):
    """Needs the converged main lab (the seed runs the weights tool from the installed venv)."""
    hosts = json.loads(subprocess.run([str(BIN / "ansible-inventory"), "-i", "inventory/lab/hosts.yml", "--list"],
                                      cwd=REPO, capture_output=True, text=True, check=True).stdout)
    servers = hosts.get("sglang_servers", {}).get("hosts", [])
    if len(servers) < 2:
        pytest.skip(f"fan-out needs 2+ lab hosts in sglang_servers, have {servers}")
    wdir = f"/srv/models/lab-weights-{uuid.uuid4().hex[:8]}"
    extra = {
        "model_weights_model_id": MODEL,
        "model_weights_revision": "master",
        "model_weights_dir": wdir,
        "model_weights_python": os.environ.get("SGL_LAB_WEIGHTS_PYTHON",
                                               "/opt/sglang/venvs/sglang-0.5.23/bin/python"),
        "model_weights_endpoint": lab_hub.url,
        "model_weights_source": "fanout",
        "model_weights_poll_interval_s": 2,
    }
    try:
        first = playbook(extra)
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
        expected = {p.relative_to(lab_hub.root / MODEL).as_posix()
                    for p in (lab_hub.root / MODEL).rglob("*") if p.is_file()}
        gets = harness.file_gets(lab_hub.access_log)
        assert Counter(r["file"] for r in gets) == Counter(expected)  # the hub saw the model once
        assert len({r["client"] for r in gets}) == 1  # ... and only the seed asked
        status = ansible("sglang_servers", "-m", "ansible.builtin.command", "-a",
                         f"{extra['model_weights_python']} /opt/sglang/libexec/sgl_weights.py status --dir {wdir}")
        assert status.stdout.count('"complete": true') == len(servers), status.stdout[-3000:]

        n_requests = len(harness.access(lab_hub.access_log))
        second = playbook(extra)
        assert second.returncode == 0, second.stdout[-6000:]
        rc = recap(second.stdout)
        assert set(rc) >= set(servers) and all(v["changed"] == 0 and v["failed"] == 0 for v in rc.values()), rc
        assert len(harness.access(lab_hub.access_log)) == n_requests
    finally:
        ansible("sglang_servers", "-m", "ansible.builtin.file", "-a", f"path={wdir} state=absent", check=False)


def test_fanout_source_killed_mid_copy_every_host_completes_hub_once(lab_hub, tmp_path):
    """Three lab hosts in a chain (fan-out limit 1): lab1 (seed, from the hub) -> lab2 -> labrouter.
    While labrouter copies a shard from lab2, lab2's mirror is killed (SIGKILL): labrouter resumes
    the partial file from lab1, every host ends complete, and the hub sent every file once."""
    from conftest import LAB_INVENTORY, ssh

    addrs = {"lab1": "10.77.0.11", "lab2": "10.77.0.12", "labrouter": "10.77.0.20"}
    inv_dir = tmp_path / "inventory"
    import shutil

    shutil.copytree(LAB_INVENTORY.parent, inv_dir)
    python = os.environ.get("SGL_LAB_WEIGHTS_PYTHON", "/opt/sglang/venvs/sglang-0.5.23/bin/python")
    hosts = {h: {"ansible_host": a, "lab_gpu_profile": "h100-80gb-x4"} for h, a in addrs.items()}
    hosts["labrouter"].update(lab_gpu_profile="no-gpu", model_weights_python="/usr/bin/python3")  # copy: stdlib
    (inv_dir / "hosts.yml").write_text(json.dumps({"all": {"children": {"sglang_servers": {"hosts": hosts}}}}))
    wdir = f"/srv/models/lab-weights-kill-{uuid.uuid4().hex[:8]}"
    port = 18191
    extra = {
        "model_weights_model_id": MODEL, "model_weights_revision": "master", "model_weights_dir": wdir,
        "model_weights_python": python, "model_weights_endpoint": lab_hub.url, "model_weights_source": "fanout",
        "model_weights_poll_interval_s": 2, "model_weights_fanout_port": port, "model_weights_fanout_limit": 1,
        "model_weights_fanout_max_upload_mb_s": 1,  # 8 MiB shard: ~8 s per copy, time to kill mid-body
    }
    lab_hub.access_log.write_text("")
    lab_hub.faults(throttle_bps=4_000_000)
    proc = subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(inv_dir / "hosts.yml"), "playbooks/weights.yml",
                             "-e", json.dumps(extra)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    try:
        import time
        import urllib.request

        killed, deadline = False, time.monotonic() + 600
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{addrs['lab2']}:{port}/_sgl/fanout?listing=0", timeout=5) as r:
                    state = json.loads(r.read())
            except OSError:
                state = {}
            if state.get("uploads", 0) >= 1 and not state.get("complete"):  # labrouter is copying from lab2
                ssh(addrs["lab2"], "python3 -c \"import json,os,signal; "
                    f"os.kill(json.load(open('{wdir}/.sgl-weights/mirror.pid'))['pid'], signal.SIGKILL)\"")
                killed = True
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=1800)
        assert killed, "labrouter never copied from lab2 mid-way; the fault was not injected\n" + out[-4000:]
        assert proc.returncode == 0, out[-6000:]
        for host, addr in addrs.items():  # verified weights everywhere: MANIFEST.json + marker, sizes
            py = hosts[host].get("model_weights_python", python)
            st = json.loads(ssh(addr, f"{py} /opt/sglang/libexec/sgl_weights.py status --dir {wdir} "
                                      f"--model-id {MODEL} --revision master", check=False).strip().splitlines()[-1])
            assert st["complete"] and st["manifest"] and st["marker"], (host, st)
        expected = {p.relative_to(lab_hub.root / MODEL).as_posix()
                    for p in (lab_hub.root / MODEL).rglob("*") if p.is_file()}
        gets = harness.file_gets(lab_hub.access_log)
        assert Counter(r["file"] for r in gets) == Counter(expected)  # the hub sent the model once
        assert {r["client"] for r in gets} == {addrs["lab1"]}
        seed_log = [json.loads(line) for line in ssh(addrs["lab1"], f"cat {wdir}/.sgl-weights/mirror-access.log")
                    .splitlines() if line.strip()]
        resumed = [r for r in seed_log if r.get("file") and r["client"] == addrs["labrouter"] and (r["start"] or 0) > 0]
        assert resumed, "labrouter did not resume a partial file from lab1 after lab2's mirror died"
    finally:
        if proc.poll() is None:
            proc.kill()
        lab_hub.faults(throttle_bps=None)
        for addr in addrs.values():
            ssh(addr, f"rm -rf {wdir}", check=False)
