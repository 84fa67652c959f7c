#!/usr/bin/env bash
# make demo: boot the local lab (real Debian 12 systemd hosts, replayed H100 GPUs, the lab's
# ModelScope-protocol hub), run site.yml against it end to end (Prometheus on labmon included), and print
# the probe report, `sgl-deploy status` and the Prometheus URL.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
export PATH="$BIN:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
INVENTORY="${LAB_INVENTORY:-inventory/lab/hosts.yml}"

step() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }

step "lab: boot the hosts of $INVENTORY and the hub"
"$BIN/python" lab/labctl.py up -i "$INVENTORY"

step "ansible: reach every host over SSH"
ansible -i "$INVENTORY" all -m ansible.builtin.ping

step "site.yml: preflight, plan, install, weights, serve, router, monitoring, probe (default and recipe suites)"
start=$(date +%s)
# probes_suites: also run the upstream tutorial's four client requests (sgl-deploy probe --suite
# recipe, the requests of examples/) against every worker and the gateway (smg over HTTPS, verified
# against the lab CA that labctl up made: inventory/lab/group_vars/sglang_routers.yml).
ansible-playbook -i "$INVENTORY" site.yml -e '{"probes_suites": ["default", "recipe"]}' "$@"
echo "site.yml took $(( $(date +%s) - start ))s"

step "probe report (<host>: default suite, <host>-recipe: the tutorial's client requests; the default probe set must run in under 60 s against the lab engine)"
sgl-deploy report --reports reports --max-duration 60

step "sgl-deploy status (one row per engine and gateway; the last line is Prometheus)"
status_rc=0
sgl-deploy status -i "$INVENTORY" || status_rc=$?
exit "$status_rc"
