#!/usr/bin/env bash
# Real-GPU validation of the preflight and the planner on the machine this runs on (connection
# local; no systemd, network or SGLang needed). Writes everything it saw to OUTDIR:
#   nvidia-smi-q-x.txt, topo.txt, fabric.txt   captures in the fixtures format (tests/fixtures/gpu)
#   gpu-facts.json                             sgl-deploy gpu-facts
#   plans.txt                                  sgl-deploy plan for the recipe and the M3 profiles
#   preflight-*.log                            playbooks/preflight.yml runs (default inputs, and
#                                              with the weights root and size that this disk holds)
# Usage: scripts/hardware/validate.sh OUTDIR   (ansible-core must be importable; see the doc)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:?usage: validate.sh OUTDIR}"
mkdir -p "$OUT"
export LC_ALL=C.UTF-8 ANSIBLE_CONFIG="$PWD/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_CALLBACK_RESULT_FORMAT=yaml
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${HW_PYTHON:-python3}"
SGL=("$PY" -m sgl_deploy.cli)
ANS_PB=("$PY" -m ansible playbook)
"$PY" -c 'import ansible' 2>/dev/null || ANS_PB=(ansible-playbook)

# One query, kept in the fixtures' capture format (`$ cmd` header, output, `rc=N`); gpu-facts reads it as is.
{ echo "\$ nvidia-smi -q -x"; nvidia-smi -q -x; echo "rc=$?"; } > "$OUT/nvidia-smi-q-x.txt"
{ echo "\$ nvidia-smi topo -m"; nvidia-smi topo -m; echo "rc=$?"; } > "$OUT/topo.txt" 2>&1
{
  echo "\$ nvidia-smi -q | grep -iA3 fabric"; nvidia-smi -q | grep -iA3 fabric
  echo "\$ pgrep -a nv-fabricmanager"; pgrep -a nv-fabricmanager || echo "(no nv-fabricmanager process)"
  echo "\$ command -v nv-fabricmanager"; command -v nv-fabricmanager || echo "(not installed)"
  echo "\$ systemctl is-active nvidia-fabricmanager"; systemctl is-active nvidia-fabricmanager 2>&1 || true
  echo "\$ nvidia-smi nvlink --status | head -20"; nvidia-smi nvlink --status 2>&1 | head -20
} > "$OUT/fabric.txt" 2>&1
{ echo "\$ uname -a; cat /etc/os-release; df -B1 / /tmp; free -b; nproc; python3 --version"; uname -a; cat /etc/os-release
  df -B1 / /tmp 2>&1; free -b; nproc; "$PY" --version; } > "$OUT/host.txt" 2>&1

"${SGL[@]}" gpu-facts --nvidia-smi-xml "$OUT/nvidia-smi-q-x.txt" --topo "$OUT/topo.txt" --json > "$OUT/gpu-facts.json"
echo "gpu-facts rc=$?"

{
  for args in "--profile minimax-m3" "--profile minimax-m3 --weights-gb 220 --kv-gb-per-mtok 240" \
              "--profile minimax-m3 --nodes 2" "--profile minimax-m2.7"; do
    echo "\$ sgl-deploy plan --gpu-facts gpu-facts.json $args --json"
    # shellcheck disable=SC2086
    "${SGL[@]}" plan --gpu-facts "$OUT/gpu-facts.json" $args --json
    echo "rc=$?"
  done
} > "$OUT/plans.txt" 2>&1

# 1: the defaults a user gets (weights root /srv/models, M3 profile, size from the profile).
"${ANS_PB[@]}" -i scripts/hardware/inventory.yml playbooks/preflight.yml \
  -e sglang_plan_weights_size_from_hub=false > "$OUT/preflight-default.log" 2>&1
echo "preflight default rc=$?"
# 2: the recipe's sizes (220 GB weights, 240 GB KV per 1M tokens) with the weights on /tmp.
"${ANS_PB[@]}" -i scripts/hardware/inventory.yml playbooks/preflight.yml \
  -e sglang_plan_weights_size_from_hub=false -e sglang_plan_weights_root=/tmp/sgl-models \
  -e sglang_plan_weights_gb=220 -e sglang_plan_kv_gb_per_mtok=240 > "$OUT/preflight-recipe.log" 2>&1
echo "preflight recipe rc=$?"
# 3: inputs this machine can hold (a weights size that fits its GPUs and disk), so every check runs.
"${ANS_PB[@]}" -i scripts/hardware/inventory.yml playbooks/preflight.yml \
  -e sglang_plan_weights_size_from_hub=false -e sglang_plan_weights_root=/tmp/sgl-models \
  -e "${HW_FIT_EXTRA:-sglang_plan_weights_gb=20 sglang_plan_disk_margin_gb=5}" -v > "$OUT/preflight-fit.log" 2>&1
echo "preflight fit rc=$?"
