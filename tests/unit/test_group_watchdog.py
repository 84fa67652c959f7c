"""The group watchdog (roles/sglang_watchdog/files/sgl_group_watchdog.py): stdlib, no systemd.

Leader (rank 0) and followers run against fake units, a fake clock and each other's /state, so the
decisions (when to restart, in which order, when to back off, give up or skip for a deploy) are
checked without hosts; the HTTP pieces (one-token chat deadline, /state) run on localhost.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("sgl_group_watchdog", REPO / "roles/sglang_watchdog/files/sgl_group_watchdog.py")
wd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wd)

KEY = "s3cret-key-value"


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


class FakeUnit:
    """A systemd unit; records every action in ``events`` (shared across hosts: the order)."""

    def __init__(self, name, clock, events, start_ok=True):
        self.name, self.clock, self.events, self.start_ok = name, clock, events, start_ok
        self.active, self.started_at = "active", clock() - 10_000

    def state(self):
        return {"active": self.active, "sub": "running" if self.active == "active" else "dead",
                "started_at": self.started_at, "restarts": 0}

    def stop(self):
        self.events.append(f"stop {self.name}")
        self.active = "inactive"
        return ""

    def start(self):
        self.events.append(f"start {self.name}")
        self.active = "active" if self.start_ok else "failed"
        self.started_at = self.clock()
        return ""


class MemStore:
    def __init__(self, data=None):
        self.data = data or {}

    def load(self):
        return json.loads(json.dumps(self.data))

    def save(self, data):
        self.data = json.loads(json.dumps(data))


def cfg(tmp_path, **kw):
    base = {**wd.DEFAULTS, "peers": [{"rank": 0, "name": "mn1", "host": "10.0.0.1"},
                                     {"rank": 1, "name": "mn2", "host": "10.0.0.2"}],
            "model": "M", "key_file": str(tmp_path / "sglang.yaml"), "lock_file": str(tmp_path / "group.lock"),
            "state_file": "", "interval_s": 1.0, "failures_before_restart": 2, "start_grace_s": 30.0,
            "stop_timeout_s": 20.0, "max_restarts": 3, "window_s": 600.0, "backoff_s": 10.0,
            "backoff_max_s": 40.0, "dist_init_addr": "10.0.0.1:20000"}
    return {**base, **kw}


class Group:
    """Rank 0's leader and rank 1's follower wired through their /state, sharing one clock."""

    def __init__(self, tmp_path, chat_ok=True, rank1_starts=True, **kw):
        (tmp_path / "sglang.yaml").write_text(f'api-key: "{KEY}"\n')
        self.clock, self.events, self.lines = Clock(), [], []
        self.c0, self.c1 = cfg(tmp_path, **kw), cfg(tmp_path, rank=1, lock_file=str(tmp_path / "group1.lock"), **kw)
        self.u0 = FakeUnit("rank0", self.clock, self.events)
        self.u1 = FakeUnit("rank1", self.clock, self.events, start_ok=rank1_starts)
        self.chat_ok = chat_ok
        self.broken_since = None
        self.heals = True
        self.rank1_up = True
        self.chats = []
        self.leader = wd.Leader(self.c0, self.u0, fetch=self.fetch_peer, chat=self.chat, store=MemStore(),
                                now=self.clock, sleep=self.sleep, logger=self.lines.append)
        self.follower = wd.Follower(self.c1, self.u1, fetch=self.fetch_leader, store=MemStore(),
                                    connected=lambda h, p: False, logger=self.lines.append)

    def chat(self, url, model, key, timeout):
        """Generation hangs once broken (chat_ok False) until rank 0 restarts; needs both units."""
        self.chats.append(key)
        if not self.chat_ok and self.broken_since is None:
            self.broken_since = self.clock()
        healed = self.broken_since is not None and self.u0.started_at > self.broken_since and self.heals
        healthy = (self.chat_ok or healed) and self.u0.active == "active" and self.u1.active == "active"
        return "" if healthy else f"one-token chat did not answer within {timeout:g} s (generation hangs)"

    def fetch_peer(self, url, timeout):
        assert url == "http://10.0.0.2:20090/state"
        if not self.rank1_up:
            return None
        lock = wd.read_lock(self.c1["lock_file"], 3600, self.clock())
        return {**self.follower.public(), "unit": self.u1.state(), "lock": lock}

    def fetch_leader(self, url, timeout):
        assert url == "http://10.0.0.1:20090/state"
        return {**self.leader.public(), "unit": self.u0.state(), "lock": None}

    def sleep(self, s):
        # while the leader waits for the stop, rank 1's watchdog keeps polling
        self.clock.sleep(s)
        if self.rank1_up:
            self.follower.tick()

    def tick(self, n=1):
        for _ in range(n):
            if self.rank1_up:
                self.follower.tick()
            self.leader.tick()
            if self.rank1_up:
                self.follower.tick()
            self.clock.sleep(1)


def test_healthy_group_is_left_alone_and_the_key_is_used_never_logged(tmp_path):
    g = Group(tmp_path)
    g.tick(5)
    assert g.events == []
    assert g.chats and set(g.chats) == {KEY}
    assert not any(KEY in line for line in g.lines)


def test_hung_generation_restarts_the_group_in_order_after_two_failures(tmp_path):
    g = Group(tmp_path, chat_ok=False)
    g.tick(1)
    assert g.events == [] and "check failed (1/2)" in g.lines[-1] and "generation hangs" in g.lines[-1]
    g.tick(4)
    # stop every rank (rank 0 first, it tells the others to exit), then start rank 0 first
    assert g.events == ["stop rank0", "stop rank1", "start rank0", "start rank1"], g.events
    text = "\n".join(g.lines)
    assert "RESTARTING THE GROUP (epoch 1, restart 1/3" in text and "because rank 0 (mn1): one-token chat" in text
    assert "rank 0 restarts the group (epoch 1)" in text and "starting sglang.service here" in text
    assert "group healthy" in g.lines[-1]


def test_a_rank_whose_unit_is_not_active_is_a_failure_without_a_chat(tmp_path):
    g = Group(tmp_path)
    g.u1.active = "activating"
    g.tick(1)
    assert "rank 1 (mn2): unit sglang.service is activating" in g.lines[-1]
    assert g.chats == []


def test_an_unreachable_rank_host_restarts_the_group_and_is_caught_up_when_back(tmp_path):
    g = Group(tmp_path)
    g.rank1_up = False  # the host reboots
    g.u1.stop()
    g.events.clear()
    g.tick(2)
    assert "rank 1 (mn2): its watchdog does not answer" in "\n".join(g.lines)
    # the leader waited stop_timeout_s for rank 1, then started rank 0
    assert g.events == ["stop rank0", "start rank0"]
    assert "starting anyway after 20 s: not confirmed stopped: rank 1 (mn2)" in "\n".join(g.lines)
    # the host comes back: its unit started at boot, before the new rank 0 -> restarted by its watchdog
    g.u1.active, g.u1.started_at = "active", g.leader.state["start_time"] - 5
    g.rank1_up = True
    g.tick(2)
    assert g.events[2:] == ["stop rank1", "start rank1"]
    assert "while this host was away" in "\n".join(g.lines)
    assert "group healthy" in g.lines[-1]


def test_a_rank_that_already_joined_the_new_rank0_is_not_restarted(tmp_path):
    g = Group(tmp_path)
    g.rank1_up = False
    g.tick(2)
    g.events.clear()
    g.u1.active, g.u1.started_at = "active", g.clock() + 1  # started after the new rank 0
    g.clock.sleep(2)
    g.rank1_up = True
    g.tick(2)
    assert g.events == []
    assert "already runs with the new rank 0" in "\n".join(g.lines)


def test_a_permanently_broken_rank_gets_a_bounded_number_of_restarts_with_backoff(tmp_path):
    g = Group(tmp_path, rank1_starts=False, start_grace_s=5.0)
    g.u1.active = "failed"
    g.tick(400)
    starts = [e for e in g.events if e == "start rank0"]
    assert len(starts) == 3, g.events
    text = "\n".join(g.lines)
    assert "backing off: group restart 2/3" in text
    assert text.count("GIVING UP") == 1 and "3 group restarts in the last 600 s" in text
    assert "rank 1 (mn2): unit sglang.service is failed" in text.split("GIVING UP")[1]
    # restart times: backoff 10 s, then 20 s
    restarts = g.leader.state["restarts"]
    assert restarts[1] - restarts[0] >= 10 and restarts[2] - restarts[1] >= 20
    # healed by an operator: the watchdog says so and is armed again
    g.u1.start_ok = True
    g.u1.start()
    g.tick(2)
    assert "group healthy again" in g.lines[-1] and not g.leader.state["gave_up"]


def test_a_rank_that_crashes_while_the_group_starts_gets_no_grace(tmp_path):
    g = Group(tmp_path, start_grace_s=3600.0)
    g.u1.start_ok = False
    g.u0.started_at = g.clock() - 5  # the group is starting...
    g.u1.active = "failed"  # ...and rank 1 already crashed
    g.tick(3)
    assert "start rank0" in g.events and "rank 1 (mn2): unit sglang.service is failed" in "\n".join(g.lines)


def test_backoff_delay():
    assert [wd.backoff_delay(n, 10, 40) for n in (1, 2, 3, 4, 5)] == [0, 10, 20, 40, 40]


def test_no_checks_and_no_restarts_while_a_deploy_holds_the_lock(tmp_path):
    g = Group(tmp_path, chat_ok=False)
    lock = tmp_path / "group1.lock"  # held on rank 1's host
    lock.write_text(json.dumps({"holder": "site.yml (serve role)", "since": g.clock(), "expires_at": g.clock() + 600}))
    g.tick(10)
    assert g.events == [] and g.chats == []
    skips = [ln for ln in g.lines if "deploy in progress, skipping" in ln]
    assert len(skips) == 1 and "site.yml (serve role) on rank 1 (mn2)" in skips[0]
    lock.unlink()
    g.chat_ok = True
    g.u0.stop(), g.u1.stop()  # the deploy left the group stopped
    g.events.clear()
    g.tick(3)
    assert "deploy lock released" in "\n".join(g.lines)
    assert g.events[:2] == ["stop rank0", "stop rank1"] and "start rank0" in g.events


def test_a_stale_lock_is_ignored(tmp_path):
    path = tmp_path / "group.lock"
    path.write_text(json.dumps({"holder": "site.yml", "since": 1000.0, "expires_at": 5000.0}))
    assert wd.read_lock(str(path), 7200, 4000.0)["holder"] == "site.yml"
    assert wd.read_lock(str(path), 7200, 5001.0) is None  # past its own expiry
    assert wd.read_lock(str(path), 100, 1101.0) is None  # past the watchdog's bound
    path.write_text("")  # an empty marker: its mtime counts
    assert wd.read_lock(str(path), 100, time.time()) == {"holder": "a deploy", "since": pytest.approx(path.stat().st_mtime),
                                                         "expires_at": pytest.approx(path.stat().st_mtime + 100)}
    assert wd.read_lock(str(tmp_path / "none"), 100, time.time()) is None


def test_a_freshly_started_group_gets_its_grace(tmp_path):
    g = Group(tmp_path, chat_ok=False)
    g.u0.started_at = g.clock() - 5  # booted 5 s ago, still loading
    g.tick(20)
    assert g.events == [] and not any("check failed" in ln for ln in g.lines)
    g.tick(15)  # grace (30 s) over
    assert "stop rank0" in g.events


def test_the_leader_finishes_an_interrupted_restart(tmp_path):
    g = Group(tmp_path)
    g.leader.state.update(phase="stop", epoch=1)
    g.u0.stop()
    g.events.clear()
    g.tick(1)
    assert "start rank0" in g.events and "interrupted group restart" in "\n".join(g.lines)


def test_follower_adopts_a_new_leader_state_without_acting(tmp_path):
    g = Group(tmp_path)
    g.follower.acked = {"incarnation": "old", "epoch": 7, "phase": "start"}
    g.tick(2)
    assert g.events == [] and g.follower.acked["incarnation"] == g.leader.state["incarnation"]


def test_api_key_file_format_of_the_service_role(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text('api-key: "a\\"b: c"\n')  # to_json quoting
    assert wd.api_key(str(path)) == 'a"b: c'
    path.write_text("api-key: plain\n")
    assert wd.api_key(str(path)) == "plain"
    assert wd.api_key(str(tmp_path / "missing")) is None and wd.api_key("") is None


# --------------------------------------------------------------------------- HTTP, on localhost


@pytest.fixture
def engine():
    """A chat endpoint that answers, hangs or fails on demand, and records the Authorization header."""
    seen = {"mode": "ok", "auth": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen["auth"].append(self.headers.get("Authorization"))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if seen["mode"] == "hang" or (seen["mode"] == "hang-while-broken" and seen.get("broken") and
                                          seen["broken"].exists()):
                time.sleep(3)
            if seen["mode"] == "500":
                self.send_response(500)
                self.end_headers()
                return
            body = json.dumps({"choices": [{"message": {"content": "ok"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_one_token_chat_deadline(engine):
    url, seen = engine
    assert wd.one_token_chat(url, "M", KEY, 2) == ""
    assert seen["auth"] == [f"Bearer {KEY}"]
    seen["mode"] = "hang"
    start = time.monotonic()
    why = wd.one_token_chat(url, "M", KEY, 0.5)
    assert "did not answer within 0.5 s" in why and time.monotonic() - start < 2.5
    seen["mode"] = "500"
    assert wd.one_token_chat(url, "M", KEY, 2) == "one-token chat answered HTTP 500"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert "ConnectionRefusedError" in wd.one_token_chat(f"http://127.0.0.1:{closed}", "M", None, 1)


def test_state_endpoint_publishes_no_secret(tmp_path):
    (tmp_path / "sglang.yaml").write_text(f'api-key: "{KEY}"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = cfg(tmp_path, bind="127.0.0.1", port=port)
    clock, events = Clock(), []
    unit = FakeUnit("rank0", clock, events)
    leader = wd.Leader(c, unit, fetch=lambda u, t: None, chat=lambda *a: "", store=MemStore(), logger=lambda m: None)
    server = wd.serve(c, leader, unit)
    try:
        (tmp_path / "group.lock").write_text(json.dumps({"holder": "site.yml", "since": time.time()}))
        state = wd.http_json(f"http://127.0.0.1:{port}/state", 2)
        assert state["role"] == "leader" and state["epoch"] == 0 and state["unit"]["active"] == "active"
        assert state["lock"]["holder"] == "site.yml"
        assert KEY not in json.dumps(state)
        assert wd.http_json(f"http://127.0.0.1:{port}/other", 2) is None
    finally:
        server.shutdown()


def test_state_file_survives_a_restart_of_the_watchdog(tmp_path):
    store = wd.StateFile(str(tmp_path / "d" / "state.json"))
    g = Group(tmp_path)
    leader = wd.Leader(g.c0, g.u0, fetch=g.fetch_peer, chat=lambda *a: "x", store=store, now=g.clock,
                       sleep=g.sleep, logger=g.lines.append)
    leader.restart_group("test", 1)
    again = wd.Leader(g.c0, g.u0, fetch=g.fetch_peer, chat=lambda *a: "", store=store, now=g.clock,
                      logger=g.lines.append)
    assert again.state["epoch"] == 1 and len(again.state["restarts"]) == 1
    assert again.state["incarnation"] == leader.state["incarnation"]


# --------------------------------------------------------------------------- two real processes


FAKE_SYSTEMCTL = r'''#!/usr/bin/env python3
"""systemctl stand-in: unit state in files under $FAKE_SYSTEMD_DIR, actions appended to events."""
import os, sys, time
d = os.environ["FAKE_SYSTEMD_DIR"]
args = [a for a in sys.argv[1:] if a != "--no-ask-password"]
verb, unit = args[0], args[1]
path = os.path.join(d, unit)
state = open(path).read().split() if os.path.exists(path) else ["inactive", "0"]
if verb == "show":
    print(f"ActiveState={state[0]}\nSubState={'running' if state[0] == 'active' else 'dead'}\n"
          f"ActiveEnterTimestampMonotonic={state[1]}\nNRestarts=0")
elif verb in ("stop", "start"):
    with open(os.path.join(d, "events"), "a") as fh:
        fh.write(f"{verb} {unit}\n")
    if verb == "start" and unit == "rank0.service" and os.path.exists(os.path.join(d, "broken")):
        os.remove(os.path.join(d, "broken"))  # a restart of the whole group heals it
    with open(path, "w") as fh:
        fh.write(("active " if verb == "start" else "inactive ") + str(int(time.monotonic() * 1e6)))
'''


def test_two_watchdog_processes_restart_a_hung_group_in_order(tmp_path, engine):
    """rank 0 and rank 1 as real processes on 127.0.0.1 / 127.0.0.2 (same port), systemctl faked."""
    import os
    import subprocess
    import sys

    url, seen = engine
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL.replace("/usr/bin/env python3", sys.executable))
    (bin_dir / "systemctl").chmod(0o755)
    (tmp_path / "sglang.yaml").write_text(f'api-key: "{KEY}"\n')
    old = str(int(time.monotonic() * 1e6) - 3_600_000_000)  # both units up for an hour
    for unit in ("rank0.service", "rank1.service"):
        (tmp_path / unit).write_text(f"active {old}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    peers = [{"rank": 0, "name": "a", "host": "127.0.0.1"}, {"rank": 1, "name": "b", "host": "127.0.0.2"}]
    procs = []
    for rank in (0, 1):
        c = {"rank": rank, "peers": peers, "bind": peers[rank]["host"], "port": port, "unit": f"rank{rank}.service",
             "engine_url": url, "model": "M", "key_file": str(tmp_path / "sglang.yaml"), "interval_s": 0.5,
             "generation_timeout_s": 1, "failures_before_restart": 2, "start_grace_s": 30, "stop_timeout_s": 10,
             "lock_file": str(tmp_path / f"lock{rank}"), "state_file": str(tmp_path / f"state{rank}" / "s.json")}
        (tmp_path / f"c{rank}.json").write_text(json.dumps(c))
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SYSTEMD_DIR": str(tmp_path)}
        procs.append(subprocess.Popen([sys.executable, str(REPO / "roles/sglang_watchdog/files/sgl_group_watchdog.py"),
                                       "--config", str(tmp_path / f"c{rank}.json")], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    seen["mode"] = "ok"
    events = tmp_path / "events"
    try:
        time.sleep(2)
        assert not events.exists()  # healthy: nothing happens
        (tmp_path / "broken").write_text("")
        seen["broken"] = tmp_path / "broken"
        seen["mode"] = "hang-while-broken"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not events.exists() or len(events.read_text().split("\n")) < 5):
            time.sleep(0.2)
        assert events.read_text().splitlines() == ["stop rank0.service", "stop rank1.service", "start rank0.service",
                                                   "start rank1.service"]
        time.sleep(2)
    finally:
        for p in procs:
            p.terminate()
        outs = [p.communicate(timeout=10)[0] for p in procs]
    assert "RESTARTING THE GROUP (epoch 1" in outs[0] and "generation hangs" in outs[0], outs[0]
    assert "group healthy again" in outs[0], outs[0]
    assert "rank 0 restarts the group (epoch 1)" in outs[1] and "starting rank1.service here" in outs[1], outs[1]
    assert KEY not in outs[0] + outs[1]
