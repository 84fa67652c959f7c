#!/usr/bin/env python3
"""Control a running gateway (smg; sglang-router 0.3.2 too) through its HTTP API (stdlib only).

One file, two uses: the module_utils of the module ``sgl_router_workers`` (plugins/modules), and the
control script the sglang_router role ships to the router host as ``libexec/sgl_router_ctl.py``
(roles/sglang_router/files/sgl_router_ctl.py is a link to this file) for the readiness polls
(``sgl_poll``) and the redeploy's per-worker steps.

    sgl_router_ctl.py [--config FILE] [--base URL] [--key-file FILE] [--ca-file FILE] <command> ...

``--config``: a JSON object {"base", "key_file", "ca_file"} (the role writes /etc/sglang-router/ctl.json:
the gateway's own URL, http on loopback or https to the name its certificate is for, the key file and
the CA); options given on the command line win.

Commands (each prints one JSON object on stdout):
  ready    [--expect URL ...]         one readiness poll for sgl_poll: {"done","failed","line"}
  list                                {"workers": [{"url","id","healthy","load"}]}
  reconcile --desired URL ...         add missing / remove extra workers; waits for the added ones
  add      --url URL [--timeout S]    register a worker and wait until the router lists it healthy
  remove   --url URL [--timeout S]    unregister a worker (in-flight requests finish) and wait
  wait-idle --url URL [--timeout S]   wait until the worker runs no request (its /metrics
                                      sglang:num_running_reqs is 0 twice in a row)

The worker API of smg 1.13.0 (and of sglang-router 0.3.2; checked against the installed packages
and the lab): GET /workers (list with id, url, is_healthy, load), POST /workers {"url": ...} (202,
queued job), DELETE /workers/{id} (the id is a UUID, not the URL; 202, queued). With --api-key the
gateway requires ``Authorization: Bearer <key>`` on these endpoints (and on inference routes);
/liveness, /readiness and /health are open. smg does not give a worker added through the API the
gateway's own --api-key: without ``"api_key"`` in the POST body its metadata discovery gets 401 from
the worker and retries for minutes before it registers the worker under model ``unknown``, so
``add`` sends the key in the body (the workers and the gateway share one key). The key is read
from --key-file, never from the command line. With an https --base, --ca-file names the CA the
gateway's certificate chains to. Exit status: 0 done, 1 failed (the JSON says why), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

RUNNING = re.compile(r"^sglang:num_running_reqs(?:\{[^}]*\})?\s+([0-9.eE+-]+)", re.M)


def norm(url: str) -> str:
    return url.strip().rstrip("/")


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """Verify an https gateway against ca_file (its own CA); None: the system trust store."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


class Router:
    def __init__(self, base: str, key: str | None, timeout: float = 10.0, ca_file: str | None = None):
        self.base = norm(base)
        self.key = key
        self.timeout = timeout
        self.context = tls_context(ca_file)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(exc)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def workers(self) -> list[dict]:
        status, body = self.call("GET", "/workers")
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"GET /workers answered {status or 'nothing'}: {str(body)[:200]}")
        return [{"url": norm(w.get("url", "")), "id": w.get("id"), "healthy": bool(w.get("is_healthy")),
                 "load": w.get("load")} for w in body.get("workers", [])]

    def find(self, url: str) -> dict | None:
        return next((w for w in self.workers() if w["url"] == norm(url)), None)

    def add(self, url: str) -> None:
        body = {"url": norm(url)}
        if self.key:
            body["api_key"] = self.key  # the worker's key (smg does not reuse its own, see above)
        status, body = self.call("POST", "/workers", body)
        if status not in (200, 201, 202):
            raise RuntimeError(f"POST /workers {url} answered {status or 'nothing'}: {str(body)[:200]}")

    def remove(self, worker_id: str) -> None:
        status, body = self.call("DELETE", "/workers/" + urllib.parse.quote(str(worker_id), safe=""))
        if status not in (200, 202, 204, 404):
            raise RuntimeError(f"DELETE /workers/{worker_id} answered {status or 'nothing'}: {str(body)[:200]}")


