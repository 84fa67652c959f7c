"""sgl-deploy redeploy (runner, fleet lock, summary, exit codes), the router control script and
launcher of roles/sglang_router, and the controller's systemd templates. No lab needed: the
ansible-runner integration runs a tiny localhost playbook."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from sgl_deploy import cli, redeploy

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROUTER_FILES = REPO / "roles" / "sglang_router" / "files"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ctl = load("sgl_router_ctl", ROUTER_FILES / "sgl_router_ctl.py")  # a link to plugins/module_utils/sgl_router.py
launch = load("sgl_router_launch", ROUTER_FILES / "sgl_router_launch.py")


# ---------------------------------------------------------------- lock


def test_lock_path_is_per_inventory_and_stable(tmp_path):
    inv = tmp_path / "inv" / "hosts.yml"
    inv.parent.mkdir()
    inv.write_text("all: {}\n")
    other = tmp_path / "other.yml"
    other.write_text("all: {}\n")
    link = tmp_path / "link.yml"
    link.symlink_to(inv)
    a = redeploy.lock_path(inv, tmp_path / "locks")
    assert a == redeploy.lock_path(link, tmp_path / "locks")  # same fleet, same lock
    assert a != redeploy.lock_path(other, tmp_path / "locks")
    assert a.name.startswith("sgl-deploy-") and a.suffix == ".lock"


def test_lock_no_wait_names_the_holder(tmp_path):
    path = tmp_path / "fleet.lock"
    first = redeploy.FleetLock(path, {"run_id": "run-A", "pid": 4242, "inventory": "inv.yml"})
    first.acquire(wait=False)
    try:
        with pytest.raises(redeploy.LockBusy) as busy:
            redeploy.FleetLock(path, {"run_id": "run-B"}).acquire(wait=False)
        msg = str(busy.value)
        assert "run-A" in msg and "4242" in msg and str(path) in msg
        assert busy.value.holder["run_id"] == "run-A"
    finally:
        first.release()
    second = redeploy.FleetLock(path, {"run_id": "run-B"})
    second.acquire(wait=False)  # free again after release
    assert json.loads(path.read_text())["run_id"] == "run-B"
    second.release()


def test_lock_waits_then_times_out_or_gets_it(tmp_path):
    path = tmp_path / "fleet.lock"
    holder = redeploy.FleetLock(path, {"run_id": "run-A", "pid": 1})
    holder.acquire()
    start = time.monotonic()
    with pytest.raises(redeploy.LockBusy) as busy:
        redeploy.FleetLock(path, {"run_id": "run-B"}).acquire(wait=True, timeout=0.6, poll=0.1)
    assert time.monotonic() - start >= 0.6
    assert busy.value.waited_s >= 0.6 and "after waiting" in str(busy.value) or busy.value.waited_s < 1
    seen = []
    threading.Timer(0.5, holder.release).start()
    waiter = redeploy.FleetLock(path, {"run_id": "run-C"})
    waiter.acquire(wait=True, timeout=10, poll=0.05, on_wait=seen.append)
    assert seen and seen[0]["run_id"] == "run-A"  # told once whom it waits for
    waiter.release()


def test_lock_of_a_killed_holder_is_free(tmp_path):
    path = tmp_path / "fleet.lock"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]);"
        "from sgl_deploy.redeploy import FleetLock;"
        "FleetLock(sys.argv[1], {'run_id': 'doomed'}).acquire(wait=False); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(REPO / "src")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(redeploy.LockBusy):
            redeploy.FleetLock(path, {}).acquire(wait=False)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = redeploy.FleetLock(path, {"run_id": "next"})
    lock.acquire(wait=False)  # the kernel dropped the dead holder's lock
    lock.release()


# ---------------------------------------------------------------- argument parsing


def test_extra_vars_forms(tmp_path):
    f = tmp_path / "vars.yml"
    f.write_text("sglang_plan_sglang_version: '0.5.24'\nnested: {a: 1}\n")
    got = redeploy.parse_extra_vars(["a=1 b='two words'", '{"c": [1, 2]}', f"@{f}"])
    assert got == {"a": "1", "b": "two words", "c": [1, 2], "sglang_plan_sglang_version": "0.5.24", "nested": {"a": 1}}
    with pytest.raises(ValueError):
        redeploy.parse_extra_vars(["novalue"])


@pytest.mark.parametrize("argv", [["--serial", "0"], ["--serial", "x"], ["--max-fail-percentage", "101"], []])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["redeploy", *(["-i", "inv.yml"] if argv else []), *argv])
    assert exc.value.code == 2


def test_serial_accepts_counts_and_percentages():
    assert redeploy.serial_value("2") == 2
    assert redeploy.serial_value("25%") == "25%"


# ---------------------------------------------------------------- run + summary with a fake runner


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "redeploy.yml").write_text("---\n[]\n")
    (root / "site.yml").write_text("---\n[]\n")
    inv = root / "inventory.yml"
    inv.write_text("all:\n  hosts:\n    h1: {}\n    h2: {}\n")
    return root, inv


PB = "/p/playbooks/redeploy.yml"


def ev(event: str, host: str, task: str, path: str = PB, t: float = 0.0, dur: float = 1.0, **more) -> dict:
    """One ansible-runner host event (as in artifacts/<ident>/job_events)."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_800_000_000 + t)) + ".250000+00:00"
    end = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_800_000_000 + t + dur)) + ".250000+00:00"
    return {"event": event, "event_data": {"host": host, "task": task, "task_path": f"{path}:12", "start": start,
                                           "end": end, "duration": dur, **more}}


