"""README.md's "Real GPU hosts" steps, as written, on the lab: copy inventory/production.example, fill it
(the hosts, and the lab's stand-ins for GPUs, hub and engine), encrypt the API key with
`ansible-vault encrypt_string`, run site.yml, then `make verify INVENTORY=...`.

Only the hosts and the GPU captures differ from a real fleet: the copy's hosts are the converged lab's
own (lab1, lab2 with replayed 4 x H100 captures, labrouter, labmon), and each host's host_vars carry
what inventory/lab's group_vars point the roles at (the lab hub, the lab engine, the lab CA, the SSH
key). The example's own group_vars (model, pins, weights fan-out, the gateway, the vaulted key) stay as
shipped; the key is the lab's, so the run is a quick converge of the lab the session fixture `site`
built. A last site.yml with inventory/lab puts the lab back exactly for the tests after this one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml
from conftest import BIN, LAB_INVENTORY, REPO, playbook

EXAMPLE = REPO / "inventory" / "production.example"
LAB_VARS = LAB_INVENTORY.parent / "group_vars"
LAB_KEY = "lab-secret-key"  # the lab's key (inventory/lab/group_vars/sglang_servers.yml), vaulted here
HOSTS = {"sglang_servers": ["lab1", "lab2"], "sglang_routers": ["labrouter"], "monitoring": ["labmon"]}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def fill(dest: Path) -> Path:
    """Step 1-2 of the README: cp -r the example, then edit hosts.yml (and the lab's stand-ins)."""
    shutil.copytree(EXAMPLE, dest)  # cp -r inventory/production.example inventory/prod
    lab_hosts = _yaml(LAB_INVENTORY)["all"]["children"]
    children = {group: {"hosts": {h: lab_hosts[group]["hosts"][h] for h in hosts}} for group, hosts in HOSTS.items()}
    (dest / "hosts.yml").write_text("---\n" + yaml.safe_dump({"all": {"children": children}}, sort_keys=False))
    # the example's host_vars describe its own (absent) hosts; the lab hosts get the lab's stand-ins
    shutil.rmtree(dest / "host_vars")
    (dest / "host_vars").mkdir()
    shutil.copy(LAB_VARS / "all.yml", dest / "group_vars" / "all.yml")  # how Ansible reaches the lab hosts
    for group, hosts in HOSTS.items():
        stand_ins = _yaml(LAB_VARS / f"{group}.yml")
        stand_ins.pop("sglang_service_api_key", None)  # the key comes from the vault, as the README says
        for host in hosts:
            (dest / "host_vars" / f"{host}.yml").write_text("---\n" + yaml.safe_dump(stand_ins, sort_keys=False))
    return dest / "hosts.yml"


def test_readme_production_steps_on_the_lab(site, tmp_path):
    prod = tmp_path / "prod"
    hosts = fill(prod)
    password = tmp_path / "vault-pass"
    password.write_text("lab-vault-password\n")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1"}
    try:
        # ansible-vault encrypt_string --name vault_sglang_service_api_key 'your-key' >> .../sglang_servers.yml
        enc = subprocess.run([str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(password),
                              "--name", "vault_sglang_service_api_key", LAB_KEY],
                             capture_output=True, text=True, env=env, timeout=120)
        assert enc.returncode == 0, enc.stderr
        with (prod / "group_vars" / "sglang_servers.yml").open("a") as f:
            f.write("\n" + enc.stdout)
        assert LAB_KEY not in (prod / "group_vars" / "sglang_servers.yml").read_text()

        # ansible-playbook -i inventory/prod/hosts.yml site.yml --ask-vault-pass (the password from a file)
        started = time.monotonic()
        run = playbook("site.yml", "--vault-password-file", str(password), inventory=hosts, timeout=2400)
        print(f"site.yml with the filled production example: {time.monotonic() - started:.0f} s")
        assert run.rc == 0, run.out[-6000:]
        for host in ("lab1", "lab2", "labrouter"):
            assert run.recap[host]["failed"] == 0 and run.recap[host]["unreachable"] == 0, run.out[-4000:]

        # make verify INVENTORY=inventory/prod/hosts.yml
        verify = subprocess.run(["make", "-C", str(REPO), "verify", f"INVENTORY={hosts}"],
                                capture_output=True, text=True, env=env, timeout=1200)
        assert verify.returncode == 0, (verify.stdout + verify.stderr)[-6000:]
        assert " passed" in verify.stdout and " failed" not in verify.stdout, verify.stdout[-4000:]
    finally:
        restore = playbook("site.yml")  # the lab as inventory/lab has it, for the tests after this one
        assert restore.rc == 0, restore.out[-4000:]
