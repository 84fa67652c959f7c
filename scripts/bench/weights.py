#!/usr/bin/env python3
"""Benchmark: pipelined tree fan-out of the weights to N hosts, each with its own uplink.

For each N it measures the wall time until every host has complete weights (MANIFEST.json +
marker), the bytes the hub sent (per model), the most bytes one host served to its peers, the
most uploads one host had in flight at once (its fan-out limit bounds it), and N/1 time.

The hub is lab/hub/server.py with a global throttle (--hub-mbps). Every host runs the role's
tool as in production: one `serve-mirror --live` (its NIC: --max-upload-bps = --uplink-mbps,
at most --fanout-limit uploads at once) and either `fetch --publish` from the hub (the seed,
one file at a time) or `copy` from the candidate sources of the controller's plan
(fanout_plan: tree order).

Without the lab (default) the "hosts" are separate weights dirs and processes on THIS machine,
over loopback: each uplink is throttled by its mirror, downlinks are not. With SGL_LAB=1 it
runs the real role (playbooks/weights.yml, model_weights_source=fanout) on the lab hosts.

  .venv/bin/python scripts/bench/weights.py            # the issue's settings: 8 x 64 MiB, hub 20 MB/s,
                                                       # uplink 40 MB/s, N = 1 4 8 16 (~1.5 GB scratch per N)
  .venv/bin/python scripts/bench/weights.py --quick    # 4 x 8 MiB, hub 5 MB/s, uplink 10 MB/s, N = 1 4
  flags: --hosts N.. --shards --shard-mib --hub-mbps --uplink-mbps --fanout-limit --work DIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab" / "hub"))
import harness  # noqa: E402

sw = harness.proto
MODEL = "SglLab/MiniMax-M3-Lab"
QUICK = {"hosts": [1, 4], "shards": 4, "shard_mib": 8.0, "hub_mbps": 5.0, "uplink_mbps": 10.0}


def hub_bytes(log: Path, since: int) -> int:
    return sum(r.get("bytes") or 0 for r in harness.file_gets(log)[since:])


# ---------------------------------------------------------------------------------------------
# local simulation: hosts = dirs + processes
# ---------------------------------------------------------------------------------------------
def local_run(n: int, work: Path, hub, args) -> dict:
    run = work / f"fanout-{n}-{uuid.uuid4().hex[:6]}"
    names = [f"host{i + 1:02d}" for i in range(n)]
    dirs = {h: run / h for h in names}
    plan = sw.fanout_plan(names, names[0], complete=[], limit=args.fanout_limit)
    ports = {h: harness.free_port() for h in names}
    url = {h: f"http://127.0.0.1:{ports[h]}" for h in names}
    env = harness.tool_env(work)
    since = len(harness.file_gets(hub.access_log))
    mirrors = {}
    t0 = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        def start_mirror(h):
            return harness.start_tool(
                "serve-mirror", "--live", "--dir", dirs[h], "--host", "127.0.0.1", "--port", ports[h],
                "--fanout-limit", args.fanout_limit, "--max-upload-bps", int(args.uplink_mbps * 1e6),
                "--max-seconds", 3600, env=env)

        for h in names:  # every host serves what it has verified, from the start
            dirs[h].mkdir(parents=True)
            mirrors[h] = start_mirror(h)
        for h in names:
            tries = 0
            while not (dirs[h] / sw.STATE_DIR / "mirror.pid").exists():
                if mirrors[h].poll() is not None:
                    out = mirrors[h].communicate()
                    tries += 1
                    if "Address already in use" not in str(out) or tries > 5:
                        raise SystemExit(f"mirror of {h} exited: {out}")
                    ports[h] = harness.free_port()  # another process took the free port meanwhile: another one
                    url[h] = f"http://127.0.0.1:{ports[h]}"
                    mirrors[h] = start_mirror(h)
                time.sleep(0.05)
        t0, t0_wall = time.monotonic(), time.time()
        procs = {plan["hub"]: harness.start_tool(
            "fetch", "--publish", "--model-id", MODEL, "--endpoint", hub.url, "--dir", dirs[plan["hub"]],
            "--margin-gb", 0, "--max-workers", 1, env=env)}
        for h, sources in plan["sources"].items():
            procs[h] = harness.start_tool(
                "copy", "--model-id", MODEL, "--dir", dirs[h], "--margin-gb", 0,
                *[a for s in sources for a in ("--source", url[s])], env=env)
        t_seed = None
        for h, p in procs.items():  # the seed first: its end is the hub download's end
            out, err = p.communicate(timeout=3600)
            t_seed = t_seed or time.monotonic()
            if p.returncode != 0:
                raise SystemExit(f"{h} failed (rc {p.returncode}): {out[-800:]} {err[-1500:]}")
            if args.trace:
                with open(args.trace, "a", encoding="utf-8") as trace:
                    trace.write(json.dumps({"n": n, "host": h, "t_start": t0_wall, "t_end": time.time(),
                                            "url": url[h], "result": json.loads(out.strip().splitlines()[-1])}) + "\n")
        wall = time.monotonic() - t0
    finally:
        served = {}
        for h, m in mirrors.items():
            harness.run_tool("stop-mirror", "--dir", dirs[h])
            out, _ = m.communicate(timeout=30)
            last = out.strip().splitlines()[-1] if out.strip() else "{}"
            served[h] = json.loads(last)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for d in dirs.values():
        assert sw.evaluate(d)["complete"], d
    shutil.rmtree(run, ignore_errors=True)
    return {"wall": wall, "after_seed": wall - (t_seed - t0),
            "cpu": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, "hub": hub_bytes(hub.access_log, since),
            "max_served": max(s.get("bytes_sent", 0) for s in served.values()) if n > 1 else 0,
            "max_uploads": max(s.get("peak_uploads", 0) for s in served.values()) if n > 1 else 0,
            "rounds": plan["rounds"]}


# ---------------------------------------------------------------------------------------------
# lab: the real role on the nspawn hosts
# ---------------------------------------------------------------------------------------------
def lab_hosts() -> list[str]:
    out = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-inventory"), "-i", "inventory/lab/hosts.yml",
                          "--list"], cwd=REPO, capture_output=True, text=True, check=True)
    return sorted(json.loads(out.stdout).get("sglang_servers", {}).get("hosts", []))


def lab_run(n: int, hosts: list[str], hub, python: str, args) -> dict:
    wdir = f"/srv/models/bench-fanout-{n}-{uuid.uuid4().hex[:6]}"
    extra = {
        "model_weights_model_id": MODEL, "model_weights_revision": "master", "model_weights_dir": wdir,
        "model_weights_python": python, "model_weights_endpoint": hub.url, "model_weights_disk_margin_gb": 0,
        "model_weights_source": "fanout", "model_weights_poll_interval_s": 2,
        "model_weights_fanout_limit": args.fanout_limit, "model_weights_fanout_max_upload_mb_s": args.uplink_mbps,
    }
    limit = ",".join(hosts[:n])
    since = len(harness.file_gets(hub.access_log))
    t0 = time.monotonic()
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "inventory/lab/hosts.yml",
                           "playbooks/weights.yml", "--limit", limit, "-e", json.dumps(extra)],
                          cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - t0
    subprocess.run([str(REPO / ".venv" / "bin" / "ansible"), "-i", "inventory/lab/hosts.yml", limit, "-m",
                    "ansible.builtin.file", "-a", f"path={wdir} state=absent"], cwd=REPO, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"fanout n={n} failed:\n{proc.stdout[-3000:]}")
    return {"wall": wall, "after_seed": None, "cpu": None, "hub": hub_bytes(hub.access_log, since), "max_served": None,
            "max_uploads": None,
            "rounds": sw.fanout_plan(hosts[:n], hosts[0], [], args.fanout_limit)["rounds"]}


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"a small, fast run: {QUICK} (other flags override)")
    ap.add_argument("--hosts", type=int, nargs="+")
    ap.add_argument("--shards", type=int)
    ap.add_argument("--shard-mib", type=float)
    ap.add_argument("--hub-mbps", type=float, help="hub uplink in MB/s (decimal), shared by all downloads")
    ap.add_argument("--uplink-mbps", type=float, help="each host's uplink (its mirror's cap) in MB/s")
    ap.add_argument("--fanout-limit", type=int, default=2, help="uploads at once per host (model_weights_fanout_limit)")
    ap.add_argument("--work", type=Path, help="scratch dir (default: a temp dir, removed at the end)")
    ap.add_argument("--trace", type=Path, help="append each host's fetch/copy result (per-file events) to this JSONL")
    args = ap.parse_args(argv)
    defaults = dict(QUICK) if args.quick else {"hosts": [1, 4, 8, 16], "shards": 8, "shard_mib": 64.0,
                                                "hub_mbps": 20.0, "uplink_mbps": 40.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if harness.sglang_python() is None:
        raise SystemExit("needs the SGLang venv python (.venv-sglang or SGL_SGLANG_PYTHON) for the ModelScope client")

    lab = os.environ.get("SGL_LAB") == "1"
    work = args.work or Path(tempfile.mkdtemp(prefix="sgl-bench-weights-"))
    work.mkdir(parents=True, exist_ok=True)
    info = harness.make_repo(work / "hub", "m3", shards=args.shards, shard_mib=args.shard_mib)[MODEL]
    bind = os.environ.get("SGL_LAB_CONTROLLER_IP", "10.77.0.1") if lab else "127.0.0.1"  # lab: the bridge
    hub = harness.Hub(work / "hub", work / "hub-access.log", faults={"throttle_bps": int(args.hub_mbps * 1e6)},
                      host=bind)
    hub.server.catalog.entries_for(MODEL, "master")  # warm the hub's sha256 cache outside the timings
    hosts = lab_hosts() if lab else []
    counts = [n for n in args.hosts if not lab or n <= len(hosts)]
    size = info["bytes"]
    print(f"model {MODEL}: {size / 1e6:.1f} MB in {args.shards} shards of {args.shard_mib:g} MiB + metadata; "
          f"hub {args.hub_mbps:g} MB/s (shared); each host's uplink {args.uplink_mbps:g} MB/s; "
          f"fan-out limit {args.fanout_limit}")
    if lab:
        print(f"mode: LAB (SGL_LAB=1): real role on {', '.join(hosts)}; hub {hub.url}")
        python = os.environ.get("SGL_LAB_WEIGHTS_PYTHON", "/opt/sglang/venvs/sglang-0.5.23/bin/python")
    else:
        print("mode: LOCAL SIMULATION (no lab): each 'host' is a weights dir + its own mirror and fetch/copy "
              "process on this machine, over loopback; uplinks throttled by each mirror, downlinks not")
    print()
    print(f"{'hosts':>5}  {'wall s':>7}  {'hub MB':>7}  {'hub/model':>9}  {'max served MB':>13}  "
          f"{'max uploads':>11}  {'tree rounds':>11}  {'N/1 time':>8}  {'after seed s':>12}  {'cpu s':>6}")
    base = None
    try:
        for n in counts:
            r = lab_run(n, hosts, hub, python, args) if lab else local_run(n, work, hub, args)
            base = base or (r["wall"] if n == 1 else None)
            ratio = f"{r['wall'] / base:.2f}x" if base else "--"
            served = "--" if r["max_served"] is None else f"{r['max_served'] / 1e6:.1f}"
            uploads = "--" if r["max_uploads"] is None else str(r["max_uploads"])
            cpu = "--" if r["cpu"] is None else f"{r['cpu']:.0f}"
            tail = "--" if r["after_seed"] is None else f"{r['after_seed']:.1f}"
            print(f"{n:>5}  {r['wall']:>7.1f}  {r['hub'] / 1e6:>7.1f}  {r['hub'] / size:>9.2f}  {served:>13}  "
                  f"{uploads:>11}  {r['rounds']:>11}  {ratio:>8}  {tail:>12}  {cpu:>6}", flush=True)
    finally:
        hub.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    skipped = [n for n in args.hosts if n not in counts]
    if skipped:
        print(f"(skipped N={skipped}: the lab has {len(hosts)} hosts)")
    print(f"targets: N=16 time <= 1.50x N=1; hub/model <= 1.05; max uploads <= fan-out limit ({args.fanout_limit})")
    print("after seed s: wall time after the seed's hub download ended (the LAN tail of the last shard)")
    print(f"cpu s: CPU time of all the hosts' tool processes together (this machine has {os.cpu_count()} cores; "
          "a real fleet has one machine per host)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
