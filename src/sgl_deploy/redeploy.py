"""`sgl-deploy redeploy`: a rolling redeploy of a fleet, safe to run from a scheduler.

Runs ``playbooks/redeploy.yml`` through ansible-runner with:

* a **fleet lock**: ``fcntl.flock`` on a lock file named after the inventory's real path
  (``/var/lock/sgl-deploy-<hash>.lock``, else ``<artifacts>/locks/``). A second run against the
  same inventory waits (``--wait-timeout``) or, with ``--no-wait``, exits 75 (EX_TEMPFAIL) naming
  the run id and PID that hold it. The kernel drops the lock when its holder dies, so a crashed
  run never blocks the next one;
* a **run id** and a private data dir per run: ``<artifacts>/runs/<run id>/`` (ansible-runner's
  ``env/``, ``artifacts/<run id>/`` with stdout, events and rc; kept);
* a **summary**: ``<artifacts>/runs/<run id>/summary.json`` (status, rc, per-host stats and
  changed counts, each host's redeploy report ``reports/redeploy/<run id>/<host>.json`` and its
  probe reports);
* **exit codes** for schedulers: 0 redeployed, 1 failed or rolled back, 2 usage, 75 lock busy.

Heavy imports (ansible_runner) stay inside functions: ``sgl-deploy --help`` stays fast.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from sgl_deploy.errors import SglDeployError

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75  # sysexits.h: try again later (the fleet is locked by another run)

DEFAULT_PLAYBOOK = "playbooks/redeploy.yml"
DEFAULT_WAIT_TIMEOUT_S = 3600.0
SYSTEM_LOCK_DIR = Path("/var/lock")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ---------------------------------------------------------------- project and ids


def project_root(explicit: str | None = None) -> Path:
    """The toolkit checkout: --project-dir, $SGL_DEPLOY_PROJECT, or the tree this module is in."""
    for cand in (explicit, os.environ.get("SGL_DEPLOY_PROJECT")):
        if cand:
            return Path(cand).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "site.yml").exists() and (parent / DEFAULT_PLAYBOOK).exists():
            return parent
    return Path.cwd().resolve()


def new_run_id(now: float | None = None) -> str:
    """UTC timestamp plus a short random suffix: sortable, unique across concurrent starts."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


def lock_path(inventory: Path, lock_dir: Path | None = None, artifacts: Path | None = None) -> Path:
    """One lock file per fleet, named after the inventory's real path."""
    key = hashlib.sha256(str(Path(inventory).resolve()).encode()).hexdigest()[:16]
    name = f"sgl-deploy-{key}.lock"
    if lock_dir is not None:
        return Path(lock_dir) / name
    if SYSTEM_LOCK_DIR.is_dir() and os.access(SYSTEM_LOCK_DIR, os.W_OK):
        return SYSTEM_LOCK_DIR / name
    return Path(artifacts or "artifacts") / "locks" / name


# ---------------------------------------------------------------- the fleet lock


class LockBusy(SglDeployError):
    """The fleet lock is held by another run; ``holder`` is what that run wrote in the lock file."""

    def __init__(self, path: Path, holder: dict, waited_s: float):
        self.path = path
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(self.message())

    def message(self) -> str:
        h = self.holder
        who = (f"run {h.get('run_id', '?')} (pid {h.get('pid', '?')}, host {h.get('hostname', '?')}, "
               f"started {h.get('started', '?')})") if h else "another run (holder unknown)"
        waited = f" after waiting {self.waited_s:.0f}s" if self.waited_s >= 1 else ""
        return (f"the fleet of {h.get('inventory', 'this inventory') if h else 'this inventory'} is locked by {who}"
                f"{waited}; lock file {self.path}")


