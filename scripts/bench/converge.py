#!/usr/bin/env python3
"""Converge benchmark on the lab: a first `site.yml` converge and a no-op rerun with 1, 2 and 4 engine
hosts (plus a gateway and a monitoring host), and a projection to a 200-host fleet.

    .venv/bin/python scripts/bench/converge.py [--engines 1,2,4] [--json FILE] [--keep] [--reuse]

Prints, per fleet size and run: wall time, controller CPU seconds (ansible-playbook and everything it
started on the controller: forks, ssh clients, the probes), tasks per engine host and remote module
runs (SSH round trips with pipelining) per engine host, counted by the sgl_timing callback
(plugins/callback/sgl_timing.py), and `changed` (the rerun must be 0). Then the 200-host projection
at the `forks` of ansible.cfg (docs/performance.md says how it is made).

Manages its own lab hosts (bc1-bc4 10.77.0.111-.114, profile h100-80gb-x4; bcrouter .118 with TLS;
bcmon .119 Prometheus) in a generated inventory that reuses inventory/lab/group_vars, and removes
them at the end (--keep leaves them up). Without --reuse each fleet size starts from fresh hosts (a
fresh converge); with --reuse the hosts of the smaller fleet are kept and only the added ones are
fresh. Needs root and the lab (make setup). Exit 1 when a no-op rerun changed something or failed.
"""

from __future__ import annotations

import argparse
import configparser
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB_GROUP_VARS = REPO / "inventory" / "lab" / "group_vars"
ENGINES = {"bc1": "10.77.0.111", "bc2": "10.77.0.112", "bc3": "10.77.0.113", "bc4": "10.77.0.114"}
ROUTER = ("bcrouter", "10.77.0.118")
MONITOR = ("bcmon", "10.77.0.119")
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PROJECT_HOSTS = 200


def write_inventory(folder: Path, engines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "group_vars").mkdir(exist_ok=True)
    for src in LAB_GROUP_VARS.iterdir():  # copies, not links: the bench folder is self-contained
        (folder / "group_vars" / src.name).write_text(src.read_text())
    lines = ["---", "all:", "  children:", "    sglang_servers:", "      hosts:"]
    for h in engines:
        lines += [f"        {h}:", f"          ansible_host: {ENGINES[h]}", "          lab_gpu_profile: h100-80gb-x4"]
    lines += ["    sglang_routers:", "      hosts:", f"        {ROUTER[0]}:", f"          ansible_host: {ROUTER[1]}",
              "          lab_gpu_profile: no-gpu",
              "    monitoring:", "      hosts:", f"        {MONITOR[0]}:", f"          ansible_host: {MONITOR[1]}",
              "          lab_gpu_profile: no-gpu"]
    inv = folder / "hosts.yml"
    inv.write_text("\n".join(lines) + "\n")
    return inv


def labctl(*args: str) -> None:
    subprocess.run([str(BIN / "python"), str(REPO / "lab" / "labctl.py"), *args], check=True,
                   stdout=subprocess.DEVNULL)


