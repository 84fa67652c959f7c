#!/usr/bin/env bash
# make test: every test. Stages (each timed; the first failure stops the run):
#   ruff      ruff check over src/, plugins/ and lab/ (rules and paths in pyproject.toml)
#   lint      ansible-lint (production profile), syntax-check of every playbook
#   unit      pytest tests/unit (planner, GPU facts on real captures, hub, weights, probes against
#             broken servers, lab engine with the real SGLang parsers, redeploy runner, ...)
#   lab       pytest tests/lab with SGL_LAB=1: site.yml on real systemd hosts (nspawn), probes,
#             testinfra, idempotence, restarts, preflight refusals, multi-node, weights fan-out,
#             rolling redeploy behind sglang-router with rollback
#   molecule  molecule test (default scenario: real install from PyPI, idempotence, testinfra)
# Env: TEST_STAGES="ruff lint unit lab molecule" (subset), PYTEST_ARGS, SGL_LAB_KEEP=1 (keep hosts up).
# `make lint` runs TEST_STAGES="ruff lint", `make lab-test` TEST_STAGES=lab: each rule lives here once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BIN="$ROOT/.venv/bin"
export PATH="$BIN:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_NOCOLOR=1 PY_COLORS=0
STAGES="${TEST_STAGES:-ruff lint unit lab molecule}"
OUT="$ROOT/reports/test"
mkdir -p "$OUT"
declare -a SUMMARY=()

teardown() {
  # only a run that booted the lab stops it (`make lint` must not take down a lab someone uses)
  if [[ " $STAGES " == *" lab "* && "${SGL_LAB_KEEP:-0}" != 1 ]]; then
    "$BIN/python" lab/labctl.py down --all >/dev/null 2>&1 || true
  fi
}
trap teardown EXIT

run_stage() {
  local name="$1"; shift
  local start rc
  start=$(date +%s)
  printf '\n\033[1m== test: %s ==\033[0m\n' "$name"
  set +e
  "$@"
  rc=$?
  set -e
  SUMMARY+=("$(printf '%-9s %-4s %5ss' "$name" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" "$(( $(date +%s) - start ))")")
  if [[ $rc != 0 ]]; then
    printf '%s\n' "${SUMMARY[@]}"
    echo "test: stage $name failed (exit $rc)"
    exit "$rc"
  fi
}

stage_ruff() {
  ruff check src plugins lab
}

stage_lint() {
  ansible-lint
  local pb
  for pb in site.yml playbooks/*.yml; do
    ansible-playbook --syntax-check -i inventory/lab/hosts.yml "$pb" >/dev/null
  done
  ansible-playbook --syntax-check -i inventory/production.example/hosts.yml site.yml >/dev/null
  echo "syntax-check: site.yml and playbooks/*.yml ok"
}

stage_unit() {
  # shellcheck disable=SC2086
  pytest -q -p no:cacheprovider --durations=10 tests/unit --junitxml="$OUT/unit.xml" ${PYTEST_ARGS:-}
}

stage_lab() {
  # shellcheck disable=SC2086
  SGL_LAB=1 pytest -v -p no:cacheprovider --durations=0 tests/lab --junitxml="$OUT/lab.xml" ${PYTEST_ARGS:-}
}

stage_molecule() {
  (cd "$ROOT" && molecule test -s default)
}

for stage in $STAGES; do
  run_stage "$stage" "stage_$stage"
done

printf '\n%s\n' "== test summary =="
printf '%s\n' "${SUMMARY[@]}"
echo "test: all stages passed ($STAGES)"
