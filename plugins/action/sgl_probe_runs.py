# -*- coding: utf-8 -*-
"""sgl_probe_runs: start several probe runs on the controller at once and wait for all of them.

The probes role runs every target (this host's endpoint, the router on the first host) and every
suite of one host through this action, so the probe phase takes as long as its slowest run, not
the sum of them; hosts run in parallel forks as always. No async job files, no retry lines.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
name: sgl_probe_runs
short_description: Run several commands on the controller in parallel and collect each one's result
description:
  - Starts every command of O(runs) on the controller at once (no shell), waits for all, and returns
    each one's exit code, stdout and stderr. Used by the probes role for C(sgl-deploy probe) runs.
  - Skipped in check mode. Never fails by itself; the caller decides from each C(rc).
options:
  runs:
    description: The commands; each has a C(name) (a label) and an C(argv) (a list of strings).
    type: list
    elements: dict
    required: true
  env:
    description: Extra environment for every command (for example the API key; give the task C(no_log)).
    type: dict
    default: {}
  timeout:
    description: Seconds before a command that has not ended is killed (its rc is then -9).
    type: int
    default: 3600
"""

RETURN = r"""
runs:
  description: One entry per command, in the order given.
  type: list
  elements: dict
  returned: always
  contains:
    name: {description: The label given., type: str}
    rc: {description: Exit code (-9 when killed at the timeout)., type: int}
    stdout: {description: Standard output., type: str}
    stderr: {description: Standard error., type: str}
    seconds: {description: Wall time of the command., type: float}
"""


def run_all(runs: list[dict], env: dict[str, str], timeout: float) -> list[dict]:
    """Start every argv at once; wait for all (each killed at ``timeout``)."""
    full_env = {**os.environ, **{str(k): str(v) for k, v in env.items()}}

    def one(run: dict) -> dict:
        start = time.monotonic()
        proc = subprocess.Popen([str(a) for a in run["argv"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=full_env)
        try:
            out, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            rc = -9
            err += f"\nkilled after {timeout:.0f}s"
        return {"name": str(run.get("name", "")), "rc": rc, "stdout": out, "stderr": err,
                "seconds": round(time.monotonic() - start, 3)}

    if not runs:
        return []
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        return list(pool.map(one, runs))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("runs", "env", "timeout"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._task.check_mode:
            result.update(skipped=True, msg="check mode: no probe run", runs=[])
            return result
        args = self._task.args
        runs = args.get("runs") or []
        if not isinstance(runs, list) or any(not isinstance(r, dict) or not isinstance(r.get("argv"), list) for r in runs):
            result.update(failed=True, msg="sgl_probe_runs: runs must be a list of {name, argv: [..]}")
            return result
        result.update(changed=False, runs=run_all(runs, args.get("env") or {}, float(args.get("timeout", 3600))))
        return result
