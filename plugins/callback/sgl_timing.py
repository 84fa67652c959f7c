"""Callback plugin sgl_timing: where a playbook run spends its time (docs/performance.md).

Enabled per run: ANSIBLE_CALLBACKS_ENABLED=sgl_timing (scripts/bench/converge.py sets it). Writes one
JSON document to $SGL_TIMING_JSON (when set) and prints the per-play table at the end of the run.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: sgl_timing
type: aggregate
short_description: Wall time per play and per task, tasks and remote module runs per host
description:
  - Records the wall time of every play (a phase of site.yml) and of every task (until the next task starts).
  - Counts, per host, the tasks that ran and the remote module runs (one SSH exec each with pipelining).
    A task counts as remote unless its action runs on the controller (set_fact, debug, assert, include_*,
    meta, the toolkit's validation action) or it is delegated to localhost.
  - Writes the numbers as JSON to the file named by C(SGL_TIMING_JSON) and prints the per-play table.
requirements: [enable in ANSIBLE_CALLBACKS_ENABLED]
options: {}
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

# actions that never run a module on the target host
CONTROLLER_ACTIONS = frozenset({
    "set_fact", "debug", "assert", "fail", "meta", "include_tasks", "import_tasks", "include_role",
    "import_role", "include_vars", "add_host", "group_by", "pause", "set_stats", "sgl_validate_fleet",
    "ansible.builtin.set_fact", "ansible.builtin.debug", "ansible.builtin.assert", "ansible.builtin.fail",
    "ansible.builtin.meta", "ansible.builtin.include_tasks", "ansible.builtin.import_tasks",
    "ansible.builtin.include_role", "ansible.builtin.import_role", "ansible.builtin.include_vars",
    "ansible.builtin.add_host", "ansible.builtin.group_by", "ansible.builtin.pause", "ansible.builtin.set_stats",
})


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "sgl_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._t0 = time.monotonic()
        self._plays: list[dict] = []
        self._tasks: list[dict] = []
        self._hosts: dict[str, dict[str, int]] = {}

    def _close_task(self, now: float) -> None:
        if self._tasks and self._tasks[-1].get("seconds") is None:
            self._tasks[-1]["seconds"] = round(now - self._tasks[-1]["start"], 3)

    def _close_play(self, now: float) -> None:
        self._close_task(now)
        if self._plays and self._plays[-1].get("seconds") is None:
            self._plays[-1]["seconds"] = round(now - self._plays[-1]["start"], 3)

    def v2_playbook_on_play_start(self, play):
        now = time.monotonic()
        self._close_play(now)
        self._plays.append({"play": play.get_name().strip(), "start": now, "seconds": None, "tasks": 0})

    def v2_playbook_on_task_start(self, task, is_conditional):
        now = time.monotonic()
        self._close_task(now)
        role = task._role.get_name() if task._role else ""
        self._tasks.append({"task": task.get_name().strip(), "role": role, "play": len(self._plays) - 1,
                            "start": now, "seconds": None})
        if self._plays:
            self._plays[-1]["tasks"] += 1

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _count(self, result, ran: bool) -> None:
        host = result._host.get_name()
        counts = self._hosts.setdefault(host, {"tasks": 0, "skipped": 0, "remote": 0})
        if not ran:
            counts["skipped"] += 1
            return
        counts["tasks"] += 1
        task = result._task
        delegated = (task.delegate_to or "") in ("localhost", "127.0.0.1")
        if task.action not in CONTROLLER_ACTIONS and not delegated:
            counts["remote"] += 1

    def v2_runner_on_ok(self, result):
        self._count(result, True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._count(result, True)

    def v2_runner_on_unreachable(self, result):
        self._count(result, True)

    def v2_runner_on_skipped(self, result):
        self._count(result, False)

    def v2_playbook_on_stats(self, stats):
        now = time.monotonic()
        self._close_play(now)
        wall = round(now - self._t0, 3)
        plays = [{k: v for k, v in p.items() if k != "start"} for p in self._plays]
        tasks = sorted(({k: v for k, v in t.items() if k != "start"} for t in self._tasks),
                       key=lambda t: -(t["seconds"] or 0))
        doc = {"wall_s": wall, "plays": plays, "hosts": self._hosts, "slowest_tasks": tasks[:40],
               "task_count": len(self._tasks)}
        path = os.environ.get("SGL_TIMING_JSON")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1)
        self._display.display(f"sgl_timing: {wall:.1f}s in {len(plays)} plays, {len(self._tasks)} tasks")
        for p in plays:
            self._display.display(f"  {p['seconds'] or 0:7.2f}s {p['tasks']:4d} tasks  {p['play']}")