class FleetLock:
    """``fcntl.flock`` on ``path``; the holder writes who it is (JSON) into the file."""

    def __init__(self, path: Path, info: dict):
        self.path = Path(path)
        self.info = info
        self._fd: int | None = None

    def holder(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def _try(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def acquire(self, wait: bool = True, timeout: float = DEFAULT_WAIT_TIMEOUT_S, poll: float = 1.0,
                on_wait: Callable[[dict], None] | None = None) -> None:
        """Take the lock; raises LockBusy without ``wait`` or when ``timeout`` passes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        told = False
        while not self._try():
            waited = time.monotonic() - start
            if not wait or waited >= timeout:
                holder = self.holder()
                os.close(self._fd)
                self._fd = None
                raise LockBusy(self.path, holder, waited)
            if on_wait and not told:
                on_wait(self.holder())
                told = True
            time.sleep(min(poll, max(0.05, timeout - waited)))
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(self.info) + "\n").encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # no stale holder text for the next reader
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- extra vars


def parse_extra_vars(items: list[str] | None) -> dict:
    """``-e`` values as ansible-playbook takes them: JSON/YAML objects, ``@file``, or ``k=v k2=v2``."""
    out: dict = {}
    for item in items or []:
        text = item.strip()
        if text.startswith("@"):
            import yaml

            data = yaml.safe_load(Path(text[1:]).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"{text[1:]}: extra vars file must hold a mapping")
            out.update(data)
        elif text.startswith("{"):
            import yaml

            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise ValueError(f"-e {text!r}: not a mapping")
            out.update(data)
        else:
            import shlex

            for pair in shlex.split(text):
                if "=" not in pair:
                    raise ValueError(f"-e {pair!r}: want key=value, a JSON object or @file")
                key, value = pair.split("=", 1)
                out[key] = value
    return out


def serial_value(text: str) -> int | str:
    """``--serial``: a positive count or a percentage (``25%``), as Ansible's ``serial`` takes it."""
    text = str(text).strip()
    if re.fullmatch(r"[1-9][0-9]*", text):
        return int(text)
    if re.fullmatch(r"([1-9][0-9]?|100)%", text):
        return text
    raise argparse.ArgumentTypeError(f"invalid serial {text!r}: a positive count or a percentage like 25%")


def percent_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"invalid percentage {text!r}: 0..100")
    return value


# ---------------------------------------------------------------- the per-host report (playbook side)

#: old/new fields of a report, and the ones whose change is reported
VERSION_FIELDS = ("sglang_version", "model_id", "model_revision", "model_path", "venv", "argv_sha1", "exec_start")


def probe_report_path(probe_dir: str, which: str, stamp: str, host: str) -> str:
    return f"{probe_dir}/{which}/{stamp}/{host}/report.json"


def host_report(backup: dict | None, *, run_id: str, host: str, status: str, started: str, finished: str,
                failure: dict | None = None, plan: dict | None = None, install: dict | None = None,
                state: dict | None = None, old_url: str = "", probe_dir: str = "", new_stamp: str = "",
                last_stamp: str = "") -> dict:
    """The redeploy report of one host, as playbooks/redeploy.yml writes it (filter sgl_redeploy_report).

    ``backup`` is the serve role's record of what ran before (sglang_service_backup), ``plan``,
    ``install`` and ``state`` the new plan, install result and deploy state (sglang_service_state, set
    once the new unit was rendered). ``new_stamp`` is the probes' stamp of the new version ('' when it
    was not probed), ``last_stamp`` the probes' last stamp: when it differs, the previous version was
    probed after a rollback. ``steps`` stays empty: ``sgl-deploy redeploy`` fills it from the events."""
    old, plan, install, state = dict(backup or {}), dict(plan or {}), dict(install or {}), dict(state or {})
    exec_start = str(state.get("exec_start") or "")
    new = {
        "sglang_version": install.get("version") or plan.get("sglang_version") or "",
        "model_id": plan.get("model_id") or "",
        "model_revision": plan.get("model_revision") or "",
        "model_path": plan.get("model_path") or "",
        "venv": install.get("venv_path") or "",
        "argv_sha1": hashlib.sha1(exec_start.encode()).hexdigest() if exec_start else "",
        "exec_start": exec_start,
    }
    before = {k: str(old.get(k) or "") for k in VERSION_FIELDS}
    changed = {k: before[k] != (new[k] or before[k]) for k in ("sglang_version", "model_revision", "venv")}
    changed["argv"] = bool(new["argv_sha1"]) and new["argv_sha1"] != before["argv_sha1"]
    probes = {}
    if new_stamp:
        probes["new"] = probe_report_path(probe_dir, "new", new_stamp, host)
    if last_stamp and last_stamp != new_stamp:
        probes["old"] = probe_report_path(probe_dir, "old", last_stamp, host)
    return {
        "run_id": run_id, "host": host, "status": status, "started": started, "finished": finished,
        "steps": [], "failure": dict(failure or {}),
        "old": {**before, "url": old_url if backup else ""}, "new": new,
        "changed": changed, "probe_reports": probes,
    }


# ---------------------------------------------------------------- the step timeline (runner side)

#: playbook task-name prefix -> (step when done, step when failed, extra fields)
PHASES: dict[str, tuple[str, str, dict]] = {
    "Plan": ("planned", "plan", {}),
    "Record": ("recorded", "record", {}),
    "Drain": ("drained", "drain", {}),
    "Install": ("installed", "install", {}),
    "Weights": ("weights", "weights", {}),
    "Switch": ("switched", "switch", {}),
    "Probe": ("probed", "probe", {}),
    "Restore": ("restored", "restore", {}),
    "Prune": ("pruned", "prune", {}),
    "Rollback": ("rolled_back", "rollback", {}),
    "Rollback probe": ("probed", "rollback", {"version": "previous"}),
    "Rollback restore": ("restored", "rollback", {}),
}
_HOST_EVENTS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped",
                "runner_on_unreachable": "failed"}