def host_events(host: str, fail_at: str | None = None, t0: float = 0.0) -> list[dict]:
    """The events of one host through the real playbook's phases (include tasks, then role tasks)."""
    role = "/p/roles/x/tasks/main.yml"
    out, t = [], t0
    for phase in ("Plan", "Record", "Drain", "Install", "Weights", "Switch", "Probe", "Restore", "Prune"):
        out.append(ev("runner_on_ok", host, f"{phase} | include", t=t, dur=0.1))
        failed = phase == fail_at
        out.append(ev("runner_on_ok", host, "Role | work", role, t=t + 1, dur=2))
        out.append(ev("runner_on_skipped", host, "Role | optional", role, t=t + 3, dur=0.1))
        if failed:
            out.append(ev("runner_on_failed", host, "Role | check", role, t=t + 4, dur=1))
            out.append(ev("runner_on_ok", host, "Failed | Remember why this host failed", t=t + 5, dur=0.1))
            for rb in ("Rollback", "Rollback probe", "Rollback restore"):
                out.append(ev("runner_on_ok", host, f"{rb} | include", t=t + 6, dur=0.1))
                out.append(ev("runner_on_ok", host, "Rollback | role work", role, t=t + 7, dur=3))
                t += 10
            break
        t += 10
    out.append(ev("runner_on_ok", host, "Report | Write the report", t=t + 20, dur=0.5))
    return out


class FakeRunner:
    """Stands in for ansible_runner: writes the per-host reports the playbook would write, and its events."""

    def __init__(self, statuses: dict[str, str], rc: int = 0):
        self.statuses, self.rc, self.calls = statuses, rc, []

    def run(self, **kw):
        self.calls.append(kw)
        ev = kw["extravars"]
        out = Path(ev["redeploy_report_dir"]) / ev["redeploy_run_id"]
        out.mkdir(parents=True, exist_ok=True)
        for host, status in self.statuses.items():
            report = {"host": host, "status": status, "steps": [], "probe_reports": {"new": f"/r/{host}.json"},
                      "failure": {} if status == "succeeded" else {"task": "Role | check", "msg": "failed probes: tools"},
                      "old": {"venv": "/opt/sglang/venvs/sglang-0.5.23"}, "new": {"venv": "/opt/sglang/venvs/sglang-0.5.23"}}
            (out / f"{host}.json").write_text(json.dumps(report))
        art = Path(kw["private_data_dir"]) / "artifacts" / kw["ident"]
        art.mkdir(parents=True)
        events = [e for i, h in enumerate(self.statuses) for e in
                  host_events(h, None if self.statuses[h] == "succeeded" else "Probe", t0=200 * i)]
        return SimpleNamespace(status="successful" if self.rc == 0 else "failed", rc=self.rc, events=iter(events),
                               stats={"ok": {h: 10 for h in self.statuses},
                                      "changed": {h: 3 for h in self.statuses},
                                      "failures": {h: 1 for h, s in self.statuses.items() if s != "succeeded"}})


def run_cli(project, monkeypatch, fake, *extra):
    root, inv = project
    monkeypatch.setattr(redeploy, "_runner_module", lambda: fake)
    return cli.main(["redeploy", "-i", str(inv), "--project-dir", str(root), "--lock-dir", str(root / "locks"),
                     "--run-id", "run-1", "-q", *extra])