def recap(stdout: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for host, ok, changed, unreachable, failed in RECAP.findall(stdout):
        prev = out.get(host, {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0})
        out[host] = {"ok": prev["ok"] + int(ok), "changed": prev["changed"] + int(changed),
                     "unreachable": prev["unreachable"] + int(unreachable), "failed": prev["failed"] + int(failed)}
    return out


def run_site(inv: Path, log: Path, *extra: str) -> dict:
    timing = log.with_suffix(".timing.json")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CALLBACKS_ENABLED": "sgl_timing", "SGL_TIMING_JSON": str(timing)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), "site.yml", *extra], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.write_text(proc.stdout + proc.stderr)
    hosts = recap(proc.stdout)
    t = json.loads(timing.read_text()) if timing.exists() else {"hosts": {}, "plays": []}
    engines = [h for h in hosts if h in ENGINES]
    per = [t["hosts"].get(h, {}) for h in engines]
    return {
        "rc": proc.returncode, "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "changed": {h: v["changed"] for h, v in hosts.items()},
        "failed": {h: v["failed"] + v["unreachable"] for h, v in hosts.items() if v["failed"] + v["unreachable"]},
        "tasks_per_engine": round(sum(p.get("tasks", 0) for p in per) / max(len(per), 1), 1),
        "remote_per_engine": round(sum(p.get("remote", 0) for p in per) / max(len(per), 1), 1),
        "hosts": t["hosts"], "plays": t["plays"], "log": str(log),
    }


def forks() -> int:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    return int(cfg["defaults"].get("forks", "5"))


def project(results: dict[int, dict], n_hosts: int = PROJECT_HOSTS) -> dict:
    """Linear fit of the no-op rerun over the engine count (least squares), extended to n_hosts.

    Wall, fork-bound: a run of up to `forks` hosts takes a + b*n (a: the task latencies every run waits
    for; b: the controller's work per host). Beyond `forks`, every task runs in ceil(n/forks) waves, so
    the latency part repeats per wave: a*waves + b*n (an upper bound: a also holds per-run work that
    does not repeat). CPU-bound: the controller's CPU seconds (c + d*n) over its cores. The projection
    is the larger of the two, and names the resource that runs out first."""
    ns = sorted(results)
    if len(ns) < 2:
        return {}
    walls = [results[n]["rerun"]["wall_s"] for n in ns]
    cpus = [results[n]["rerun"]["cpu_s"] for n in ns]

    def fit(ys):
        mx, my = sum(ns) / len(ns), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in ns)
        b = sum((x - mx) * (y - my) for x, y in zip(ns, ys)) / sxx if sxx else 0.0
        return my - b * mx, b

    wa, wb = fit(walls)
    ca, cb = fit(cpus)
    f = forks()
    cores = os.cpu_count() or 1
    waves = math.ceil(n_hosts / f)
    fork_bound = wa * waves + max(wb, 0.0) * n_hosts
    cpu = ca + cb * n_hosts
    cpu_bound = cpu / cores
    return {"hosts": n_hosts, "forks": f, "cores": cores, "wall_fixed_s": round(wa, 1),
            "wall_per_host_s": round(wb, 2), "cpu_fixed_s": round(ca, 1), "cpu_per_host_s": round(cb, 2),
            "projected_cpu_s": round(cpu, 0), "fork_bound_wall_s": round(fork_bound, 0),
            "cpu_bound_wall_s": round(cpu_bound, 0), "projected_wall_s": round(max(fork_bound, cpu_bound), 0),
            "runs_out_first": "controller CPU" if cpu_bound > fork_bound else "forks (hosts wait for a free fork)"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="1,2,4", help="engine-host counts to measure (at most 4)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="leave the bench hosts up")
    p.add_argument("--reuse", action="store_true", help="keep the smaller fleet's hosts (only added hosts are fresh)")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("converge.py: needs root (the lab)")
    counts = [int(x) for x in a.engines.split(",") if x]
    work = Path(tempfile.mkdtemp(prefix="sgl-bench-converge-"))
    full = write_inventory(work / "all", list(ENGINES))
    results: dict[int, dict] = {}
    try:
        labctl("down", "-i", str(full))  # fresh hosts, whatever an earlier run left
        for n in counts:
            inv = write_inventory(work / f"n{n}", list(ENGINES)[:n])
            if not a.reuse:
                labctl("down", "-i", str(full))
            labctl("up", "-i", str(inv))
            first = run_site(inv, work / f"n{n}-first.log")
            rerun = run_site(inv, work / f"n{n}-rerun.log") if first["rc"] == 0 else None
            skip = run_site(inv, work / f"n{n}-rerun-skip-probe.log", "--skip-tags", "probe") if rerun else None
            results[n] = {"first": first, "rerun": rerun, "rerun_skip_probe": skip}
    finally:
        if not a.keep:
            labctl("down", "-i", str(full))

    ok = True
    head = f"{'engines':>7} {'run':22} {'wall':>7} {'ctl CPU':>8} {'tasks/host':>10} {'ssh/host':>9}  changed"
    print(head)
    print("-" * len(head))
    for n, r in results.items():
        for label, key in (("first converge", "first"), ("no-op rerun", "rerun"), ("no-op --skip-tags probe", "rerun_skip_probe")):
            x = r.get(key)
            if not x:
                continue
            changed = sum(x["changed"].values())
            print(f"{n:>7} {label:22} {x['wall_s']:>6.1f}s {x['cpu_s']:>7.1f}s {x['tasks_per_engine']:>10} "
                  f"{x['remote_per_engine']:>9}  {changed}{'  FAILED: ' + x['log'] if x['rc'] else ''}")
            if key != "first":
                ok &= x["rc"] == 0 and changed == 0
        if not r.get("rerun"):
            ok = False
    if 1 in results and 4 in results and results[1]["rerun"] and results[4]["rerun"]:
        ratio = results[4]["rerun"]["wall_s"] / results[1]["rerun"]["wall_s"]
        print(f"no-op rerun, 4 engines / 1 engine: {ratio:.2f}x")
    proj = project({n: r for n, r in results.items() if r.get("rerun")})
    if proj:
        print(f"\nprojection, no-op rerun of {proj['hosts']} engine hosts at forks={proj['forks']} on {proj['cores']} cores:"
              f" wall {proj['wall_fixed_s']}s + {proj['wall_per_host_s']}s/host, controller CPU {proj['cpu_fixed_s']}s +"
              f" {proj['cpu_per_host_s']}s/host -> CPU {proj['projected_cpu_s']:.0f}s; fork-bound {proj['fork_bound_wall_s']:.0f}s,"
              f" CPU-bound {proj['cpu_bound_wall_s']:.0f}s: about {proj['projected_wall_s']:.0f}s;"
              f" {proj['runs_out_first']} runs out first")
    print(f"logs: {work}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"results": results, "projection": proj}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
