"""The readiness gate: plugins/module_utils/sgl_ready.py (the check), the module sgl_ready (one check,
check mode) and the action sgl_ready (sgl_poll's loop over the module). No systemd needed: the
host's side effects are a fake."""

from __future__ import annotations

import importlib.util
import json

import pytest

from module_harness import REPO, FakeModule, load_module, load_module_utils

pytest.importorskip("ansible")
ready = load_module_utils("sgl_ready")
module = load_module("sgl_ready", ("sgl_ready",))
_spec = importlib.util.spec_from_file_location("sgl_ready_action", REPO / "plugins" / "action" / "sgl_ready.py")
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)


class Host:
    """The host as check() sees it."""

    def __init__(self, active="active", sub="running", restarts=0, bound=True, health=200, models=("MiniMax-M3",),
                 connected=True, journal=("Load weight begin", "Uvicorn running")):
        self.state = {"ActiveState": active, "SubState": sub, "NRestarts": str(restarts), "ExecMainStatus": "0"}
        self.bound, self.health, self.models, self.connected, self.lines = bound, health, models, connected, list(journal)
        self.calls: list = []

    def unit_state(self, unit):
        return self.state

    def journal(self, unit, n, since):
        self.calls.append(("journal", n, since))
        return self.lines[-n:]

    def connected_to(self, host, port):
        self.calls.append(("connected_to", host, port))
        return self.connected

    def port_bound(self, port):
        return self.bound

    def http(self, url, key, timeout):
        self.calls.append(("http", url, key))
        if url.endswith("/health"):
            return self.health, b""
        return 200, json.dumps({"data": [{"id": m} for m in self.models]}).encode()


ARGS = dict(unit="sglang.service", port=8000, model="MiniMax-M3")


def test_ready_when_health_and_models_answer(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("host: 0.0.0.0\napi-key: 'sk-1'\n")
    host = Host()
    out = ready.check(**ARGS, key_file=str(cfg), probe=host)
    assert out == {"ready": True, "crashed": False, "line": "ready: /health 200, /v1/models lists 'MiniMax-M3'", "msg": ""}
    assert ("http", "http://127.0.0.1:8000/v1/models", "sk-1") in host.calls  # the key from the file, not a parameter
    assert ("http", "http://127.0.0.1:8000/health", None) in host.calls


@pytest.mark.parametrize(("host", "line"), [
    (Host(active="activating", sub="start"), "unit activating/start"),
    (Host(bound=False), "loading (port 8000 not bound yet): Uvicorn running"),
    (Host(health=503), "warming up (/health 503): Uvicorn running"),
    (Host(models=("other",)), "/v1/models answered 200 with ['other'], waiting for 'MiniMax-M3'"),
])
def test_waits_with_a_progress_line(host, line):
    assert ready.check(**ARGS, probe=host) == {"ready": False, "crashed": False, "line": line, "msg": ""}


@pytest.mark.parametrize(("host", "why"), [
    (Host(active="failed", sub="failed"), "exited instead of starting"),
    (Host(active="activating", sub="auto-restart"), "exited instead of starting"),
    (Host(restarts=3), "crashed and was restarted by systemd (2 time(s))"),
])
def test_a_crash_fails_at_once_with_the_journal(host, why):
    host.lines = ["Traceback (most recent call last):", "RuntimeError: CUDA out of memory"]
    out = ready.check(**ARGS, restarts_baseline=1, since="@1700000000", probe=host)
    assert out["crashed"] and not out["ready"] and why in out["msg"]
    assert out["msg"].endswith("RuntimeError: CUDA out of memory") and ("journal", 25, "@1700000000") in host.calls


def test_worker_rank_waits_for_the_rendezvous():
    host = Host(connected=False)
    out = ready.check("sglang.service", worker=True, dist_init_addr="[fd00::1]:20000", probe=host)
    assert not out["ready"] and "not connected to rank 0's rendezvous [fd00::1]:20000" in out["line"]
    assert ("connected_to", "fd00::1", 20000) in host.calls
    host.connected = True
    assert ready.check("sglang.service", worker=True, dist_init_addr="[fd00::1]:20000", probe=host)["ready"]
    assert ready.check("sglang.service", worker=True, probe=Host(bound=False))["ready"]  # no HTTP on ranks >= 1


def test_module_paths_and_check_mode():
    spec = module.ARGUMENT_SPEC
    ok = module.run(FakeModule(spec, ARGS), probe=Host())
    assert ok["ready"] and not ok.get("failed") and ok["changed"] is False
    # check mode: the same read-only check, nothing changed, never a restart
    waiting = module.run(FakeModule(spec, ARGS, check_mode=True), probe=Host(bound=False))
    assert waiting["ready"] is False and not waiting.get("failed") and waiting["changed"] is False
    crashed = module.run(FakeModule(spec, ARGS), probe=Host(active="failed", sub="failed"))
    assert crashed["failed"] and crashed["crashed"] and "exited instead of starting" in crashed["msg"]
    bad = module.run(FakeModule(spec, {"unit": "sglang.service"}), probe=Host())
    assert bad["failed"] and "port and model are required" in bad["msg"]


def test_action_maps_module_results_for_the_poll_loop():
    assert action.poll_answer({"ready": True, "crashed": False, "line": "ready"}) == (
        0, json.dumps({"done": True, "failed": False, "line": "ready", "msg": ""}), "")
    rc, out, _ = action.poll_answer({"ready": False, "crashed": True, "failed": True, "line": "x", "msg": "boom"})
    assert rc == 0 and json.loads(out)["failed"] is True
    assert action.poll_answer({"failed": True, "msg": "ssh: unreachable"}) == (1, "", "ssh: unreachable")
    assert action.poll_answer({"ready": False, "failed": True, "crashed": False, "msg": "port and model"})[0] == 1


def test_action_polls_until_ready_and_fails_at_once_on_a_crash():
    poll = action._sgl_poll()
    answers = iter([{"ready": False, "crashed": False, "line": "loading"}, {"ready": False, "crashed": False, "line": "loading"},
                    {"ready": True, "crashed": False, "line": "ready"}])
    lines: list[str] = []
    res = poll.Poller(lambda: action.poll_answer(next(answers)), lines.append, interval=0, label="h1",
                      sleep=lambda s: None).run()
    assert res["polls"] == 3 and lines == ["[h1] loading", "[h1] ready"]
    crash = iter([{"ready": False, "crashed": False, "line": "loading"},
                  {"ready": False, "crashed": True, "failed": True, "line": "down", "msg": "exited instead of starting"}])
    with pytest.raises(poll.PollError) as err:
        poll.Poller(lambda: action.poll_answer(next(crash)), lines.append, interval=0, sleep=lambda s: None).run()
    assert err.value.result["failed"] and err.value.result["polls"] == 2 and "exited" in err.value.result["msg"]


def test_action_check_mode_reports_and_never_fails():
    out = action.check_mode_result({"ready": False, "crashed": True, "failed": True, "line": "sglang.service: failed/failed"})
    assert out["changed"] is False and "failed" not in out and out["crashed"] is True
    assert out["msg"].startswith("check mode: not waited for; the unit is down or crashed")
    assert action.check_mode_result({"ready": True, "line": "ready"})["ready"] is True
