#!/usr/bin/env python3
"""Group watchdog for a multi-node SGLang replica group (shipped by the sglang_watchdog role).

Stdlib only, run by the host's python3 (not the SGLang venv: deploys switch and prune venvs while
the watchdog runs). One long-running process per rank host, ``sgl-group-watchdog.service``:

* rank 0 (the leader) checks the group every ``interval_s``: its own unit is active, every other
  rank's watchdog answers and reports that rank's unit active, and a real one-token chat completion
  (with the API key from the service role's 0600 config file) finishes within
  ``generation_timeout_s``. ``failures_before_restart`` failed checks in a row restart the group:
  it publishes a new *epoch* in phase ``stop``, stops its own unit (rank 0 first: SGLang's rank 0
  tells the other ranks to exit), waits until every rank's watchdog reports its unit stopped (at
  most ``stop_timeout_s``), starts its own unit, publishes phase ``start`` and gives the group
  ``start_grace_s`` to serve again. At most ``max_restarts`` group restarts per ``window_s``, the
  n-th waiting ``backoff_s * 2**(n-1)`` (capped at ``backoff_max_s``) after the previous one;
  then it gives up with one clear journal line and restarts nothing until the group is healthy
  again (an operator fixed it) or a deploy resets its state.
* ranks >= 1 (followers) never decide: they poll rank 0's watchdog and act for their own host
  only, once per epoch: stop their unit in phase ``stop``, start it in phase ``start``.
* every watchdog serves ``GET /state`` (JSON, no secrets) on ``port``: its rank, its unit's state,
  the deploy lock, and the epoch it published (rank 0) or acted on (others).
* a deploy (site.yml's serve role) holds the lock file ``lock_file`` on every rank while it
  restarts the group: while any rank reports the lock, rank 0 logs "deploy in progress, skipping"
  and neither checks nor restarts. A lock older than its ``expires_at`` (or ``lock_max_age_s``)
  is stale and ignored, so a deploy that died does not switch the watchdog off for good.

Every decision is one journal line (stdout) with its reason. The API key is read from the file on
each check and never logged.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# shipped next to this script: the readiness gate's code (plugins/module_utils/sgl_ready.py), the one
# copy of api_key (the service's key file) and connected_to (an ESTABLISHED TCP connection to host:port)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sgl_ready import api_key, connected_to  # noqa: E402

NAME = "sgl-group-watchdog"


def log(message: str) -> None:
    print(f"{NAME}: {message}", flush=True)


# --------------------------------------------------------------------------- host side


def read_lock(path: str, max_age_s: float, now: float) -> dict | None:
    """The deploy lock if it is held and not stale: ``{"holder", "since", "expires_at"}``, else None."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return None
    try:
        data = json.loads(text) if text.strip() else {}
        if not isinstance(data, dict):
            data = {}
    except ValueError:
        data = {}
    since = float(data.get("since") or st.st_mtime)
    expires = min(float(data.get("expires_at") or since + max_age_s), since + max_age_s)
    if now > expires:
        return None
    return {"holder": str(data.get("holder") or "a deploy"), "since": since, "expires_at": expires}


class Systemd:
    """The unit of this host, through systemctl (the watchdog runs as root)."""

    def __init__(self, unit: str):
        self.unit = unit

    def state(self) -> dict:
        out = subprocess.run(
            ["systemctl", "show", self.unit, "-p", "ActiveState,SubState,ActiveEnterTimestampMonotonic,NRestarts"],
            capture_output=True, text=True, check=False,
        ).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        mono = int(props.get("ActiveEnterTimestampMonotonic") or 0)
        # systemd's monotonic clock is CLOCK_MONOTONIC, as time.monotonic() on Linux
        started = time.time() - (time.monotonic() - mono / 1e6) if mono else 0.0
        return {"active": props.get("ActiveState", "unknown"), "sub": props.get("SubState", "unknown"),
                "started_at": round(started, 3), "restarts": int(props.get("NRestarts") or 0)}

    def _ctl(self, *args: str) -> str:
        proc = subprocess.run(["systemctl", "--no-ask-password", *args, self.unit], capture_output=True, text=True,
                              check=False)
        return "" if proc.returncode == 0 else (proc.stderr.strip() or f"systemctl {' '.join(args)}: rc {proc.returncode}")

    def stop(self) -> str:
        return self._ctl("stop")

    def start(self) -> str:
        # a unit that hit its StartLimitBurst refuses to start until reset
        self._ctl("reset-failed")
        return self._ctl("start")


