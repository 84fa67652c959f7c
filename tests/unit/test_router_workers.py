"""The module sgl_router_workers (plugins/modules) against a fake sglang-router worker API: reconcile,
idempotence, check mode, diff, the key, and failures."""

from __future__ import annotations

import pytest

from module_harness import FakeModule, load_module
from test_redeploy import router  # noqa: F401 - the fake router API fixture (key file "k" in tmp_path)

pytest.importorskip("ansible")
mod = load_module("sgl_router_workers", ("sgl_router",))
W1, W2, W3 = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"


def run(router, tmp_path, desired, check_mode=False, diff=False, **kw):
    m = FakeModule(mod.ARGUMENT_SPEC, {"desired": desired, "base_url": router.url, "key_file": str(tmp_path / "key"),
                                       "timeout": 5, **kw}, check_mode=check_mode)
    m._diff = diff
    return mod.run(m)


def urls(router):
    return sorted(w["url"] for w in router.workers.values())


def test_reconcile_adds_removes_and_is_idempotent(router, tmp_path):
    out = run(router, tmp_path, [W1, W2 + "/"])
    assert out["changed"] and out["added"] == [W1, W2] and out["removed"] == [] and urls(router) == [W1, W2]
    assert not run(router, tmp_path, [W1, W2])["changed"]
    out = run(router, tmp_path, [W2, W3], diff=True)
    assert out["added"] == [W3] and out["removed"] == [W1] and urls(router) == [W2, W3]
    assert out["diff"]["before"] == f"{W1}\n{W2}\n" and out["diff"]["after"] == f"{W2}\n{W3}\n"
    assert run(router, tmp_path, [])["removed"] == [W2, W3] and urls(router) == []


def test_added_workers_get_the_key_in_the_post_body(router, tmp_path):
    # smg 1.13.0 does not hand its own --api-key to a worker added through POST /workers: without
    # "api_key" in the body the worker answers its discovery with 401 and smg registers it as "unknown"
    run(router, tmp_path, [W1])
    assert [w["api_key"] for w in router.workers.values()] == ["k"]


def test_check_mode_says_what_would_change_and_changes_nothing(router, tmp_path):
    run(router, tmp_path, [W1])
    out = run(router, tmp_path, [W2], check_mode=True, diff=True)
    assert out["changed"] and out["added"] == [W2] and out["removed"] == [W1]
    assert urls(router) == [W1]
    assert "diff" in out and W2 in out["diff"]["after"]
    assert not run(router, tmp_path, [W1], check_mode=True)["changed"]


def test_without_the_key_the_router_refuses(router, tmp_path):
    m = FakeModule(mod.ARGUMENT_SPEC, {"desired": [W1], "base_url": router.url, "timeout": 5})
    with pytest.raises(mod.ModuleError, match="401"):
        mod.run(m)


def test_a_missing_key_file_is_a_clear_error(router, tmp_path):
    with pytest.raises(mod.ModuleError, match="cannot read the key file"):
        run(router, tmp_path, [W1], key_file=str(tmp_path / "nope"))


def test_an_unreachable_router_is_a_clear_error(tmp_path):
    m = FakeModule(mod.ARGUMENT_SPEC, {"desired": [W1], "base_url": "http://127.0.0.1:1", "timeout": 1,
                                       "http_timeout": 1})
    with pytest.raises(mod.ModuleError, match="GET /workers answered nothing"):
        mod.run(m)


def test_the_module_runs_under_ansible(router, tmp_path):
    """The real module through ansible (AnsiballZ ships plugins/module_utils/sgl_router.py), --check --diff too."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from module_harness import REPO

    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    args = json.dumps({"desired": [W1], "base_url": router.url, "key_file": str(tmp_path / "key"), "timeout": 5})
    for extra, marker, after in ((["--check", "--diff"], "| CHANGED =>", []), ([], "| CHANGED =>", [W1]),
                                 ([], "| SUCCESS =>", [W1])):
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
                               "-e", f"ansible_python_interpreter={sys.executable}", "-m", "sgl_router_workers",
                               "-a", args, *extra], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        assert proc.returncode == 0 and marker in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert urls(router) == after