def test_successful_run_writes_summary_and_exits_0(project, monkeypatch):
    fake = FakeRunner({"h1": "succeeded", "h2": "succeeded"})
    assert run_cli(project, monkeypatch, fake, "-e", "sglang_plan_mem_fraction_static=0.8", "--serial", "2") == 0
    root, inv = project
    call = fake.calls[0]
    assert call["playbook"] == "playbooks/redeploy.yml" and call["project_dir"] == str(root)
    assert call["private_data_dir"] == str(root / "artifacts" / "runs" / "run-1") and call["ident"] == "run-1"
    assert call["inventory"] == str(inv)
    assert call["extravars"]["redeploy_serial"] == 2 and call["extravars"]["sglang_plan_mem_fraction_static"] == "0.8"
    summary = json.loads((root / "artifacts/runs/run-1/summary.json").read_text())
    assert summary["status"] == "successful" and summary["exit_code"] == 0 and summary["rc"] == 0
    assert summary["redeployed"] == ["h1", "h2"] and summary["changed"] == {"h1": 3, "h2": 3}
    assert summary["reports"]["h1"]["report"].endswith("reports/redeploy/run-1/h1.json")
    assert summary["reports"]["h1"]["probe_reports"] == {"new": "/r/h1.json"}
    assert summary["extra_var_names"] == ["sglang_plan_mem_fraction_static"]  # names only, never values
    # the step timeline, from the runner's events, is in each report
    report = json.loads((root / "reports/redeploy/run-1/h2.json").read_text())
    assert [(s["step"], s["host"], s["status"]) for s in report["steps"]] == [
        ("planned", "h2", "ok"), ("recorded", "h2", "ok"), ("drained", "h2", "ok"), ("installed", "h2", "ok"),
        ("weights", "h2", "ok"), ("switched", "h2", "ok"), ("probed", "h2", "ok"), ("restored", "h2", "ok"),
        ("pruned", "h2", "ok")]
    assert report["steps"][0]["duration_s"] == 3.0 and report["steps"][0]["started"] == "2027-01-15T08:03:20Z"
    assert "0.8" not in json.dumps(summary["settings"])
    # the lock is free again and empty
    assert (root / "locks").is_dir() and all(p.read_text() == "" for p in (root / "locks").iterdir())


def test_rolled_back_run_exits_1(project, monkeypatch, capsys):
    fake = FakeRunner({"h1": "rolled_back"}, rc=2)
    assert run_cli(project, monkeypatch, fake) == 1
    root, _ = project
    summary = json.loads((root / "artifacts/runs/run-1/summary.json").read_text())
    assert summary["rolled_back"] == ["h1"] and summary["result"] == "failed"
    assert "h1: rolled_back at step probe: failed probes: tools" in capsys.readouterr().err
    report = json.loads((root / "reports/redeploy/run-1/h1.json").read_text())
    assert report["failure"]["step"] == "probe"  # named from the timeline
    assert [(s["step"], s["status"]) for s in report["steps"]][-5:] == [
        ("switched", "ok"), ("probe", "failed"), ("rolled_back", "ok"), ("probed", "ok"), ("restored", "ok")]
    assert report["steps"][-2]["version"] == "previous" and report["steps"][-4]["detail"] == "Role | check"


def test_timeline_phases_skips_ignored_errors_and_other_playbooks():
    events = [
        ev("runner_on_ok", "h1", "Plan | Read the GPUs", "/p/playbooks/validate.yml"),  # another playbook: no phase
        ev("runner_on_ok", "h1", "Check the controller", t=1),
        ev("runner_on_skipped", "h1", "Drain | Take this host out", t=2),
        ev("runner_on_skipped", "h1", "Worker | ask", "/p/roles/r/tasks/worker.yml", t=2),
        ev("runner_on_ok", "h1", "Install | Build", t=3),
        # a role's argument check carries the playbook's path (and no "Prefix |"): it stays in the phase
        ev("runner_on_ok", "h1", "Validating arguments against arg spec 'main' - Install", t=3),
        ev("runner_on_failed", "h1", "Uv | probe", "/p/roles/i/tasks/uv.yml", t=4, ignore_errors=True),
        ev("runner_on_unreachable", "h2", "Install | Build", t=3),
        {"event": "playbook_on_stats", "event_data": {}},
    ]
    steps = redeploy.timeline(events, "playbooks/redeploy.yml")
    assert [(s["step"], s["status"]) for s in steps["h1"]] == [("drained", "skipped"), ("installed", "ok")]
    assert steps["h1"][1]["duration_s"] == 2.0 and steps["h1"][1]["finished"] == "2027-01-15T08:00:05Z"
    assert steps["h2"] == [{"step": "install", "host": "h2", "status": "failed", "started": "2027-01-15T08:00:03Z",
                            "finished": "2027-01-15T08:00:04Z", "duration_s": 1.0, "detail": "Install | Build"}]
    assert redeploy.timeline([], "playbooks/redeploy.yml") == {}