def wait_until(check, timeout: float, interval: float = 1.0):
    """Call check() until it returns a truthy value or the timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def running_requests(worker_url: str, timeout: float = 5.0) -> float | None:
    """The worker's sglang:num_running_reqs (sum over labels); None without a metrics endpoint."""
    try:
        with urllib.request.urlopen(norm(worker_url) + "/metrics", timeout=timeout) as resp:
            text = resp.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None
    values = [float(v) for v in RUNNING.findall(text)]
    return sum(values) if values else None


# ---------------------------------------------------------------- commands


def cmd_ready(r: Router, a) -> dict:
    status, _ = r.call("GET", "/liveness")
    if status != 200:
        return {"done": False, "failed": False, "line": f"router not live yet (/liveness {status or 'no answer'})"}
    expect = [norm(u) for u in a.expect or []]
    if not expect:
        return {"done": True, "failed": False, "line": "router live (no workers expected)"}
    try:
        have = {w["url"]: w for w in r.workers()}
    except RuntimeError as exc:
        return {"done": False, "failed": False, "line": str(exc)}
    missing = [u for u in expect if u not in have]
    unhealthy = [u for u in expect if u in have and not have[u]["healthy"]]
    if missing or unhealthy:
        return {"done": False, "failed": False,
                "line": f"router live; waiting for workers: missing {missing}, unhealthy {unhealthy}"}
    return {"done": True, "failed": False, "line": f"router ready with {len(expect)} healthy worker(s)"}


def _wait_listed(r: Router, urls: list[str], timeout: float) -> list[str]:
    """Wait until every url is listed healthy; returns those that are not."""
    def pending():
        have = {w["url"]: w for w in r.workers()}
        return [u for u in urls if not (u in have and have[u]["healthy"])]

    left = wait_until(lambda: not pending(), timeout)
    return [] if left else pending()


def cmd_add(r: Router, a) -> dict:
    url = norm(a.url)
    current = r.find(url)
    if current and current["healthy"]:
        return {"changed": False, "url": url, "msg": f"{url} already routed"}
    if not current:
        r.add(url)
    left = _wait_listed(r, [url], a.timeout)
    if left:
        raise RuntimeError(f"{url} was not listed healthy by the router within {a.timeout:.0f}s")
    return {"changed": True, "url": url, "msg": f"{url} added and healthy"}


def cmd_remove(r: Router, a) -> dict:
    url = norm(a.url)
    current = r.find(url)
    if not current:
        return {"changed": False, "url": url, "msg": f"{url} was not routed"}
    r.remove(current["id"])
    gone = wait_until(lambda: r.find(url) is None, a.timeout)
    if not gone:
        raise RuntimeError(f"the router still lists {url} {a.timeout:.0f}s after DELETE /workers/{current['id']}")
    return {"changed": True, "url": url, "id": current["id"], "msg": f"{url} removed from the router"}


def reconcile_plan(have: list[str], desired: list[str]) -> tuple[list[str], list[str]]:
    """(to add, to remove): the difference between the router's worker URLs and the desired ones."""
    want = [norm(u) for u in desired]
    have = [norm(u) for u in have]
    return [u for u in want if u not in have], [u for u in have if u not in want]


def reconcile(r: Router, desired: list[str], timeout: float, check_mode: bool = False) -> dict:
    """Add the missing workers, remove the extra ones, wait until the added are healthy. In check
    mode only say what would change. ``before``/``workers``: the URL lists before and after."""
    current = r.workers()
    have = {w["url"]: w for w in current}
    added, removed = reconcile_plan(list(have), desired)
    out = {"changed": bool(added or removed), "added": added, "removed": removed,
           "before": [w["url"] for w in current], "workers": [norm(u) for u in desired]}
    if check_mode:
        return out
    for url in added:
        r.add(url)
    for url in removed:
        r.remove(have[url]["id"])
    left = _wait_listed(r, added, timeout) if added else []
    if left:
        raise RuntimeError(f"workers not healthy in the router within {timeout:.0f}s: {left}")
    return out


