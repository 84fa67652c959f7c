#!/usr/bin/env python3
"""Benchmark: naive per-host download vs LAN fan-out, with a rate-limited hub link.

For N hosts (default 1, 2, 4) it measures, in one run, the wall time until every host has
complete weights (MANIFEST.json + marker) and the bytes the hub had to send:

  naive   every host downloads from the hub at the same time (model_weights_source=hub)
  fanout  one seed downloads from the hub, then serves the others over the LAN with the same
          protocol (model_weights_source=fanout)

The hub is lab/hub/server.py with a global throttle (one shared uplink, --hub-mbps).

Without the lab (default) the "hosts" are separate weights dirs and separate processes of the
role's tool on THIS machine, talking over loopback (the LAN is not throttled); the output says
so. With SGL_LAB=1 it runs the real role (ansible-playbook playbooks/weights.yml) against the
lab hosts of inventory/lab/hosts.yml, with the hub bound to the controller's bridge address.

  .venv/bin/python scripts/bench/weights.py [--hosts 1 2 4] [--shards 2 --shard-mib 32] [--hub-mbps 20]
"""

from __future__ import annotations

import argparse
import json
import os
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

MODEL = "SglLab/MiniMax-M3-Lab"


def hub_bytes(log: Path, since: int) -> int:
    return sum(r.get("bytes") or 0 for r in harness.file_gets(log)[since:])


# ---------------------------------------------------------------------------------------------
# local simulation: hosts = dirs + processes
# ---------------------------------------------------------------------------------------------
def local_fetch_all(endpoint: str, dirs: list[Path], home: Path) -> None:
    procs = [harness.start_tool("fetch", "--model-id", MODEL, "--endpoint", endpoint, "--dir", d, "--margin-gb", 0,
                                env=harness.tool_env(home)) for d in dirs]
    for d, p in zip(dirs, procs):
        out, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"fetch into {d} failed (rc {p.returncode}): {out[-500:]} {err[-1500:]}")


def local_run(mode: str, n: int, work: Path, hub) -> tuple[float, int]:
    run = work / f"{mode}-{n}-{uuid.uuid4().hex[:6]}"
    dirs = [run / f"host{i + 1}" for i in range(n)]
    since = len(harness.file_gets(hub.access_log))
    t0 = time.monotonic()
    if mode == "naive":
        local_fetch_all(hub.url, dirs, work)
    else:
        local_fetch_all(hub.url, dirs[:1], work)  # the seed, from the hub
        if n > 1:
            port = harness.free_port()
            mirror = harness.start_tool("serve-mirror", "--dir", dirs[0], "--host", "127.0.0.1", "--port", port,
                                        "--max-seconds", 3600)
            try:
                pidfile = dirs[0] / harness.proto.STATE_DIR / "mirror.pid"
                while not pidfile.exists():
                    time.sleep(0.05)
                local_fetch_all(f"http://127.0.0.1:{port}", dirs[1:], work)
            finally:
                harness.run_tool("stop-mirror", "--dir", dirs[0])
                mirror.wait(timeout=30)
    wall = time.monotonic() - t0
    for d in dirs:
        assert harness.proto.evaluate(d)["complete"], d
    shutil.rmtree(run, ignore_errors=True)
    return wall, hub_bytes(hub.access_log, since)


# ---------------------------------------------------------------------------------------------
# lab: the real role on the nspawn hosts
# ---------------------------------------------------------------------------------------------
def lab_hosts() -> list[str]:
    out = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-inventory"), "-i", "inventory/lab/hosts.yml",
                          "--list"], cwd=REPO, capture_output=True, text=True, check=True)
    return sorted(json.loads(out.stdout).get("sglang_servers", {}).get("hosts", []))


def lab_run(mode: str, n: int, hosts: list[str], hub, python: str) -> tuple[float, int]:
    wdir = f"/srv/models/bench-{mode}-{n}-{uuid.uuid4().hex[:6]}"
    extra = {
        "model_weights_model_id": MODEL, "model_weights_revision": "master", "model_weights_dir": wdir,
        "model_weights_python": python, "model_weights_endpoint": hub.url, "model_weights_disk_margin_gb": 0,
        "model_weights_source": "hub" if mode == "naive" else "fanout", "model_weights_poll_interval_s": 2,
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
        raise SystemExit(f"{mode} n={n} failed:\n{proc.stdout[-3000:]}")
    return wall, hub_bytes(hub.access_log, since)


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--shard-mib", type=float, default=32)
    ap.add_argument("--hub-mbps", type=float, default=20.0, help="hub uplink in MB/s (decimal), shared by all hosts")
    ap.add_argument("--work", type=Path, help="scratch dir (default: a temp dir, removed at the end)")
    args = ap.parse_args(argv)
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
    print(f"model {MODEL}: {size / 1e6:.1f} MB in {args.shards} shards + metadata; hub link {args.hub_mbps:g} MB/s "
          f"(shared by all hosts)")
    if lab:
        print(f"mode: LAB (SGL_LAB=1): real role on {', '.join(hosts)}; hub {hub.url}")
        python = os.environ.get("SGL_LAB_WEIGHTS_PYTHON", "/opt/sglang/venvs/sglang-0.5.23/bin/python")
    else:
        print("mode: LOCAL SIMULATION (no lab): each 'host' is a separate weights dir + tool process on this machine;"
              " the LAN is loopback (not throttled); the hub link is throttled")
    print()
    print(f"{'hosts':>5}  {'mode':<7} {'wall s':>8}  {'hub MB':>8}  {'hub/model':>9}  {'speedup':>7}")
    try:
        for n in counts:
            res = {}
            for mode in ("naive", "fanout"):
                if lab:
                    res[mode] = lab_run(mode, n, hosts, hub, python)
                else:
                    res[mode] = local_run(mode, n, work, hub)
            for mode in ("naive", "fanout"):
                wall, sent = res[mode]
                speed = res["naive"][0] / wall if mode == "fanout" else 1.0
                print(f"{n:>5}  {mode:<7} {wall:>8.1f}  {sent / 1e6:>8.1f}  {sent / size:>9.2f}  {speed:>6.2f}x",
                      flush=True)
    finally:
        hub.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    skipped = [n for n in args.hosts if n not in counts]
    if skipped:
        print(f"(skipped N={skipped}: the lab has {len(hosts)} hosts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