def test_host_report_old_new_changed_and_probe_reports():
    backup = {"sglang_version": "0.5.23", "venv": "/v/a", "argv_sha1": "x", "model_revision": "r1", "port": 8000,
              "exec_start": "/v/a/bin/python -m sglang", "dir": "/b"}
    kw = dict(run_id="r", host="h1", status="succeeded", started="s", finished="f", probe_dir="/rep/probes")
    rep = redeploy.host_report(backup, **kw, plan={"model_revision": "r1", "model_id": "M"},
                               install={"version": "0.5.23", "venv_path": "/v/b"}, state={"exec_start": "/v/b/bin/python -m sglang"},
                               old_url="http://h1:8000", new_stamp="S1", last_stamp="S1")
    assert rep["changed"] == {"sglang_version": False, "model_revision": False, "venv": True, "argv": True}
    assert rep["new"]["argv_sha1"] == __import__("hashlib").sha1(b"/v/b/bin/python -m sglang").hexdigest()
    assert rep["old"]["url"] == "http://h1:8000" and rep["old"]["venv"] == "/v/a" and rep["steps"] == []
    assert rep["probe_reports"] == {"new": "/rep/probes/new/S1/h1/report.json"}
    # rolled back after the probes: the last probes were of the old version
    rolled = redeploy.host_report(backup, **kw, new_stamp="S1", last_stamp="S2")
    assert rolled["probe_reports"]["old"] == "/rep/probes/old/S2/h1/report.json"
    assert rolled["changed"]["argv"] is False and rolled["new"]["exec_start"] == ""
    # failed before the plan: nothing recorded, nothing changed
    empty = redeploy.host_report(None, **kw)
    assert empty["old"]["url"] == "" and not any(empty["changed"].values()) and empty["probe_reports"] == {}


def test_busy_fleet_exits_75_with_the_holder(project, monkeypatch, capsys):
    root, inv = project
    holder = redeploy.FleetLock(redeploy.lock_path(inv, root / "locks"), {"run_id": "run-A", "pid": 999})
    holder.acquire()
    try:
        fake = FakeRunner({"h1": "succeeded"})
        assert run_cli(project, monkeypatch, fake, "--no-wait") == 75
        assert fake.calls == []  # nothing ran
        err = capsys.readouterr().err
        assert "locked by run run-A (pid 999" in err
        summary = json.loads((root / "artifacts/runs/run-1/summary.json").read_text())
        assert summary["status"] == "lock_busy" and summary["holder"]["run_id"] == "run-A"
    finally:
        holder.release()


def test_reused_run_id_and_missing_inventory_are_usage_errors(project, monkeypatch):
    root, _ = project
    (root / "artifacts/runs/run-1").mkdir(parents=True)
    assert run_cli(project, monkeypatch, FakeRunner({})) == 2
    assert cli.main(["redeploy", "-i", str(root / "nope.yml"), "--project-dir", str(root)]) == 2


# ---------------------------------------------------------------- real ansible-runner, two processes