def cmd_reconcile(r: Router, a) -> dict:
    return reconcile(r, a.desired or [], a.timeout)


def cmd_wait_idle(_r: Router, a) -> dict:
    url = norm(a.url)
    start = time.monotonic()
    zeros, last, seen = 0, None, False
    while time.monotonic() - start < a.timeout:
        last = running_requests(url)
        if last is None:
            break
        seen = True
        zeros = zeros + 1 if last == 0 else 0
        if zeros >= 2:
            return {"idle": True, "source": "metrics", "running": 0, "waited_s": round(time.monotonic() - start, 1)}
        time.sleep(a.interval)
    if not seen:
        # no metrics (--enable-metrics off, or the worker is down): a fixed grace period instead
        time.sleep(min(a.grace, a.timeout))
        return {"idle": True, "source": "grace", "running": None, "waited_s": round(time.monotonic() - start, 1),
                "msg": f"{url}/metrics unavailable: waited {min(a.grace, a.timeout):.0f}s instead"}
    return {"idle": False, "source": "metrics", "running": last, "waited_s": round(time.monotonic() - start, 1),
            "msg": f"{url} still runs {last:g} request(s) after {a.timeout:.0f}s"}


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="sgl_router_ctl.py", description="Control a running sglang-router through its HTTP API.")
    p.add_argument("--config", help="JSON file with defaults for base, key_file and ca_file")
    p.add_argument("--base", help="router base URL (default http://127.0.0.1:30000)")
    p.add_argument("--key-file", help="file with the router's API key")
    p.add_argument("--ca-file", help="CA bundle that signed the gateway's TLS certificate (https --base)")
    p.add_argument("--http-timeout", type=float, default=10.0)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("ready")
    s.add_argument("--expect", nargs="*", default=[])
    sub.add_parser("list")
    s = sub.add_parser("reconcile")
    s.add_argument("--desired", nargs="*", default=[])
    s.add_argument("--timeout", type=float, default=300)
    for name in ("add", "remove"):
        s = sub.add_parser(name)
        s.add_argument("--url", required=True)
        s.add_argument("--timeout", type=float, default=300)
    s = sub.add_parser("wait-idle")
    s.add_argument("--url", required=True)
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--interval", type=float, default=1.0)
    s.add_argument("--grace", type=float, default=30.0, help="wait this long when the worker has no /metrics")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.config:
        try:
            with open(a.config, encoding="utf-8") as fh:
                conf = json.load(fh)
        except (OSError, ValueError) as exc:
            print(json.dumps({"failed": True, "msg": f"cannot read the config file: {exc}"}))
            return 1
        for name in ("base", "key_file", "ca_file"):
            if getattr(a, name) is None and conf.get(name):
                setattr(a, name, conf[name])
    a.base = a.base or "http://127.0.0.1:30000"
    key = None
    if a.key_file:
        try:
            with open(a.key_file, encoding="utf-8") as fh:
                key = fh.read().strip() or None
        except OSError as exc:
            print(json.dumps({"failed": True, "msg": f"cannot read the key file: {exc}"}))
            return 1
    r = Router(a.base, key, a.http_timeout, a.ca_file)
    commands = {"ready": cmd_ready, "list": lambda r, a: {"workers": r.workers()}, "add": cmd_add,
                "remove": cmd_remove, "reconcile": cmd_reconcile, "wait-idle": cmd_wait_idle}
    try:
        out = commands[a.command](r, a)
    except RuntimeError as exc:
        print(json.dumps({"failed": True, "changed": False, "msg": str(exc)}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
