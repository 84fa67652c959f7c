"""The model_weights role end to end with ansible-playbook on this machine: two inventory hosts
(connection local, separate weights dirs) with fan-out from the lab hub on 127.0.0.1, the live
sgl_poll lines, a rerun with changed=0 and no hub contact, a corrupted shard repaired with
--tags weights-verify from the seed's mirror, and the disk gate failing before any download."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab" / "hub"))
import harness  # noqa: E402

M3 = "SglLab/MiniMax-M3-Lab"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(harness.sglang_python() is None, reason="needs .venv-sglang (SGL_SGLANG_PYTHON)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the role installs its tool as root:root"),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubroot")
    harness.make_repo(root, "m3", shards=2, shard_mib=2)
    with harness.Hub(root, root / "access.log") as h:
        h.root = root
        yield h


def inventory(tmp_path: Path, hub, **overrides) -> Path:
    hosts = {h: {"model_weights_dir": str(tmp_path / h / "weights"), "model_weights_fanout_port": harness.free_port()}
             for h in ("gpu01", "gpu02")}  # one address (127.0.0.1): a mirror port per host
    group_vars = {
        "ansible_connection": "local",
        "ansible_host": "127.0.0.1",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "model_weights_model_id": M3,
        "model_weights_revision": "master",
        "model_weights_python": str(harness.sglang_python()),
        "model_weights_tool_path": str(tmp_path / "{{ inventory_hostname }}" / "libexec" / "sgl_weights.py"),
        "model_weights_endpoint": hub.url,
        "model_weights_source": "fanout",
        "model_weights_poll_interval_s": 1,
        "model_weights_disk_margin_gb": 0,
        # the fleet validation (playbooks/validate.yml) refuses an engine without a key; no index or
        # hub look-ups from the controller in unit tests
        "sglang_service_api_key": "unit-key",
        "sgl_validate_remote_checks": False,
    }
    group_vars.update(overrides)
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"sglang_servers": {"hosts": hosts, "vars": group_vars}}))
    return path


def playbook(inv: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_ASYNC_DIR=str(inv.parent / "async"), HOME=str(inv.parent))
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv),
                           "playbooks/weights.yml", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def recap(out: str) -> dict:
    return {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in re.finditer(r"^(gpu0\d)\s+:\s+(.*)$", out, re.M)}


def tree(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*")
            if p.is_file() and not p.relative_to(d).as_posix().startswith(".") and p.name != "MANIFEST.json"}


def test_fanout_rerun_and_verify(hub, tmp_path):
    inv = inventory(tmp_path, hub)
    hub.access_log.write_text("")
    first = playbook(inv)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    assert "[gpu01] weights complete:" in first.stdout and "[gpu02] weights complete:" in first.stdout
    expected = tree(hub.root / M3)
    for host in ("gpu01", "gpu02"):
        assert tree(tmp_path / host / "weights") == expected
    assert Counter(r["file"] for r in harness.file_gets(hub.access_log)) == Counter(expected.keys())  # hub: once
    mirror_log = tmp_path / "gpu01" / "weights" / ".sgl-weights" / "mirror-access.log"
    assert Counter(r["file"] for r in harness.file_gets(mirror_log)) == Counter(expected.keys())
    assert not (tmp_path / "gpu01" / "weights" / ".sgl-weights" / "mirror.pid").exists()  # mirror stopped

    n_hub = len(harness.access(hub.access_log))
    second = playbook(inv)
    assert second.returncode == 0, second.stdout[-5000:]
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap(second.stdout).values()), second.stdout[-3000:]
    assert "nothing to do, hub not contacted" in second.stdout
    assert len(harness.access(hub.access_log)) == n_hub

    shard = tmp_path / "gpu02" / "weights" / "model-00001-of-00002.safetensors"
    with open(shard, "r+b") as f:
        f.seek(4096)
        f.write(b"bitrot")
    n_mirror = len(harness.file_gets(mirror_log))
    third = playbook(inv, "--tags", "weights-verify")
    assert third.returncode == 0, third.stdout[-5000:]
    assert "removed 1 bad file(s)" in third.stdout
    assert tree(tmp_path / "gpu02" / "weights") == expected
    assert [r["file"] for r in harness.file_gets(mirror_log)[n_mirror:]] == [shard.name]  # from the seed, once
    assert len(harness.access(hub.access_log)) == n_hub  # the hub was not needed


def test_disk_gate_fails_before_download_with_host_and_variable(hub, tmp_path):
    inv = inventory(tmp_path, hub, model_weights_source="hub", model_weights_disk_margin_gb=1000000000)
    hub.access_log.write_text("")
    run = playbook(inv, "--limit", "gpu01")
    assert run.returncode != 0
    assert re.search(r"gpu01: not enough disk space .*model_weights_dir.*model_weights_disk_margin_gb", run.stdout,
                     re.S), run.stdout[-4000:]
    assert harness.file_gets(hub.access_log) == []
    assert not (tmp_path / "gpu01" / "weights" / ".sgl-complete").exists()