def test_two_real_runs_one_waits_one_is_refused(tmp_path):
    """Real ansible-runner + a localhost playbook: B (--no-wait) exits 75 naming A; C waits for A."""
    root = tmp_path / "project"
    (root / "playbooks").mkdir(parents=True)
    (root / "site.yml").write_text("---\n[]\n")
    (root / "playbooks" / "redeploy.yml").write_text(
        "---\n- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.pause:\n        seconds: 4\n"
    )
    shutil.copy(REPO / "ansible.cfg", root / "ansible.cfg")
    inv = root / "inv.yml"
    inv.write_text("all:\n  hosts:\n    localhost: {ansible_connection: local, ansible_python_interpreter: "
                   + sys.executable + "}\n")
    base = [str(BIN / "sgl-deploy"), "redeploy", "-i", str(inv), "--project-dir", str(root),
            "--lock-dir", str(tmp_path / "locks"), "-q"]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    a = subprocess.Popen(base + ["--run-id", "A"], stderr=subprocess.PIPE, text=True, env=env)
    lock = redeploy.lock_path(inv, tmp_path / "locks")
    deadline = time.time() + 30
    while time.time() < deadline and not (lock.exists() and "A" in lock.read_text()):
        time.sleep(0.1)
    b = subprocess.run(base + ["--run-id", "B", "--no-wait"], capture_output=True, text=True, env=env, timeout=60)
    c = subprocess.Popen(base + ["--run-id", "C", "--wait-timeout", "120"], stderr=subprocess.PIPE, text=True, env=env)
    a_err = a.communicate(timeout=120)[1]
    c_err = c.communicate(timeout=120)[1]
    assert b.returncode == 75, b.stderr
    assert "locked by run A (pid" in b.stderr
    assert a.returncode == 0, a_err
    assert c.returncode == 0, c_err
    assert "waiting up to 120s for the fleet lock held by run A" in c_err
    runs = root / "artifacts" / "runs"
    sa, sc = (json.loads((runs / r / "summary.json").read_text()) for r in ("A", "C"))
    assert sa["status"] == sc["status"] == "successful"
    assert sc["started"] >= sa["started"] and sc["finished"] >= sa["finished"]  # C ran after A
    assert (runs / "A" / "artifacts" / "A" / "rc").read_text().strip() == "0"  # runner artifacts kept
    assert json.loads((runs / "B" / "summary.json").read_text())["status"] == "lock_busy"


# ---------------------------------------------------------------- router control script (fake router)


