# -*- coding: utf-8 -*-
"""sgl_ready (action): the SGLang readiness gate. Runs the module ``sgl_ready`` (one check, on the
host) every ``interval`` seconds with sgl_poll's loop until the unit serves; fails at once when the
module reports the unit crashed, and after ``timeout`` seconds otherwise. Progress lines are printed
live as ``[<host>] <line>`` when they change. In check mode: one check, reported, never waited for
and never failed (the run would restart the unit first). Interface: ``ansible-doc sgl_ready``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

try:  # the pure logic below is unit-tested without Ansible
    from ansible.plugins.action import ActionBase
    from ansible.utils.display import Display
except ImportError:  # pragma: no cover
    ActionBase = object
    Display = None


def _sgl_poll():
    """The sibling action plugin sgl_poll (its Poller), loaded once by path."""
    name = "sgl_deploy_action_sgl_poll"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                         "sgl_poll.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def poll_answer(res: dict) -> tuple[int, str, str]:
    """A module result -> what sgl_poll's Poller reads from a status command: (rc, stdout, stderr).
    A crashed unit is a report with ``failed`` (the gate fails at once); a module that could not run
    (SSH, bad parameters) is an error (retried, then the gate fails with its message)."""
    if "ready" not in res or (res.get("failed") and not res.get("crashed")):
        return 1, "", str(res.get("msg") or res.get("module_stderr") or "sgl_ready failed")
    return 0, json.dumps({"done": bool(res["ready"]), "failed": bool(res.get("crashed")),
                          "line": res.get("line") or "", "msg": res.get("msg") or ""}), ""


def check_mode_result(res: dict) -> dict:
    """Check mode: the state now, never a failure."""
    state = "serves" if res.get("ready") else ("is down or crashed" if res.get("crashed") else "does not serve yet")
    return {"changed": False, "ready": bool(res.get("ready")), "crashed": bool(res.get("crashed")),
            "line": res.get("line") or "", "polls": 1, "elapsed_s": 0.0,
            "msg": f"check mode: not waited for; the unit {state} ({res.get('line') or res.get('msg') or 'no answer'})"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)

        def once() -> dict:
            return self._execute_module(module_name="sgl_ready", module_args=args, task_vars=task_vars)

        try:
            if self._task.check_mode:
                result.update(check_mode_result(once()))
                return result
            poll = _sgl_poll()
            display = Display()
            poller = poll.Poller(
                lambda: poll_answer(once()),
                (lambda line: None) if args.get("quiet") else display.display,
                interval=float(args.get("interval", 5.0)),
                timeout=float(args.get("timeout", 2700.0)),
                label=task_vars.get("inventory_hostname", "host"),
            )
            try:
                out = poller.run()
            except poll.PollError as exc:
                out = exc.result
            report = out.pop("report", {}) or {}
            result.update(out, ready=bool(report.get("done")), crashed=bool(report.get("failed")),
                          line=report.get("line", ""))
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
