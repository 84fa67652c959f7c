#!/usr/bin/env bash
# make bench: every benchmark, each printing its table (converge also as JSON under reports/bench/).
#   weights.py   weights fan-out to N = 1, 4, 8, 16 hosts (pipelined tree, per-host uplinks; hub once)
#   converge.py  site.yml on 1 and 2 fresh lab hosts: first converge and no-op rerun (changed=0)
#   validate.py  fleet validation of a generated 200-host inventory (no host contacted; <= 10 s)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="$PWD/.venv/bin"
export PATH="$BIN:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
mkdir -p reports/bench
echo "== bench: weights distribution =="
"$BIN/python" scripts/bench/weights.py
echo
echo "== bench: converge =="
"$BIN/python" scripts/bench/converge.py --json reports/bench/converge.json
echo
echo "== bench: fleet validation =="
"$BIN/python" scripts/bench/validate.py --json reports/bench/validate.json
