"""Action sgl_probe_runs (plugins/action/sgl_probe_runs.py): the probes role's runs start at once and
each one's result comes back in order; a run past the timeout is killed, not waited for."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sgl_probe_runs_action", REPO / "plugins/action/sgl_probe_runs.py")
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)


def test_runs_start_at_once_and_come_back_in_order():
    runs = [{"name": f"r{i}", "argv": [sys.executable, "-c",
                                      f"import os, time; time.sleep(1); print(os.environ['SGL_X'], {i})"]}
            for i in range(4)]
    start = time.monotonic()
    out = action.run_all(runs, {"SGL_X": "key"}, timeout=60)
    took = time.monotonic() - start
    assert [r["name"] for r in out] == ["r0", "r1", "r2", "r3"]
    assert [r["stdout"].strip() for r in out] == ["key 0", "key 1", "key 2", "key 3"]
    assert all(r["rc"] == 0 for r in out)
    assert took < 3.5, f"4 runs of 1 s took {took:.1f}s: not in parallel"


def test_a_run_past_the_timeout_is_killed_and_others_keep_their_result():
    out = action.run_all([{"name": "slow", "argv": [sys.executable, "-c", "import time; time.sleep(30)"]},
                          {"name": "fails", "argv": [sys.executable, "-c", "import sys; sys.exit(3)"]}], {}, timeout=1)
    assert out[0]["rc"] == -9 and "killed after" in out[0]["stderr"]
    assert out[1]["rc"] == 3
