"""plugins/action/sgl_poll.py: the polling logic without Ansible, then one real playbook run
(connection local) with live lines, a failing report, a timeout and a crashed async job."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("sgl_poll_plugin", REPO / "plugins" / "action" / "sgl_poll.py")
sgl_poll = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sgl_poll)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def make_poller(outputs, *, timeout=100, interval=5, check_job=None, max_errors=3, run_cost=0.0):
    """outputs: list of (rc, stdout) returned by successive polls (the last one repeats)."""
    clock, emitted, calls = FakeClock(), [], []

    def run_command():
        calls.append(clock.t)
        clock.t += run_cost
        rc, out = outputs[min(len(calls) - 1, len(outputs) - 1)]
        return rc, out, "some stderr" if rc else ""

    poller = sgl_poll.Poller(run_command, emitted.append, interval=interval, timeout=timeout, label="gpu01",
                             check_job=check_job, max_errors=max_errors, sleep=clock.sleep, clock=clock)
    return poller, emitted, calls


def j(**kw):
    import json

    return 0, json.dumps(kw)


def test_parse_report():
    assert sgl_poll.parse_report('{"done": true}') == {"done": True}
    assert sgl_poll.parse_report('warning: noise\n{"done": false, "line": "x"}\n') == {"done": False, "line": "x"}
    for bad in ("", "   ", "not json", "[1, 2]", '{"unterminated": '):
        with pytest.raises(ValueError):
            sgl_poll.parse_report(bad)


def test_report_lines_and_command_string():
    assert sgl_poll.report_lines("gpu01", {"line": "weights 1/2 GB", "lines": ["journal a", "", "journal b"]}) == [
        "[gpu01] weights 1/2 GB", "[gpu01] journal a", "[gpu01] journal b"]
    assert sgl_poll.report_lines("h", {"line": "a\n\nb"}) == ["[h] a", "[h] b"]
    assert sgl_poll.report_lines("h", {"done": True}) == []
    assert sgl_poll.command_string(["/opt/py", "tool.py", "progress", "--dir", "/srv/a b"]) == \
        "/opt/py tool.py progress --dir '/srv/a b'"
    assert sgl_poll.command_string("echo hi") == "echo hi"


def test_polls_until_done_printing_changed_lines_only():
    poller, emitted, calls = make_poller([j(line="step 1"), j(line="step 1"), j(line="step 2"),
                                          j(done=True, line="all done", msg="finished")])
    res = poller.run()
    assert res["msg"] == "finished" and res["polls"] == 4 and not res.get("failed")
    assert res["report"]["done"] is True and res["elapsed_s"] == 15.0
    assert emitted == ["[gpu01] step 1", "[gpu01] step 2", "[gpu01] all done"]
    assert calls == [0.0, 5.0, 10.0, 15.0]  # first poll immediately, then every interval


def test_failed_report_fails_with_its_msg():
    poller, emitted, _ = make_poller([j(line="weights 1/9 GB"), j(failed=True, line="weights FAILED: x", msg="disk full")])
    with pytest.raises(sgl_poll.PollError) as err:
        poller.run()
    assert err.value.result["failed"] and err.value.result["msg"] == "disk full"
    assert emitted[-1] == "[gpu01] weights FAILED: x"


def test_timeout_fails_with_last_line():
    poller, _, calls = make_poller([j(line="still loading")], timeout=12, interval=5)
    with pytest.raises(sgl_poll.PollError) as err:
        poller.run()
    res = err.value.result
    assert res["timed_out"] and "timed out after 12s" in res["msg"] and "still loading" in res["msg"]
    assert calls == [0.0, 5.0, 10.0, 12.0]  # the last sleep is cut to the deadline


def test_transient_errors_are_tolerated_then_fatal():
    poller, _, _ = make_poller([(255, ""), (0, "garbage"), j(done=True)])
    assert poller.run()["report"] == {"done": True}
    poller, _, _ = make_poller([(255, ""), (255, ""), (255, "")])
    with pytest.raises(sgl_poll.PollError) as err:
        poller.run()
    assert "failed 3 times in a row" in err.value.result["msg"] and "some stderr" in err.value.result["msg"]


def test_crashed_async_job_fails_fast():
    states = iter([None, {"finished": True, "failed": True, "msg": "rc=3: cannot reach the hub"}])
    poller, _, calls = make_poller([j(line="weights 0/9 GB")], timeout=3600, check_job=lambda: next(states))
    with pytest.raises(sgl_poll.PollError) as err:
        poller.run()
    assert "cannot reach the hub" in err.value.result["msg"] and len(calls) == 2


def test_finished_job_does_not_end_the_wait_by_itself():
    jobs = iter([{"finished": True, "failed": False, "msg": ""}])
    poller, _, calls = make_poller([j(line="finalizing"), j(done=True, msg="ok")], check_job=lambda: next(jobs, None))
    assert poller.run()["msg"] == "ok" and calls == [0.0, 0.0]  # re-polled at once, then done


def test_job_summary():
    assert sgl_poll.job_summary({"started": True, "finished": False}) is None
    assert sgl_poll.job_summary({"finished": True, "rc": 0, "stdout": '{"msg": "fine"}'}) == {
        "finished": True, "failed": False, "msg": "fine", "rc": 0}
    s = sgl_poll.job_summary({"finished": True, "failed": True, "rc": 3, "stdout": 'x\n{"msg": "no hub", "rc": 3}'})
    assert s["failed"] and s["msg"] == "rc=3: no hub"
    s = sgl_poll.job_summary({"finished": True, "failed": True, "msg": "could not find job", "started": True})
    assert s["failed"] and "could not find job" in s["msg"]


PLAYBOOK = """
- name: sgl_poll against localhost
  hosts: localhost
  gather_facts: false
  vars:
    counter: "{{ work }}/counter"
  tasks:
    - name: Count to 3, then report done
      sgl_poll:
        command: >-
          n=$(( $(cat {{ counter }} 2>/dev/null || echo 0) + 1 )); echo $n > {{ counter }};
          if [ $n -ge 3 ]; then echo '{"done": true, "line": "step '$n' ready", "msg": "ready after '$n'"}';
          else echo '{"done": false, "line": "step '$n' of 3"}'; fi
        interval: 0.2
        timeout: 60
      register: ok_poll

    - name: A failing report
      sgl_poll:
        command: ["sh", "-c", "echo '{\\"failed\\": true, \\"msg\\": \\"weights are incomplete\\"}'"]
        interval: 0.2
        timeout: 30
      register: failed_poll
      ignore_errors: true

    - name: A timeout
      sgl_poll:
        command: echo '{"done":false,"line":"warming up"}'
        interval: 0.3
        timeout: 1
        label: gate
      register: timeout_poll
      ignore_errors: true

    - name: Start a job that crashes
      ansible.builtin.command: sh -c 'sleep 0.5; echo boom >&2; exit 3'
      async: 60
      poll: 0
      register: job
      changed_when: false

    - name: Watch the crashing job
      sgl_poll:
        command: echo '{"done":false,"line":"waiting for the job"}'
        interval: 0.3
        timeout: 60
        async_jid: "{{ job.ansible_job_id }}"
      register: crashed_poll
      ignore_errors: true

    - name: Check the results
      ansible.builtin.assert:
        that:
          - ok_poll is succeeded and ok_poll.polls == 3 and ok_poll.msg == 'ready after 3'
          - ok_poll.report.line == 'step 3 ready'
          - failed_poll is failed and failed_poll.msg == 'weights are incomplete'
          - timeout_poll is failed and timeout_poll.timed_out and 'warming up' in timeout_poll.msg
          - crashed_poll is failed and 'rc=3' in crashed_poll.msg and crashed_poll.elapsed_s < 30
"""


def test_real_playbook_run(tmp_path):
    (tmp_path / "poll.yml").write_text(textwrap.dedent(PLAYBOOK))
    env = dict(os.environ, ANSIBLE_ACTION_PLUGINS=str(REPO / "plugins" / "action"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_ASYNC_DIR=str(tmp_path / "async"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"work={tmp_path}", str(tmp_path / "poll.yml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    for line in ("[localhost] step 1 of 3", "[localhost] step 2 of 3", "[localhost] step 3 ready",
                 "[gate] warming up", "[localhost] waiting for the job"):
        assert line in out
    assert out.count("[gate] warming up") == 1  # unchanged lines are not repeated
    assert "ok=" in out and "failed=0" in out
