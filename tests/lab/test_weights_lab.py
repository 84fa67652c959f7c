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
        # no host asks the hub again; the controller's validation may list the model once (docs/validation.md:
        # an unknown model or revision is refused before any host is touched), no file is fetched
        new = harness.access(lab_hub.access_log)[n_requests:]
        assert all(r["path"].endswith("/repo/files") and not r.get("file") for r in new), new
        addrs = {hosts["_meta"]["hostvars"][h]["ansible_host"] for h in servers}
        assert len(new) <= 1 and not {r["client"] for r in new} & addrs, new
    finally:
        ansible("sglang_servers", "-m", "ansible.builtin.file", "-a", f"path={wdir} state=absent", check=False)
