"""The shipped inventory/production.example works: a copy, filled as README.md's "Real GPU hosts" steps
say (addresses, the API key encrypted with `ansible-vault encrypt_string`), passes
`ansible-playbook playbooks/validate.yml` -- the validation play site.yml runs first, on the
controller only: the example's hosts need not exist and none is contacted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "production.example"
BIN = Path(sys.executable).parent
KEY_VAR = "vault_sglang_service_api_key"

pytestmark = pytest.mark.skipif(not (BIN / "ansible-playbook").exists(), reason="needs ansible-playbook (make setup)")


def readme_steps() -> list[str]:
    """The shell lines of README.md's "Real GPU hosts" block."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Real GPU hosts", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def filled_copy(tmp_path: Path, key: str) -> tuple[Path, Path]:
    """cp -r the example, set addresses, append the encrypted key the README's way; (hosts.yml, password file)."""
    inv = tmp_path / "prod"
    shutil.copytree(EXAMPLE, inv)
    hosts = inv / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("10.20.0.", "192.0.2."))  # the operator's addresses (TEST-NET)
    password = tmp_path / "vault-pass"
    password.write_text("example-vault-password\n")
    enc = subprocess.run([str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(password),
                          "--name", KEY_VAR, key], capture_output=True, text=True, env=env(), timeout=120)
    assert enc.returncode == 0, enc.stderr
    with (inv / "group_vars" / "sglang_servers.yml").open("a") as f:
        f.write("\n" + enc.stdout)
    return hosts, password


def validate(hosts: Path, password: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ansible-playbook"), "-v", "-i", str(hosts), "--vault-password-file", str(password),
                           "playbooks/validate.yml"], cwd=REPO, capture_output=True, text=True, env=env(), timeout=300)


def test_readme_steps_and_the_example_name_the_same_vault_variable():
    steps = readme_steps()
    assert steps[0].startswith("cp -r inventory/production.example inventory/prod")
    encrypt = next(s for s in steps if s.startswith("ansible-vault encrypt_string"))
    assert f"--name {KEY_VAR} " in encrypt and encrypt.endswith(">> inventory/prod/group_vars/sglang_servers.yml")
    servers = yaml.safe_load((EXAMPLE / "group_vars" / "sglang_servers.yml").read_text())
    assert servers["sglang_service_api_key"] == "{{ %s }}" % KEY_VAR
    assert KEY_VAR not in servers  # the operator adds it (encrypted): nothing secret ships
    comments = (EXAMPLE / "group_vars" / "sglang_servers.yml").read_text()
    assert f"encrypt_string --name {KEY_VAR} " in comments  # the comment names the variable the file reads
    assert any(s.startswith("ansible-playbook -i inventory/prod/hosts.yml site.yml") for s in steps)
    assert any(s.startswith("make verify INVENTORY=inventory/prod/hosts.yml") for s in steps)


def test_example_pins_no_gateway_that_smg_never_had():
    routers = yaml.safe_load((EXAMPLE / "group_vars" / "sglang_routers.yml").read_text()) or {}
    version = str(routers.get("sglang_router_version", ""))
    assert not version.startswith("0."), version  # smg starts at 1.x; 0.3.2 was the last sglang-router


def test_example_comments_agree_with_the_plan():
    from sgl_deploy import gpu_facts, planner

    h200 = gpu_facts.gpu_facts((REPO / "tests/fixtures/gpu/h200-141gb-x8/nvidia-smi-q-x.txt").read_text())
    p = planner.plan(gpu_facts=h200)  # gpu-8x144-01: nothing set in its host_vars
    assert (p["tp_size"], p["ep_size"], p["mem_fraction_static"], p["recipe_cell"]) == (8, 1, 0.75, "h200-bf16")
    assert 140_000 <= p["max_total_tokens"] <= 150_000  # "about 146K tokens"
    hosts = (EXAMPLE / "hosts.yml").read_text()
    assert "--tp-size 8 --ep-size 8" not in hosts and "--tp-size 8 (ep 1)" in hosts
    m27 = planner.plan(gpus_per_node=4, gpu_memory_gb=96, profile="minimax-m2.7")  # gpu-4x96-01
    assert (m27["tp_size"], m27["ep_size"]) == (4, 1) and 420_000 <= m27["max_total_tokens"] <= 430_000


def test_filled_example_validates_with_no_host_contacted(tmp_path):
    hosts, password = filled_copy(tmp_path, "sk-example-0123456789")
    run = validate(hosts, password)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "3 host(s) validated: no bad value" in run.stdout, run.stdout[-4000:]
    assert "UNREACHABLE" not in run.stdout


def test_the_vaulted_key_is_really_checked(tmp_path):
    """The encrypted key reaches the rules (decrypted with the vault password): a key pasted with a
    space is refused, naming the variable, with the secret masked."""
    hosts, password = filled_copy(tmp_path, "sk-example with-a-space")
    run = validate(hosts, password)
    assert run.returncode != 0
    assert "sglang_service_api_key = <secret, 23 chars>: contains whitespace" in run.stdout, run.stdout[-4000:]
    assert "sk-example with-a-space" not in run.stdout
