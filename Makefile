# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export UV_CACHE_DIR ?= /var/cache/sgl-lab/uv
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
LAB_INVENTORY ?= inventory/lab/hosts.yml
INVENTORY ?= inventory/lab/hosts.yml

.PHONY: setup demo test unit lab-test lint lab-up lab-down lab-status verify bench clean

setup: $(VENV)/.setup-stamp
$(VENV)/.setup-stamp: scripts/setup.sh requirements/controller.txt pyproject.toml
	scripts/setup.sh
	touch $@

## demo: provision the local lab end to end with site.yml and print the probe report
demo: setup
	scripts/demo.sh

## test: every test (setup, ruff, lint, unit, lab: site.yml on real systemd hosts, probes, molecule),
## each stage timed against its budget (scripts/test.sh); its first stage is `make setup`'s script
test:
	scripts/test.sh

unit: setup
	$(BIN)/pytest -q tests/unit

## lint: the ruff and lint stages of `make test` (ruff, ansible-lint, syntax-check of every playbook)
lint: setup
	TEST_STAGES="ruff lint" scripts/test.sh

## lab-test: the lab stage of `make test` (SGL_LAB=1 pytest tests/lab; PYTEST_ARGS=-k... for a subset)
lab-test: setup
	TEST_STAGES=lab scripts/test.sh

lab-up: setup
	$(BIN)/python lab/labctl.py up -i $(LAB_INVENTORY)

lab-down:
	python3 lab/labctl.py down --all

lab-status: setup
	$(BIN)/python lab/labctl.py status -i $(LAB_INVENTORY)

## verify: run the testinfra suite against a real fleet: make verify INVENTORY=inventory/<yours>
verify: setup
	$(BIN)/pytest -p no:cacheprovider tests/infra --hosts='ansible://sglang_servers' --ansible-inventory=$(INVENTORY) -v

bench: setup
	scripts/bench/run_all.sh

clean:
	rm -rf .cache reports artifacts
