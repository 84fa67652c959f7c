# -*- coding: utf-8 -*-
"""sgl_poll: run a status command on the host every ``interval`` seconds until it reports done.

Generic controller-side watcher for long host-side work (the weights download; the SGLang
readiness gate, action ``sgl_ready``, runs its module in this loop). The command prints ONE JSON
object per run::

    {"done": bool, "failed": bool, "line": "progress text", "lines": ["..."], "msg": "..."}

``line`` (may hold several lines) and ``lines`` are printed live on the controller as
``[<label>] <text>``; identical consecutive output is not repeated. The task returns ok when
``done``, fails with ``msg`` when ``failed``, and fails when ``timeout`` runs out (with the last
line). With ``async_jid`` the async job that does the work is checked too, so a crashed job
fails the task at once instead of at the timeout. A command that errors or prints no JSON is
retried ``max_errors`` times in a row (SSH hiccups) before the task fails.

Task arguments:
  command     str or list (argv; quoted for the remote shell). Required.
  interval    seconds between polls (default 5; the first poll is immediate).
  timeout     seconds before giving up (default 3600).
  async_jid   ansible_job_id of an async task to watch as well (optional).
  label       prefix of printed lines (default: inventory_hostname).
  max_errors  consecutive command errors tolerated (default 3).
  quiet       do not print lines (default false).

Returns: report (the last JSON object), polls, elapsed_s, msg.
"""

from __future__ import annotations

import json
import shlex
import time

try:  # the pure logic below is unit-tested without Ansible
    from ansible.plugins.action import ActionBase
    from ansible.utils.display import Display
except ImportError:  # pragma: no cover
    ActionBase = object
    Display = None


def parse_report(stdout: str) -> dict:
    """The command's JSON object: the whole stdout, else its last line that is a JSON object
    (tolerates noise printed before it). Raises ValueError."""
    text = (stdout or "").strip()
    if not text:
        raise ValueError("the command printed nothing")
    candidates = [text] + [ln.strip() for ln in reversed(text.splitlines()) if ln.strip().startswith("{")]
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    raise ValueError(f"no JSON object in the command output: {text[-300:]!r}")


def report_lines(label: str, report: dict) -> list[str]:
    """Lines to print for one report: ``line`` split on newlines, then ``lines``."""
    texts = []
    line = report.get("line")
    if isinstance(line, str) and line.strip():
        texts.extend(ln for ln in line.splitlines() if ln.strip())
    extra = report.get("lines")
    if isinstance(extra, list):
        texts.extend(str(ln) for ln in extra if str(ln).strip())
    return [f"[{label}] {t}" for t in texts]


def command_string(command) -> str:
    if isinstance(command, (list, tuple)):
        return " ".join(shlex.quote(str(c)) for c in command)
    return str(command)


class PollError(Exception):
    """The poll ended in failure; ``result`` is the task result."""

    def __init__(self, result: dict):
        super().__init__(result.get("msg"))
        self.result = result


