"""The sgl_model_weights module's main paths, on a fake AnsibleModule against the lab hub on 127.0.0.1:
check mode names the files and bytes a run would fetch (and refuses a too-small disk) without writing;
present downloads with the real client, then a rerun is a no-op that contacts nothing; verified
rehashes, and deletes a corrupt file with the marker (in check mode only reports it); status reads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from module_harness import FakeModule, load_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab" / "hub"))
import harness  # noqa: E402

pytest.importorskip("ansible")
mod = load_module("sgl_model_weights", ("sgl_weights",))
M3 = "SglLab/MiniMax-M3-Lab"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubroot")
    info = harness.make_repo(root, "m3", shards=2, shard_mib=1)[M3]
    with harness.Hub(root, root / "access.log") as h:
        h.info = info
        yield h


def params(wdir: Path, hub, **kw) -> dict:
    return dict({"dir": str(wdir), "model_id": M3, "endpoint": hub.url, "margin_gb": 0.0}, **kw)


def run(p: dict, check: bool = False, diff: bool = False) -> dict:
    m = FakeModule(mod.ARGUMENT_SPEC, p, check_mode=check)
    m._diff = diff
    return mod.run(m)


def test_check_mode_names_files_and_bytes_and_writes_nothing(hub, tmp_path):
    wdir = tmp_path / "fresh" / "weights"
    hub.access_log.write_text("")
    out = run(params(wdir, hub), check=True, diff=True)
    assert out["changed"] is True and out["complete"] is False
    assert out["fetch_bytes"] == hub.info["bytes"] == out["total_bytes"], out
    assert len(out["fetch_files"]) == out["file_count"] > 2
    assert f"{hub.info['bytes']} bytes" in out["msg"] and "would download" in out["msg"]
    assert "model-00001-of-00002.safetensors" in out["diff"]["after"]
    assert not (tmp_path / "fresh").exists()  # nothing created
    assert harness.file_gets(hub.access_log) == []  # listed, nothing downloaded


def test_check_mode_honours_patterns(hub, tmp_path):
    out = run(params(tmp_path / "w", hub, allow_patterns=["*.json"]), check=True)
    assert out["fetch_files"] and all(p.endswith(".json") for p in out["fetch_files"])
    assert out["fetch_bytes"] < hub.info["bytes"]


def test_check_mode_refuses_a_disk_without_room(hub, tmp_path):
    with pytest.raises(mod.ModuleError, match="not enough disk space") as exc:
        run(params(tmp_path / "w", hub, margin_gb=1e9), check=True)
    assert exc.value.details["space_ok"] is False and exc.value.details["fetch_bytes"] == hub.info["bytes"]


@pytest.mark.skipif(harness.sglang_python() is None, reason="needs .venv-sglang for the client")
def test_present_downloads_then_rerun_is_a_noop_and_verified_catches_corruption(hub, tmp_path):
    """With the SGLang venv's python (the client), as the role runs the download."""
    import json
    import subprocess

    wdir = tmp_path / "weights"
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from module_harness import FakeModule, load_module
mod = load_module("sgl_model_weights", ("sgl_weights",))
m = FakeModule(mod.ARGUMENT_SPEC, json.loads(sys.argv[1]))
print(json.dumps(mod.run(m), default=list))
"""
    ansible_path = str(Path(pytest.importorskip("ansible").__file__).parents[1])
    env = harness.tool_env(tmp_path, {"PYTHONPATH": ansible_path})
    proc = subprocess.run([str(harness.sglang_python()), "-c", code, json.dumps(params(wdir, hub))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["changed"] is True and out["complete"] is True, out
    assert (wdir / "MANIFEST.json").is_file() and (wdir / ".sgl-complete").is_file()

    before = len(harness.access(hub.access_log))
    again = run(params(wdir, hub))  # the controller's python: no client needed for a no-op
    assert again["changed"] is False and again["complete"] and "hub not contacted" in again["msg"]
    assert len(harness.access(hub.access_log)) == before

    assert run({"dir": str(wdir), "state": "status"})["complete"] is True
    ok = run({"dir": str(wdir), "state": "verified"})
    assert ok["changed"] is False and ok["bad"] == [] and ok["removed"] == []

    shard = wdir / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    preview = run({"dir": str(wdir), "state": "verified"}, check=True, diff=True)
    assert preview["changed"] is True and preview["removed"] == [shard.name] and shard.exists()
    assert (wdir / ".sgl-complete").exists() and shard.name in preview["diff"]["before"]
    with pytest.raises(mod.ModuleError, match="do not match"):
        run({"dir": str(wdir), "state": "verified", "delete_bad": False})
    done = run({"dir": str(wdir), "state": "verified"})
    assert done["changed"] is True and done["removed"] == [shard.name] and not shard.exists()
    assert done["complete"] is False and not (wdir / ".sgl-complete").exists()


def test_status_of_a_missing_dir_and_present_needs_a_model(tmp_path):
    out = run({"dir": str(tmp_path / "nope"), "state": "status"})
    assert out == dict(out, changed=False, complete=False) and "does not exist" in out["reason"]
    with pytest.raises(mod.ModuleError, match="needs model_id"):
        run({"dir": str(tmp_path / "nope")})


def test_dead_hub_gives_the_same_message_with_and_without_the_client():
    """The plain-HTTP listing (a host without the hub client, the check-mode preview) names the hub,
    the model and the fix exactly as the client's listing does: one message for a dead hub."""
    import argparse

    from sgl_deploy import weights as w

    dead = "http://127.0.0.1:1"
    args = argparse.Namespace(endpoint=dead, model_id="SglLab/MiniMax-M3-Lab", revision="master", hub="modelscope")
    with pytest.raises(w.WeightsError) as http_err:
        w.listing_modelscope_http(args, timeout=5)
    client_err = w.classify_client_error(ConnectionError("refused"), dead, "listing SglLab/MiniMax-M3-Lab@master")
    for err in (http_err.value, client_err):
        assert err.rc == w.EXIT_HUB_UNREACHABLE
        for part in (f"cannot reach the hub at {dead}", "SglLab/MiniMax-M3-Lab@master", "Fix:", "model_weights_endpoint"):
            assert part in str(err), str(err)


@pytest.mark.parametrize("code,words", [(404, "not found on"), (401, "access denied by"), (403, "access denied by")])
def test_plain_http_listing_words_missing_and_denied_as_the_client_does(monkeypatch, code, words):
    """404 / 401 / 403 of the plain-HTTP listing give the client path's message (one wording per cause)."""
    import argparse
    import urllib.error
    import urllib.request

    from sgl_deploy import weights as w

    def refuse(req, timeout=None):
        raise urllib.error.HTTPError(req.full_url, code, "refused", {}, None)

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    args = argparse.Namespace(endpoint="http://hub.test", model_id="o/m", revision="master", hub="modelscope")
    with pytest.raises(w.WeightsError) as err:
        w.listing_modelscope_http(args)
    assert err.value.rc == w.EXIT_NOT_FOUND
    assert f"{words} http://hub.test" in str(err.value) and "listing o/m@master" in str(err.value), str(err.value)