class FakeRouter:
    """smg 1.13.0's (and sglang-router 0.3.2's) worker API as observed: GET/POST /workers, DELETE /workers/{uuid},
    key required."""

    def __init__(self, key="k"):
        self.key = key
        self.workers: dict[str, dict] = {}
        self.running = 0.0
        self.next = 0
        router = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, body=None, text=None):
                data = text.encode() if text is not None else json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authed(self):
                return self.headers.get("Authorization") == f"Bearer {router.key}"

            def do_GET(self):
                if self.path == "/liveness":
                    return self.reply(200, text="OK")
                if self.path == "/metrics":  # the worker side
                    return self.reply(200, text=f'sglang:num_running_reqs{{model_name="m"}} {router.running}\n')
                if not self.authed():
                    return self.reply(401)
                if self.path == "/workers":
                    return self.reply(200, {"workers": [
                        {"id": i, "url": w["url"], "is_healthy": True, "load": 0} for i, w in router.workers.items()]})
                return self.reply(404)

            def do_POST(self):
                if not self.authed():
                    return self.reply(401)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/workers":
                    router.next += 1
                    wid = f"00000000-0000-0000-0000-{router.next:012d}"
                    if body["url"] not in [w["url"] for w in router.workers.values()]:
                        # smg gives an API-added worker only the key in the body (not its own --api-key)
                        router.workers[wid] = {"url": body["url"], "api_key": body.get("api_key")}
                    return self.reply(202, {"status": "accepted", "worker_id": wid})
                return self.reply(404)

            def do_DELETE(self):
                if not self.authed():
                    return self.reply(401)
                wid = self.path.rsplit("/", 1)[1]
                if wid not in router.workers:
                    return self.reply(404)
                del router.workers[wid]
                return self.reply(202, {"status": "accepted"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def router(tmp_path):
    r = FakeRouter()
    (tmp_path / "key").write_text("k\n")
    yield r
    r.close()


def ctl_run(router, tmp_path, *argv, capsys):
    rc = ctl.main(["--base", router.url, "--key-file", str(tmp_path / "key"), *argv])
    return rc, json.loads(capsys.readouterr().out)


def test_ctl_reconcile_add_remove(router, tmp_path, capsys):
    w1, w2 = "http://10.0.0.1:8000", "http://10.0.0.2:8000"
    rc, out = ctl_run(router, tmp_path, "reconcile", "--desired", w1, w2, "--timeout", "5", capsys=capsys)
    assert rc == 0 and out["changed"] and out["added"] == [w1, w2]
    rc, out = ctl_run(router, tmp_path, "reconcile", "--desired", w1, w2, capsys=capsys)
    assert rc == 0 and not out["changed"]  # idempotent
    rc, out = ctl_run(router, tmp_path, "remove", "--url", w1 + "/", "--timeout", "5", capsys=capsys)
    assert rc == 0 and out["changed"] and [w["url"] for w in router.workers.values()] == [w2]
    rc, out = ctl_run(router, tmp_path, "remove", "--url", w1, capsys=capsys)
    assert rc == 0 and not out["changed"]
    rc, out = ctl_run(router, tmp_path, "add", "--url", w1, "--timeout", "5", capsys=capsys)
    assert rc == 0 and out["changed"]
    rc, out = ctl_run(router, tmp_path, "ready", "--expect", w1, w2, capsys=capsys)
    assert out["done"] and not out["failed"]
    rc, out = ctl_run(router, tmp_path, "reconcile", "--desired", w2, capsys=capsys)
    assert out["removed"] == [w1]


def test_ctl_without_the_key_fails_clearly(router, tmp_path, capsys):
    rc = ctl.main(["--base", router.url, "list"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["failed"] and "401" in out["msg"]


def test_ctl_wait_idle_reads_the_worker_metrics(router, tmp_path, capsys):
    router.running = 2.0
    threading.Timer(1.0, lambda: setattr(router, "running", 0.0)).start()
    rc, out = ctl_run(router, tmp_path, "wait-idle", "--url", router.url, "--timeout", "10", "--interval", "0.2",
                      capsys=capsys)
    assert rc == 0 and out["idle"] and out["source"] == "metrics" and out["waited_s"] >= 0.9
    router.running = 1.0
    rc, out = ctl_run(router, tmp_path, "wait-idle", "--url", router.url, "--timeout", "0.5", "--interval", "0.1",
                      capsys=capsys)
    assert not out["idle"] and out["running"] == 1.0  # bounded: reports, the playbook decides
    rc, out = ctl_run(router, tmp_path, "wait-idle", "--url", "http://127.0.0.1:9", "--timeout", "5",
                      "--grace", "0.2", capsys=capsys)
    assert out["idle"] and out["source"] == "grace"


def test_launcher_keeps_key_and_workers_out_of_argv():
    ours, rest = launch.split_argv(["--workers-file", "/w.json", "--api-key-file", "/k", "--", "--port", "1"])
    assert ours == {"workers_file": "/w.json", "api_key_file": "/k", "check": False} and rest == ["--port", "1"]
    for bad in (["--", "--api-key", "x"], ["--", "--worker-urls", "u"], ["--nope", "--"]):
        with pytest.raises(SystemExit):
            launch.split_argv(bad)


# ---------------------------------------------------------------- controller systemd templates


def render(name: str, **values) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "templates" / "systemd")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda text: "\n".join("# " + line for line in str(text).splitlines())
    return env.get_template(name).render(**values)


def test_systemd_units_render_and_verify(tmp_path):
    values = {"sgl_redeploy_project": str(REPO), "sgl_redeploy_inventory": "inventory/prod/hosts.yml",
              "sgl_redeploy_args": ["--serial", "1"], "sgl_redeploy_on_calendar": "Tue *-*-* 03:00:00"}
    service = render("sgl-deploy-redeploy.service.j2", **values)
    timer = render("sgl-deploy-redeploy.timer.j2", **values)
    assert "redeploy --no-wait --quiet -i inventory/prod/hosts.yml --serial 1\n" in service
    assert "SuccessExitStatus=75" in service and "Type=oneshot" in service
    assert "OnCalendar=Tue *-*-* 03:00:00" in timer and "Persistent=true" in timer
    if shutil.which("systemd-analyze"):
        (tmp_path / "sgl-deploy-redeploy.service").write_text(service)
        (tmp_path / "sgl-deploy-redeploy.timer").write_text(timer)
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no",
                               str(tmp_path / "sgl-deploy-redeploy.timer"), str(tmp_path / "sgl-deploy-redeploy.service")],
                              capture_output=True, text=True)
        problems = [ln for ln in proc.stderr.splitlines() if "sgl-deploy-redeploy" in ln]
        assert not problems, proc.stderr


def _task_names(tasks) -> list[str]:
    out = []
    for task in tasks or []:
        out.append(task.get("name", ""))
        for key in ("block", "rescue", "always"):
            out.extend(_task_names(task.get(key)))
    return out


def test_the_playbook_names_the_timeline_phases():
    """Every "<Prefix> | " of playbooks/redeploy.yml is a phase of the timeline or one that closes it."""
    import yaml

    text = (REPO / redeploy.DEFAULT_PLAYBOOK).read_text()
    plays = yaml.safe_load(text)
    names = [n for play in plays for n in _task_names(play.get("tasks"))]
    prefixes = {n.split(" | ", 1)[0] for n in names if " | " in n}
    assert prefixes - {"Failed", "Done", "Report"} == set(redeploy.PHASES)
    assert len(text.splitlines()) <= 150  # the state machine lives in sgl_deploy.redeploy, not in set_fact appends
