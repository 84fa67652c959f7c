#!/usr/bin/env python3
"""Validation benchmark: wall time of `playbooks/validate.yml` (the fleet validation every playbook
runs first) on a generated inventory of N hosts, with no host contacted (TEST-NET addresses that
would not answer; the validation runs on the controller only).

    .venv/bin/python scripts/bench/validate.py [--hosts 200] [--routers 4] [--json FILE]

Two runs: a clean inventory (passes) and one where every host carries a bad value (fails with
one line per host). Prints a table; exit 1 when a run is slower than --target-s (default 10) or
does not end as expected.
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
ELAPSED = re.compile(r"elapsed_s: ([\d.]+)")


def write_inventory(folder: Path, servers: int, routers: int, bad: bool) -> Path:
    """N servers in replica groups of 2 (every other pair) and a few routers; the lab's group_vars."""
    (folder / "group_vars").mkdir(parents=True, exist_ok=True)
    for name in ("all.yml", "sglang_servers.yml", "sglang_routers.yml"):
        (folder / "group_vars" / name).write_text((LAB_GROUP_VARS / name).read_text())
    names = [f"gpu{i:03d}" for i in range(servers)]
    replicas = {f"pair{i}": [names[i], names[i + 1]] for i in range(0, servers - 1, 4)}
    hosts: dict = {}
    for i, name in enumerate(names):
        hv = {"ansible_host": f"192.0.2.{i % 250 + 1}", "sglang_plan_port": 8000 + i % 3}
        if bad:
            hv.update([
                ("sglang_plan_model_revision", "../escape"), ("sglang_service_api_key", "key\n"),
                ("sglang_plan_extra_args", "--enable-foo"), ("probes_skip", ["nope"]),
            ][i % 4:i % 4 + 1])
        hosts[name] = hv
    routers_ = {f"router{i}": {"ansible_host": f"198.51.100.{i + 1}"} for i in range(routers)}
    inv = {"all": {"vars": {"sglang_replicas": replicas}, "children": {
        "sglang_servers": {"hosts": hosts}, "sglang_routers": {"hosts": routers_}}}}
    path = folder / "hosts.yml"
    path.write_text(json.dumps(inv, indent=1))  # JSON is YAML
    return path


def run(inventory: Path) -> dict:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PYTHONPATH": str(REPO / "src"),
           "ANSIBLE_NOCOLOR": "1"}
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-v", "-i", str(inventory), str(REPO / "playbooks/validate.yml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    out = proc.stdout + proc.stderr
    m = ELAPSED.search(out)
    lines = len(set(re.findall(r"^\s+(\S+: \S+ = .*Fix: .*)$", out, re.M)))  # Ansible shows the message twice
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "plugin_s": float(m.group(1)) if m else None,
            "problem_lines": lines, "unreachable": "UNREACHABLE" in out, "tail": out[-1500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=200, help="hosts in all (servers + routers)")
    ap.add_argument("--routers", type=int, default=4)
    ap.add_argument("--target-s", type=float, default=10.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    servers = args.hosts - args.routers
    rows = []
    with tempfile.TemporaryDirectory(prefix="sgl-bench-validate-") as tmp:
        for label, bad in (("clean inventory", False), ("a bad value per server", True)):
            res = run(write_inventory(Path(tmp) / label.replace(" ", "-"), servers, args.routers, bad))
            res.update(case=label, hosts=args.hosts,
                       ok=(res["rc"] == 0) != bad and not res["unreachable"] and (not bad or res["problem_lines"] >= servers))
            rows.append(res)
    print(f"{'case':<26} {'hosts':>5} {'rc':>3} {'wall s':>7} {'plugin s':>8} {'problem lines':>13}  verdict")
    for r in rows:
        verdict = "ok" if r["ok"] and r["wall_s"] <= args.target_s else (
            f"SLOW (> {args.target_s:g} s)" if r["ok"] else "UNEXPECTED")
        print(f"{r['case']:<26} {r['hosts']:>5} {r['rc']:>3} {r['wall_s']:>7.2f} {r['plugin_s'] or 0:>8.2f} "
              f"{r['problem_lines']:>13}  {verdict}")
        if not r["ok"]:
            print(r["tail"])
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "tail"} for r in rows], indent=1))
    return 0 if all(r["ok"] and r["wall_s"] <= args.target_s for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
