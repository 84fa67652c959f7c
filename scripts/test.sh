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
# Each stage has a wall-time budget (seconds, below; README "Tests"): a stage that passes but runs past its
# budget fails the run, so a slow creep is caught before CI's 90-minute limit is. The budgets add up to
# 45 minutes on this project's machine size (2 cores, 24 GB) from a fresh clone.
# Env: TEST_STAGES="setup ruff lint unit lab molecule" (subset), PYTEST_ARGS, SGL_LAB_KEEP=1 (keep hosts up),
#      TEST_BUDGET_<stage>=seconds (override one budget), TEST_BUDGETS=off (report only, never fail on time).
# `make lint` runs TEST_STAGES="ruff lint", `make lab-test` TEST_STAGES=lab: each rule lives here once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BIN="$ROOT/.venv/bin"
export PATH="$BIN:$PATH" ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_NOCOLOR=1 PY_COLORS=0
STAGES="${TEST_STAGES:-setup ruff lint unit lab molecule}"
# Budgets in seconds, measured on a fresh clone (README "Tests" has the table and the measurements).
declare -A BUDGET=([setup]=90 [ruff]=30 [lint]=90 [unit]=400 [lab]=1920 [molecule]=150)
# the lab stage in one process (the default, TEST_LAB_WORKERS=0) has its own budget
[[ "${TEST_LAB_WORKERS:-0}" == 0 ]] && BUDGET[lab]=3000
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
  local start rc took budget
  start=$(date +%s)
  printf '\n\033[1m== test: %s ==\033[0m\n' "$name"
  set +e
  "$@"
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  budget_var="TEST_BUDGET_$name"
  budget="${!budget_var:-${BUDGET[$name]:-0}}"
  if [[ $rc == 0 && "${TEST_BUDGETS:-on}" != off && $budget -gt 0 && $took -gt $budget ]]; then
    echo "test: stage $name passed but took ${took}s, over its budget of ${budget}s (README \"Tests\"):" \
         "find what grew (the per-test times above), or raise the budget there and in scripts/test.sh"
    rc=124
  fi
  SUMMARY+=("$(printf '%-9s %-4s %5ss (budget %ss)' "$name" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" "$took" "$budget")")
  if [[ $rc != 0 ]]; then
    printf '%s\n' "${SUMMARY[@]}"
    echo "test: stage $name failed (exit $rc)"
    exit "$rc"
  fi
}

stage_setup() {
  # what `make setup` does (idempotent; seconds once done): timed here so a fresh clone's install counts
  scripts/setup.sh
  touch "$ROOT/.venv/.setup-stamp"
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
  # two workers, whole files per worker (module fixtures such as the lab engines start once): many
  # unit tests wait on subprocesses (the real SGLang parser imports, ansible-playbook runs)
  pytest -q -p no:cacheprovider --durations=10 -n "${TEST_UNIT_WORKERS:-2}" --dist loadfile tests/unit \
    --junitxml="$OUT/unit.xml" ${PYTEST_ARGS:-}
}

stage_lab() {
  # shellcheck disable=SC2086
  # with workers, one fleet of lab hosts per xdist group (tests/lab/conftest.py): the lab tests wait on
  # converges, polls and sleeps more than on this machine's two cores. TEST_LAB_WORKERS=0: one process.
  # Default: one process. TEST_LAB_WORKERS=3 runs the fleets side by side (lab stage about 32 min instead of
  # about 45 on 2 cores), but in 2 of 3 such runs the main lab's first converge failed on one engine host
  # while two other fleets converged beside it (docs/performance.md): parallel stays opt-in until that is
  # found and fixed.
  local workers="${TEST_LAB_WORKERS:-0}" par=()
  [[ "$workers" != 0 ]] && par=(-n "$workers" --dist loadgroup --no-loadscope-reorder)
  SGL_LAB=1 pytest -v -p no:cacheprovider --durations=0 "${par[@]}" tests/lab --junitxml="$OUT/lab.xml" ${PYTEST_ARGS:-}
}

stage_molecule() {
  (cd "$ROOT" && molecule test -s default)
}

total_start=$(date +%s)
for stage in $STAGES; do
  run_stage "$stage" "stage_$stage"
done

printf '\n%s\n' "== test summary =="
printf '%s\n' "${SUMMARY[@]}"
echo "test: all stages passed ($STAGES) in $(( $(date +%s) - total_start ))s"