def _stamp(text: str | None) -> str:
    """ansible-runner's ISO time (``2026-11-29T16:28:56.901705+00:00``) -> ``2026-11-29T16:28:56Z``."""
    return (text or "")[:19] + "Z" if text else ""


def _seconds(text: str | None) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return None


def timeline(events, playbook: str = DEFAULT_PLAYBOOK) -> dict[str, list[dict]]:
    """Per host, the redeploy steps (step, host, status, started, finished, duration_s) from
    ansible-runner's events. A task of the playbook named ``<Phase> | ...`` (PHASES) opens that phase
    for its host; every task result of the host after it (the roles it includes, too) belongs to
    it, up to the next playbook task with a ``<Prefix> | `` name (``Failed``, ``Done``, ``Report``
    close it). A phase is ``failed`` when one of its results failed (not
    ignored), ``skipped`` when all were skipped, else ``ok``."""
    name = Path(playbook).name
    current: dict[str, str | None] = {}
    segments: dict[str, list[dict]] = {}
    for event in events or []:
        status = _HOST_EVENTS.get(event.get("event", ""))
        data = event.get("event_data") or {}
        host = data.get("host")
        if not status or not host:
            continue
        path = str(data.get("task_path") or "").rsplit(":", 1)[0]
        task = str(data.get("task") or "")
        # a task of the playbook named "<Prefix> | ..." opens a phase (or, with another prefix, closes
        # it); the playbook's other events (the roles' argument checks carry its path) change nothing
        if Path(path).name == name and " | " in task:
            prefix = task.split(" | ", 1)[0].strip()
            current[host] = prefix if prefix in PHASES else None
        phase = current.get(host)
        if phase is None:
            continue
        if status == "failed" and data.get("ignore_errors"):
            status = "ok"
        segs = segments.setdefault(host, [])
        if not segs or segs[-1]["phase"] != phase:
            segs.append({"phase": phase, "results": [], "start": None, "end": None, "failed_task": ""})
        seg = segs[-1]
        seg["results"].append(status)
        start = _seconds(data.get("start"))
        end = _seconds(data.get("end")) or (start + float(data.get("duration") or 0) if start is not None else None)
        if start is not None and (seg["start"] is None or start < seg["start"][0]):
            seg["start"] = (start, data.get("start"))
        if end is not None and (seg["end"] is None or end > seg["end"][0]):
            seg["end"] = (end, data.get("end") or data.get("start"))
        if status == "failed" and not seg["failed_task"]:
            seg["failed_task"] = str(data.get("task") or "")
    out: dict[str, list[dict]] = {}
    for host, segs in segments.items():
        for seg in segs:
            done, failed, extra = PHASES[seg["phase"]]
            status = ("failed" if "failed" in seg["results"]
                      else "skipped" if all(r == "skipped" for r in seg["results"]) else "ok")
            step = {"step": failed if status == "failed" else done, "host": host, "status": status,
                    "started": _stamp(seg["start"][1]) if seg["start"] else "",
                    "finished": _stamp(seg["end"][1]) if seg["end"] else "",
                    "duration_s": round(seg["end"][0] - seg["start"][0], 1) if seg["start"] and seg["end"] else None,
                    **extra}
            if seg["failed_task"]:
                step["detail"] = seg["failed_task"]
            out.setdefault(host, []).append(step)
    return out


