#!/usr/bin/env python3
"""Converge benchmark on the lab: wall time of a first `site.yml` converge and of a no-op rerun,
for 1 and for 2 fresh lab hosts, with the PLAY RECAP `changed` counts (the rerun must be 0).

    .venv/bin/python scripts/bench/converge.py [--json FILE] [--keep]

Manages its own lab hosts (bc1 10.77.0.71, bc2 10.77.0.72; profile h100-80gb-x4) with
lab/labctl.py in a generated inventory that reuses inventory/lab/group_vars, and removes them
at the end (--keep leaves them up). Needs root and the lab (make setup). Exit 1 when a no-op
rerun changed something or a converge failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB_GROUP_VARS = REPO / "inventory" / "lab" / "group_vars"
HOSTS = {"bc1": "10.77.0.71", "bc2": "10.77.0.72"}
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def write_inventory(folder: Path, hosts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "group_vars").mkdir(exist_ok=True)
    for name in ("all.yml", "sglang_servers.yml"):
        link = folder / "group_vars" / name
        if not link.exists():
            link.symlink_to(LAB_GROUP_VARS / name)
    lines = ["---", "all:", "  children:", "    sglang_servers:", "      hosts:"]
    for h in hosts:
        lines += [f"        {h}:", f"          ansible_host: {HOSTS[h]}", "          lab_gpu_profile: h100-80gb-x4"]
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


def converge(inv: Path, log: Path) -> dict:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1"}
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), "site.yml"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    log.write_text(proc.stdout + proc.stderr)
    hosts = {h: v for h, v in recap(proc.stdout).items() if h in HOSTS}
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "changed": {h: v["changed"] for h, v in hosts.items()},
            "failed": {h: v["failed"] + v["unreachable"] for h, v in hosts.items()}, "log": str(log)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="leave the bench hosts up")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("converge.py: needs root (the lab)")
    work = Path(tempfile.mkdtemp(prefix="sgl-bench-converge-"))
    inv1 = write_inventory(work / "one", ["bc1"])
    inv2 = write_inventory(work / "two", ["bc1", "bc2"])
    results: dict[str, dict] = {}
    try:
        labctl("down", "-i", str(inv2))  # fresh hosts, whatever an earlier run left
        for label, inv in (("1 host", inv1), ("2 hosts", inv2)):
            labctl("down", "-i", str(inv2))
            labctl("up", "-i", str(inv))
            first = converge(inv, work / f"{label.replace(' ', '-')}-first.log")
            rerun = converge(inv, work / f"{label.replace(' ', '-')}-rerun.log") if first["rc"] == 0 else None
            results[label] = {"first": first, "rerun": rerun}
    finally:
        if not a.keep:
            labctl("down", "-i", str(inv2))

    ok = True
    print(f"{'hosts':8} {'first converge':>15}  {'changed':28} {'no-op rerun':>12}  {'changed':28}")
    for label, r in results.items():
        first, rerun = r["first"], r["rerun"]
        rerun_changed = sum(rerun["changed"].values()) if rerun else None
        ok &= first["rc"] == 0 and rerun is not None and rerun["rc"] == 0 and rerun_changed == 0
        print(f"{label:8} {first['wall_s']:>14.1f}s  {json.dumps(first['changed']):28} "
              f"{(str(rerun['wall_s']) + 's') if rerun else 'n/a':>12}  "
              f"{json.dumps(rerun['changed']) if rerun else 'n/a':28}")
        if first["rc"] or (rerun and rerun["rc"]):
            print(f"  FAILED: see {first['log'] if first['rc'] else rerun['log']}")
        elif rerun_changed:
            print(f"  NOT IDEMPOTENT: the rerun changed {rerun['changed']} (see {rerun['log']})")
    print(f"logs: {work}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