def http_json(url: str, timeout: float) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
            return data if isinstance(data, dict) else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


def one_token_chat(url: str, model: str, key: str | None, timeout: float) -> str:
    """A real one-token generation; '' when it answered in time, else why not (never the key)."""
    body = json.dumps({"model": model, "max_tokens": 1, "temperature": 0,
                       "messages": [{"role": "user", "content": "Reply with the word ok."}]}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/v1/chat/completions", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return f"one-token chat answered HTTP {exc.code}"
    except (socket.timeout, TimeoutError):
        return f"one-token chat did not answer within {timeout:g} s (generation hangs)"
    except (OSError, urllib.error.URLError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return f"one-token chat did not answer within {timeout:g} s (generation hangs)"
        return f"one-token chat failed: {type(reason).__name__}: {reason}"
    if not (isinstance(data, dict) and data.get("choices")):
        return "one-token chat answered without choices"
    if time.monotonic() - start > timeout:
        return f"one-token chat took longer than {timeout:g} s"
    return ""


# --------------------------------------------------------------------------- state


DEFAULTS = {
    "unit": "sglang.service",
    "rank": 0,
    "peers": [],  # [{"rank": 0, "name": "gpu01", "host": "10.0.0.11"}, ...] in rank order
    "bind": "0.0.0.0",
    "port": 20090,
    "engine_url": "http://127.0.0.1:8000",
    "model": "",
    "key_file": "",
    "dist_init_addr": "",
    "interval_s": 15.0,
    "generation_timeout_s": 60.0,
    "peer_timeout_s": 5.0,
    "failures_before_restart": 2,
    "start_grace_s": 3600.0,
    "stop_timeout_s": 180.0,
    "max_restarts": 3,
    "window_s": 3600.0,
    "backoff_s": 60.0,
    "backoff_max_s": 900.0,
    "lock_file": "/run/sgl-deploy/group.lock",
    "lock_max_age_s": 7200.0,
    "state_file": "/var/lib/sgl-group-watchdog/state.json",
}


def load_config(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        cfg = {**DEFAULTS, **json.load(fh)}
    for key in ("interval_s", "generation_timeout_s", "peer_timeout_s", "start_grace_s", "stop_timeout_s",
                "window_s", "backoff_s", "backoff_max_s", "lock_max_age_s"):
        cfg[key] = float(cfg[key])
    for key in ("rank", "port", "failures_before_restart", "max_restarts"):
        cfg[key] = int(cfg[key])
    return cfg


class StateFile:
    """What must survive a restart of the watchdog (and a reboot): epochs and the restart history."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
                return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save(self, data: dict) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.path)


def backoff_delay(n: int, base: float, cap: float) -> float:
    """Wait before the n-th restart of a window (n >= 2): base * 2**(n-2), capped; none before the first."""
    return 0.0 if n <= 1 else min(base * 2 ** (n - 2), cap)


# --------------------------------------------------------------------------- leader (rank 0)


class Leader:
    """Rank 0: check the group, restart it in order, back off, give up, skip while a deploy runs."""

    def __init__(self, cfg: dict, unit, fetch=http_json, chat=one_token_chat, store=None,
                 now=time.time, sleep=time.sleep, logger=log):
        self.cfg, self.unit, self.fetch, self.chat = cfg, unit, fetch, chat
        self.store = store or StateFile(cfg["state_file"])
        self.now, self.sleep, self.log = now, sleep, logger
        saved = self.store.load()
        self.state = {
            "incarnation": saved.get("incarnation") or secrets.token_hex(6),
            "epoch": int(saved.get("epoch") or 0),
            "phase": saved.get("phase") or "start",
            "start_time": float(saved.get("start_time") or 0.0),
            "reason": saved.get("reason") or "",
            "restarts": [float(t) for t in saved.get("restarts") or []],
            "gave_up": bool(saved.get("gave_up")),
        }
        self.failures = 0
        self.recovering = False  # a group restart of this watchdog has not yet been seen healthy
        self.last_healthy = 0.0
        self.skipping = ""
        self.peer_states: dict = {}
        self.store.save(self.state)

    # what /state publishes
    def public(self) -> dict:
        s = self.state
        return {"role": "leader", "rank": 0, "incarnation": s["incarnation"], "epoch": s["epoch"],
                "phase": s["phase"], "start_time": s["start_time"], "reason": s["reason"],
                "gave_up": s["gave_up"]}

    def peers(self) -> list:
        return [p for p in self.cfg["peers"] if int(p["rank"]) != 0]

    def _peer_url(self, peer: dict) -> str:
        host = peer["host"]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.cfg['port']}/state"

    def read_peers(self) -> dict:
        states = {}
        for peer in self.peers():
            states[int(peer["rank"])] = self.fetch(self._peer_url(peer), self.cfg["peer_timeout_s"])
        self.peer_states = states
        return states

    def _name(self, rank: int) -> str:
        for peer in self.cfg["peers"]:
            if int(peer["rank"]) == rank:
                return f"rank {rank} ({peer.get('name') or peer['host']})"
        return f"rank {rank}"

    def deploy_lock(self, peers: dict) -> str:
        """Who holds the deploy lock on any rank ('' when nobody)."""
        mine = read_lock(self.cfg["lock_file"], self.cfg["lock_max_age_s"], self.now())
        if mine:
            return f"{mine['holder']} on {self._name(0)}"
        for rank, st in sorted(peers.items()):
            if st and st.get("lock"):
                return f"{st['lock'].get('holder', 'a deploy')} on {self._name(rank)}"
        return ""

    def problems(self, peers: dict, own: dict) -> list:
        out = []
        if own["active"] != "active":
            out.append(f"{self._name(0)}: unit {self.cfg['unit']} is {own['active']} ({own['sub']})")
        for rank, st in sorted(peers.items()):
            if st is None:
                out.append(f"{self._name(rank)}: its watchdog does not answer (host down or rebooting?)")
            elif st.get("unit", {}).get("active") != "active":
                u = st.get("unit", {})
                out.append(f"{self._name(rank)}: unit {self.cfg['unit']} is {u.get('active')} ({u.get('sub')})")
        if not out:
            why = self.chat(self.cfg["engine_url"], self.cfg["model"], api_key(self.cfg["key_file"]),
                            self.cfg["generation_timeout_s"])
            if why:
                out.append(f"{self._name(0)}: {why}")
        return out

    def tick(self) -> None:
        now = self.now()
        peers = self.read_peers()
        holder = self.deploy_lock(peers)
        if holder:
            if self.skipping != holder:
                self.log(f"deploy in progress, skipping: the deploy lock is held by {holder}; no checks, no restarts")
                self.skipping = holder
            self.failures = 0
            if self.state["restarts"] or self.state["gave_up"]:
                self.log("a deploy took over the group: restart history and give-up cleared")
                self.state["restarts"], self.state["gave_up"] = [], False
                self.store.save(self.state)
            return
        if self.skipping:
            self.log("deploy lock released: checking the group again")
            self.skipping = ""
        if self.state["phase"] == "stop":  # the watchdog died in the middle of a group restart
            self.log(f"finishing the interrupted group restart of epoch {self.state['epoch']}: starting rank 0")
            self._start_rank0()
            return
        own = self.unit.state()
        problems = self.problems(peers, own)
        if not problems:
            again = bool(self.failures or self.state["gave_up"] or self.recovering)
            if again or self.last_healthy < self._starting_since(own):
                since = now - self._starting_since(own)
                self.log(f"group healthy{' again' if again else ''} "
                         f"({since:.0f} s after the last start of the group): a one-token chat answered and "
                         "every rank's unit is active")
            self.failures = 0
            self.recovering = False
            self.last_healthy = now
            if self.state["gave_up"]:
                self.state["gave_up"] = False
                self.store.save(self.state)
            return
        starting = self._starting_since(own)
        if self.last_healthy < starting and now - starting < self.cfg["start_grace_s"] and not self.crashed(peers, own):
            return  # the group is (re)starting: weights load, warmup; not a failure yet (a crash is)
        self.failures += 1
        if self.state["gave_up"]:
            return  # said once, loudly; nothing more until healthy or a deploy resets it
        if self.failures < self.cfg["failures_before_restart"]:
            self.log(f"check failed ({self.failures}/{self.cfg['failures_before_restart']}): " + "; ".join(problems))
            return
        recent = [t for t in self.state["restarts"] if now - t < self.cfg["window_s"]]
        if len(recent) >= self.cfg["max_restarts"]:
            self.state["gave_up"] = True
            self.state["restarts"] = recent
            self.store.save(self.state)
            self.log(f"GIVING UP: {len(recent)} group restarts in the last {self.cfg['window_s']:g} s "
                     f"(max_restarts {self.cfg['max_restarts']}) did not heal the group; still failing: "
                     + "; ".join(problems) + ". No more restarts until the group is healthy again or a deploy "
                     "takes over; check each rank's journal (journalctl -u " + self.cfg["unit"] + ").")
            return
        wait = backoff_delay(len(recent) + 1, self.cfg["backoff_s"], self.cfg["backoff_max_s"])
        if recent and now < max(recent) + wait:
            self.log(f"backing off: group restart {len(recent) + 1}/{self.cfg['max_restarts']} allowed in "
                     f"{max(recent) + wait - now:.0f} s (backoff {wait:g} s); still failing: " + "; ".join(problems))
            return
        self.restart_group("; ".join(problems), len(recent) + 1)

    @staticmethod
    def crashed(peers: dict, own: dict) -> bool:
        """A rank's unit failed or waits to be restarted by systemd: no grace for a start that broke."""
        units = [own] + [st.get("unit", {}) for st in peers.values() if st]
        return any(u.get("active") == "failed" or u.get("sub") == "auto-restart" for u in units)

    def _starting_since(self, own: dict) -> float:
        """When the group last (re)started: our group restart, or rank 0's unit start (boot, deploy)."""
        return max(float(own.get("started_at") or 0.0), self.state["start_time"])

    def restart_group(self, reason: str, n: int) -> None:
        s = self.state
        s["epoch"] += 1
        s["phase"] = "stop"
        s["reason"] = reason
        s["restarts"] = [t for t in s["restarts"] if self.now() - t < self.cfg["window_s"]] + [self.now()]
        self.store.save(s)
        self.log(f"RESTARTING THE GROUP (epoch {s['epoch']}, restart {n}/{self.cfg['max_restarts']} in "
                 f"{self.cfg['window_s']:g} s) because {reason}: stopping rank 0, then every other rank")
        err = self.unit.stop()
        if err:
            self.log(f"stopping rank 0 failed: {err}")
        deadline = self.now() + self.cfg["stop_timeout_s"]
        waiting = self._not_stopped()
        while waiting and self.now() < deadline:
            self.sleep(min(1.0, self.cfg["interval_s"]))
            waiting = self._not_stopped()
        if waiting:
            self.log(f"starting anyway after {self.cfg['stop_timeout_s']:g} s: not confirmed stopped: "
                     + ", ".join(self._name(r) for r in waiting) + " (they restart when their watchdog sees the "
                     "new epoch)")
        else:
            self.log("every rank stopped; starting rank 0 first")
        self._start_rank0()

    def _start_rank0(self) -> None:
        s = self.state
        s["start_time"] = self.now()
        self.store.save(s)
        err = self.unit.start()  # rank 0 first: only then may the other ranks start
        if err:
            self.log(f"starting rank 0 failed: {err}")
        s["phase"] = "start"
        self.store.save(s)
        self.log(f"rank 0 started (epoch {s['epoch']}); the other ranks start now; the group has "
                 f"{self.cfg['start_grace_s']:g} s to serve")
        self.failures = 0
        self.recovering = True

    def _not_stopped(self) -> list:
        waiting = []
        for rank, st in self.read_peers().items():
            acked = (st or {}).get("acked", {})
            stopped = (st or {}).get("unit", {}).get("active") in ("inactive", "failed")
            if not (st and acked.get("incarnation") == self.state["incarnation"]
                    and acked.get("epoch") == self.state["epoch"] and stopped):
                waiting.append(rank)
        return waiting


# --------------------------------------------------------------------------- follower (ranks >= 1)


class Follower:
    """Rank >= 1: act on rank 0's epochs for this host only."""

    def __init__(self, cfg: dict, unit, fetch=http_json, store=None, connected=connected_to, logger=log):
        self.cfg, self.unit, self.fetch, self.connected, self.log = cfg, unit, fetch, connected, logger
        self.store = store or StateFile(cfg["state_file"])
        saved = self.store.load().get("acked") or {}
        self.acked = {"incarnation": saved.get("incarnation", ""), "epoch": int(saved.get("epoch") or 0),
                      "phase": saved.get("phase", "")}
        self.unreachable = False

    def public(self) -> dict:
        return {"role": "follower", "rank": self.cfg["rank"], "acked": dict(self.acked)}

    def leader_url(self) -> str:
        leader = next(p for p in self.cfg["peers"] if int(p["rank"]) == 0)
        host = f"[{leader['host']}]" if ":" in leader["host"] else leader["host"]
        return f"http://{host}:{self.cfg['port']}/state"

    def _ack(self, incarnation: str, epoch: int, phase: str) -> None:
        self.acked = {"incarnation": incarnation, "epoch": epoch, "phase": phase}
        self.store.save({"acked": self.acked})

    def _joined_current_rank0(self, leader: dict) -> bool:
        """Our unit runs and belongs to the rank 0 started in this epoch (no restart needed)."""
        st = self.unit.state()
        if st["active"] != "active":
            return False
        if st["started_at"] >= float(leader.get("start_time") or 0):
            return True
        addr = self.cfg.get("dist_init_addr") or ""
        host, _, port = addr.rpartition(":")
        # a connection to a dead rank 0 is not ESTABLISHED any more: one that is belongs to the new one
        return bool(host and port.isdigit() and self.connected(host.strip("[]"), int(port)))

    def tick(self) -> None:
        leader = self.fetch(self.leader_url(), self.cfg["peer_timeout_s"])
        if leader is None:
            if not self.unreachable:
                self.log("rank 0's watchdog does not answer; waiting (rank 0 decides, this host only follows)")
            self.unreachable = True
            return
        if self.unreachable:
            self.log("rank 0's watchdog answers again")
            self.unreachable = False
        inc, epoch, phase = leader.get("incarnation", ""), int(leader.get("epoch") or 0), leader.get("phase")
        if inc != self.acked["incarnation"]:
            # first contact, or rank 0's watchdog lost its state: follow it from now on
            # (its latest epoch still applies: a restart in progress, or one this host missed)
            if self.acked["incarnation"]:
                self.log(f"rank 0's watchdog state is new (incarnation {inc}); following it from epoch {epoch}")
            self._ack(inc, max(epoch - 1, 0), "start")
        a = self.acked
        new_epoch = epoch > a["epoch"]
        reason = leader.get("reason") or "?"
        unit = self.cfg["unit"]
        if phase == "stop" and new_epoch:
            self.log(f"rank 0 restarts the group (epoch {epoch}) because {reason}: stopping {unit} here")
            err = self.unit.stop()
            if err:
                self.log(f"stopping {unit} failed: {err}")
            self._ack(inc, epoch, "stop")
        elif phase == "start" and new_epoch:
            if self._joined_current_rank0(leader):
                self.log(f"rank 0 restarted the group (epoch {epoch}); {unit} here already runs with the new "
                         "rank 0: nothing to do")
            else:  # we missed the stop (host down or rebooting): stop what may still run, then start
                self.log(f"rank 0 restarted the group (epoch {epoch}) while this host was away: restarting "
                         f"{unit} here")
                self.unit.stop()
                err = self.unit.start()
                if err:
                    self.log(f"starting {unit} failed: {err}")
            self._ack(inc, epoch, "start")
        elif phase == "start" and epoch == a["epoch"] and a["phase"] == "stop":
            self.log(f"rank 0 is up again (epoch {epoch}): starting {unit} here")
            err = self.unit.start()
            if err:
                self.log(f"starting {unit} failed: {err}")
            self._ack(inc, epoch, "start")


# --------------------------------------------------------------------------- server and main


def serve(cfg: dict, role, unit) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            if self.path.split("?", 1)[0] != "/state":
                self.send_error(404)
                return
            lock = read_lock(cfg["lock_file"], cfg["lock_max_age_s"], time.time())
            body = json.dumps({**role.public(), "unit": unit.state(), "lock": lock}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # no access log in the journal
            pass

    family = socket.AF_INET6 if ":" in cfg["bind"] else socket.AF_INET
    ThreadingHTTPServer.address_family = family
    server = ThreadingHTTPServer((cfg["bind"], cfg["port"]), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="state").start()
    return server


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="JSON config written by the sglang_watchdog role")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    unit = Systemd(cfg["unit"])
    role = Leader(cfg, unit) if cfg["rank"] == 0 else Follower(cfg, unit)
    serve(cfg, role, unit)
    others = ", ".join(f"{p.get('name', p['host'])}={p['host']}" for p in cfg["peers"] if int(p["rank"]) != cfg["rank"])
    log(f"rank {cfg['rank']} of {len(cfg['peers'])} ({'leader: checks and restarts the group' if cfg['rank'] == 0 else 'follower: acts on rank 0 epochs'}); "
        f"unit {cfg['unit']}; state on port {cfg['port']}; peers {others or '-'}; interval {cfg['interval_s']:g} s")
    while True:
        try:
            role.tick()
        except Exception as exc:  # keep watching; systemd restarts us only if we die
            log(f"error in a check: {type(exc).__name__}: {exc}")
        time.sleep(cfg["interval_s"] if cfg["rank"] == 0 else max(cfg["interval_s"] / 3, 0.5))


if __name__ == "__main__":
    sys.exit(main())