def add_timelines(report_dir: Path, events, playbook: str = DEFAULT_PLAYBOOK) -> dict[str, list[dict]]:
    """Write each host's timeline into its report (``steps``) and name the failed step
    (``failure.step``: the first failed phase) when the playbook could not."""
    steps = timeline(events, playbook)
    for host, host_steps in steps.items():
        path = Path(report_dir) / f"{host}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        data["steps"] = host_steps
        failure = data.get("failure") or {}
        if failure and not failure.get("step"):
            failure["step"] = next((s["step"] for s in host_steps if s["status"] == "failed"), "")
            data["failure"] = failure
        write_json(path, data)
    return steps


# ---------------------------------------------------------------- the run and its summary


def collect_reports(report_dir: Path) -> dict[str, dict]:
    """Per host: the redeploy report (path, status, failure, probe reports)."""
    out: dict[str, dict] = {}
    if not report_dir.is_dir():
        return out
    for path in sorted(report_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out[path.stem] = {"report": str(path), "status": "unreadable"}
            continue
        out[data.get("host", path.stem)] = {
            "report": str(path),
            "status": data.get("status"),
            "failure": data.get("failure") or {},
            "probe_reports": data.get("probe_reports") or {},
            "changed": data.get("changed") or {},
            "old": {k: (data.get("old") or {}).get(k) for k in ("sglang_version", "model_revision", "venv", "argv_sha1")},
            "new": {k: (data.get("new") or {}).get(k) for k in ("sglang_version", "model_revision", "venv", "argv_sha1")},
        }
    return out


def host_stats(stats: dict | None) -> dict[str, dict]:
    """ansible-runner's stats ({"ok": {host: n}, ...}) turned per host."""
    out: dict[str, dict] = {}
    for key, per_host in (stats or {}).items():
        if not isinstance(per_host, dict):
            continue
        for host, count in per_host.items():
            out.setdefault(host, {})[key] = count
    return out


def exit_code(status: str, rc: int | None, reports: dict[str, dict]) -> int:
    if status == "successful" and rc == 0 and all(r.get("status") == "succeeded" for r in reports.values()):
        return EX_OK
    return EX_FAILED


def build_summary(*, run_id: str, status: str, rc: int | None, stats: dict | None, reports: dict[str, dict],
                  started: float, finished: float, inventory: Path, playbook: str, limit: str | None,
                  extravars: dict, user_var_names: list[str], private_data_dir: Path, lock: Path,
                  report_dir: Path) -> dict:
    per_host = host_stats(stats)
    code = exit_code(status, rc, reports)
    return {
        "run_id": run_id,
        "status": status,
        "rc": rc,
        "exit_code": code,
        "result": "ok" if code == EX_OK else "failed",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "duration_s": round(finished - started, 1),
        "inventory": str(inventory),
        "playbook": playbook,
        "limit": limit,
        "settings": {k: v for k, v in extravars.items() if k.startswith("redeploy_")},
        "extra_var_names": sorted(user_var_names),  # values may be secrets: names only
        "hosts": per_host,
        "changed": {h: s.get("changed", 0) for h, s in per_host.items()},
        "redeployed": sorted(h for h, r in reports.items() if r.get("status") == "succeeded"),
        "rolled_back": sorted(h for h, r in reports.items() if r.get("status") == "rolled_back"),
        "failed": sorted(h for h, r in reports.items() if r.get("status") not in ("succeeded", "rolled_back")),
        "reports": reports,
        "report_dir": str(report_dir),
        "artifacts": str(private_data_dir / "artifacts" / run_id),
        "lock": str(lock),
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _runner_module():
    import ansible_runner  # heavy; only when a run really starts

    return ansible_runner


def run(args: argparse.Namespace) -> int:
    root = project_root(args.project_dir)
    inventory = Path(args.inventory).resolve()
    if not inventory.exists():
        print(f"sgl-deploy redeploy: inventory {args.inventory} not found", file=sys.stderr)
        return EX_USAGE
    playbook = args.playbook
    if not (root / playbook).exists():
        print(f"sgl-deploy redeploy: playbook {root / playbook} not found (--project-dir?)", file=sys.stderr)
        return EX_USAGE
    if args.run_id and not RUN_ID_RE.match(args.run_id):
        print(f"sgl-deploy redeploy: invalid --run-id {args.run_id!r} (letters, digits, . _ -)", file=sys.stderr)
        return EX_USAGE
    try:
        user_vars = parse_extra_vars(args.extra_vars)
    except (OSError, ValueError) as exc:
        print(f"sgl-deploy redeploy: {exc}", file=sys.stderr)
        return EX_USAGE

    try:
        runner_module = _runner_module()
    except ImportError:
        print("sgl-deploy redeploy: ansible-runner is not installed (pip install 'sgl-deploy[runner]' / make setup)",
              file=sys.stderr)
        return EX_USAGE

    artifacts = Path(args.artifacts_dir).resolve() if args.artifacts_dir else root / "artifacts"
    report_root = Path(args.reports_dir).resolve() if args.reports_dir else root / "reports" / "redeploy"
    run_id = args.run_id or new_run_id()
    pdd = artifacts / "runs" / run_id
    if pdd.exists():
        print(f"sgl-deploy redeploy: run id {run_id} was used before ({pdd})", file=sys.stderr)
        return EX_USAGE
    lock_file = lock_path(inventory, Path(args.lock_dir) if args.lock_dir else None, artifacts)
    started = time.time()
    info = {"run_id": run_id, "pid": os.getpid(), "hostname": os.uname().nodename, "inventory": str(inventory),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "artifacts": str(pdd)}
    lock = FleetLock(lock_file, info)

    def waiting(holder: dict) -> None:
        print(f"sgl-deploy redeploy: waiting up to {args.wait_timeout:.0f}s for the fleet lock held by run "
              f"{holder.get('run_id', '?')} (pid {holder.get('pid', '?')}); {lock_file}", file=sys.stderr, flush=True)

    try:
        lock.acquire(wait=not args.no_wait, timeout=args.wait_timeout, on_wait=waiting)
    except LockBusy as busy:
        print(f"sgl-deploy redeploy: {busy.message()}. Not started (exit {EX_TEMPFAIL}); "
              f"{'retry later' if args.no_wait else 'raise --wait-timeout'}.", file=sys.stderr)
        pdd.mkdir(parents=True, exist_ok=True)
        write_json(pdd / "summary.json", {
            "run_id": run_id, "status": "lock_busy", "rc": None, "exit_code": EX_TEMPFAIL, "result": "not_started",
            "inventory": str(inventory), "lock": str(lock_file), "holder": busy.holder,
            "waited_s": round(busy.waited_s, 1),
            "started": info["started"], "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        return EX_TEMPFAIL

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    events: list = []
    try:
        pdd.mkdir(parents=True, exist_ok=True, mode=0o700)
        extravars = {**user_vars, "redeploy_run_id": run_id, "redeploy_serial": args.serial,
                     "redeploy_max_fail_percentage": args.max_fail_percentage,
                     "redeploy_report_dir": str(report_root)}
        env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        print(f"sgl-deploy redeploy: run {run_id} on {inventory} (serial {args.serial}, "
              f"max_fail_percentage {args.max_fail_percentage}); artifacts {pdd}", file=sys.stderr, flush=True)
        runner = runner_module.run(
            private_data_dir=str(pdd),
            project_dir=str(root),
            playbook=playbook,
            inventory=str(inventory),
            extravars=extravars,
            limit=args.limit,
            ident=run_id,
            verbosity=args.verbose or None,
            quiet=args.quiet,
            envvars={"ANSIBLE_CONFIG": str(root / "ansible.cfg"), "PATH": env_path, "ANSIBLE_NOCOLOR": "1",
                     "ANSIBLE_FORCE_COLOR": "0"},
            cancel_callback=lambda: stop["signal"] is not None,
        )
        status, rc, stats = runner.status, runner.rc, runner.stats
        events = list(runner.events)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        finished = time.time()
        lock.release()

    add_timelines(report_root / run_id, events, playbook)
    reports = collect_reports(report_root / run_id)
    summary = build_summary(run_id=run_id, status=status, rc=rc, stats=stats, reports=reports, started=started,
                            finished=finished, inventory=inventory, playbook=playbook, limit=args.limit,
                            extravars=extravars, user_var_names=list(user_vars), private_data_dir=pdd,
                            lock=lock_file, report_dir=report_root / run_id)
    write_json(pdd / "summary.json", summary)
    line = (f"sgl-deploy redeploy: run {run_id} {summary['result']} (status {status}, rc {rc}); "
            f"redeployed {summary['redeployed'] or '-'}, rolled back {summary['rolled_back'] or '-'}, "
            f"failed {summary['failed'] or '-'}; summary {pdd / 'summary.json'}")
    print(line, file=sys.stderr)
    for host, rep in reports.items():
        if rep.get("failure"):
            f = rep["failure"]
            why = " | ".join(ln.strip() for ln in str(f.get("msg", "")).splitlines() if ln.strip())
            print(f"  {host}: {rep.get('status')} at step {f.get('step')}: {why[:300]}", file=sys.stderr)
    return summary["exit_code"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--inventory", required=True, help="inventory of the fleet (its path names the fleet lock)")
    p.add_argument("-l", "--limit", help="only these hosts (Ansible pattern)")
    p.add_argument("--serial", type=serial_value, default=1, help="hosts redeployed at a time: N or N%% (default 1)")
    p.add_argument("--max-fail-percentage", type=percent_value, default=0,
                   help="stop the rollout when more than this %% of a batch failed (default 0)")
    p.add_argument("-e", "--extra-vars", action="append", default=[],
                   help="extra vars as for ansible-playbook (key=value, JSON, @file); repeatable")
    p.add_argument("--run-id", help="run id (default: UTC timestamp + random suffix)")
    p.add_argument("--no-wait", action="store_true",
                   help=f"exit {EX_TEMPFAIL} at once when another run holds the fleet lock")
    p.add_argument("--wait-timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S,
                   help="seconds to wait for the fleet lock (default %(default)s), then exit 75")
    p.add_argument("--lock-dir", help="directory of the lock file (default /var/lock, else <artifacts>/locks)")
    p.add_argument("--artifacts-dir", help="root of the run folders (default <project>/artifacts)")
    p.add_argument("--reports-dir", help="root of the redeploy reports (default <project>/reports/redeploy)")
    p.add_argument("--playbook", default=DEFAULT_PLAYBOOK, help="playbook, relative to the project (default %(default)s)")
    p.add_argument("--project-dir", help="the toolkit checkout (default: the one this package is in)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not stream the playbook output")
    p.add_argument("-v", "--verbose", action="count", default=0, help="ansible verbosity (-v, -vv, ...)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "redeploy",
        help="rolling redeploy with automatic rollback (ansible-runner, fleet lock, summary)",
        description=(f"Rolling redeploy of the inventory's fleet ({DEFAULT_PLAYBOOK}) under a fleet lock. Exit: 0 ok, "
                     f"1 failed or rolled back, 2 usage, {EX_TEMPFAIL} lock busy."),
    )
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sgl-deploy redeploy")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__: list[Any] = ["FleetLock", "LockBusy", "lock_path", "new_run_id", "parse_extra_vars", "build_summary",
                      "collect_reports", "register", "run", "EX_OK", "EX_FAILED", "EX_USAGE", "EX_TEMPFAIL"]