class Poller:
    """The polling loop, with the side effects injected (unit tests use fakes).

    run_command() -> (rc, stdout, stderr); check_job() -> None (still running / unknown) or a
    dict {"finished": bool, "failed": bool, "msg": str}; emit(line); sleep(s); clock() -> s.
    """

    def __init__(self, run_command, emit, *, interval=5.0, timeout=3600.0, max_errors=3,
                 label="host", check_job=None, sleep=time.sleep, clock=time.monotonic):
        self.run_command = run_command
        self.emit = emit
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.max_errors = int(max_errors)
        self.label = label
        self.check_job = check_job
        self.sleep = sleep
        self.clock = clock
        self.polls = 0
        self.last_report: dict = {}
        self._last_printed: list[str] = []

    def _print(self, report: dict) -> None:
        lines = report_lines(self.label, report)
        if lines and lines != self._last_printed:
            for ln in lines:
                self.emit(ln)
            self._last_printed = lines

    def _result(self, start: float, **fields) -> dict:
        res = {"changed": False, "report": self.last_report, "polls": self.polls,
               "elapsed_s": round(self.clock() - start, 1)}
        res.update(fields)
        return res

    def run(self) -> dict:
        start = self.clock()
        deadline = start + self.timeout
        errors = 0
        last_error = ""
        job_done = False
        while True:
            self.polls += 1
            rc, out, err = self.run_command()
            try:
                if rc not in (0, None) and not (out or "").strip():
                    raise ValueError(f"rc={rc}: {(err or '').strip()[-300:]}")
                report = parse_report(out)
            except ValueError as exc:
                errors += 1
                last_error = str(exc)
                if errors >= self.max_errors:
                    raise PollError(self._result(start, failed=True, msg=(
                        f"status command failed {errors} times in a row: {last_error}")))
            else:
                errors = 0
                self.last_report = report
                self._print(report)
                if report.get("failed"):
                    raise PollError(self._result(start, failed=True, msg=str(
                        report.get("msg") or report.get("line") or "the status command reported failure")))
                if report.get("done"):
                    return self._result(start, msg=str(report.get("msg") or report.get("line") or "done"))
            if self.check_job and not job_done:
                job = self.check_job()
                if job and job.get("finished"):
                    if job.get("failed"):
                        raise PollError(self._result(start, failed=True, msg=(
                            f"the async job failed before the status command reported done: {job.get('msg')}"),
                            job=job))
                    job_done = True  # it ended well: the status command still decides when we are done
                    continue  # poll again right away
            now = self.clock()
            if now >= deadline:
                last = self.last_report.get("line") or last_error or "no report"
                raise PollError(self._result(start, failed=True, timed_out=True, msg=(
                    f"timed out after {self.timeout:g}s waiting for done; last: {last}")))
            self.sleep(min(self.interval, max(0.0, deadline - now)))


def job_summary(status: dict) -> dict | None:
    """Reduce an async_status result to {"finished", "failed", "msg"} (None: unknown)."""
    if not status or not status.get("finished"):  # ("could not find job" comes as finished+failed)
        return None
    rc = status.get("rc")
    failed = bool(status.get("failed")) or (rc not in (None, 0))
    msg = status.get("msg") or ""
    stdout = (status.get("stdout") or "").strip()
    if stdout:  # our tools print one JSON object: prefer its msg
        try:
            msg = parse_report(stdout).get("msg") or msg
        except ValueError:
            msg = msg or stdout[-500:]
    stderr = (status.get("stderr") or "").strip()
    if failed and not msg:
        msg = stderr[-500:] or f"rc={rc}"
    return {"finished": True, "failed": failed, "msg": f"rc={rc}: {msg}" if failed else msg, "rc": rc}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("command", "interval", "timeout", "async_jid", "label", "max_errors", "quiet"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        ok, args = self.validate_argument_spec(argument_spec={
            "command": {"type": "raw", "required": True},
            "interval": {"type": "float", "default": 5.0},
            "timeout": {"type": "float", "default": 3600.0},
            "async_jid": {"type": "str"},
            "label": {"type": "str"},
            "max_errors": {"type": "int", "default": 3},
            "quiet": {"type": "bool", "default": False},
        })
        if self._task.check_mode:
            result.update(skipped=True, msg="sgl_poll does not run in check mode")
            return result
        label = args["label"] or task_vars.get("inventory_hostname", "host")
        cmd = command_string(args["command"])
        display = Display()

        def run_command():
            res = self._low_level_execute_command(cmd, sudoable=True)
            return res.get("rc"), res.get("stdout", ""), res.get("stderr", "")

        check_job = None
        if args.get("async_jid"):
            jid = args["async_jid"]

            def check_job():
                async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
                status = self._execute_module(
                    module_name="ansible.legacy.async_status",
                    module_args={"jid": jid, "mode": "status", "_async_dir": async_dir},
                    task_vars=task_vars,
                )
                return job_summary(status)

        poller = Poller(
            run_command,
            (lambda line: None) if args["quiet"] else display.display,
            interval=args["interval"],
            timeout=args["timeout"],
            max_errors=args["max_errors"],
            label=label,
            check_job=check_job,
        )
        try:
            result.update(poller.run())
        except PollError as exc:
            result.update(exc.result)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
