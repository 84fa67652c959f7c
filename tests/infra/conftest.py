"""testinfra suite for a deployed fleet: `make verify INVENTORY=inventory/<yours>`.

The same files run against the lab (tests/lab), from molecule (verifier) and against real GPU
hosts. Expectations come from the inventory (host.ansible.get_variables()), with the roles'
defaults as fallbacks, so the suite checks what *this* inventory asked for.
"""

import json

import pytest

DEFAULTS = {
    "sglang_service_name": "sglang",
    "sglang_service_user": "sglang",
    "sglang_install_root": "/opt/sglang",
    "sglang_plan_sglang_version": "0.5.23",
    "sglang_plan_port": 8000,
    "sglang_service_api_key": "",
}


@pytest.fixture()
def hv(host):
    """Inventory variables of the host under test, over the role defaults."""
    values = dict(DEFAULTS)
    values.update({k: v for k, v in host.ansible.get_variables().items() if k in DEFAULTS})
    return values


@pytest.fixture()
def unit(hv):
    return f"{hv['sglang_service_name']}.service"


@pytest.fixture()
def worker_rank(host, unit):
    """True on ranks >= 1 of a multi-node group (no HTTP there)."""
    exec_start = host.run(f"systemctl show {unit} -p ExecStart --value").stdout
    return "--node-rank" in exec_start and "--node-rank 0 " not in exec_start + " "


def journal_tail(host, unit, lines=40):
    return host.run(f"journalctl -u {unit} -n {lines} --no-pager -o cat").stdout


def http_status(host, url, headers=""):
    out = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' {headers} {url}")
    return out.stdout.strip()


def as_json(text):
    return json.loads(text)
