"""The internal role _uv_venv is the one copy of the uv bootstrap, venv and prune steps: the install
and router roles include it (with every required parameter of the entry point) and do none of it themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPECS = yaml.safe_load((ROOT / "roles/_uv_venv/meta/argument_specs.yml").read_text())["argument_specs"]
# what only _uv_venv may run
UV_STEPS = ("tools/bin/uv venv", "pip install --quiet uv==", "/tools/bin/uv'", "'pip', 'install', '--python'")


def includes(path: Path) -> list[dict]:
    tasks = yaml.safe_load(path.read_text()) or []
    return [t for t in tasks if (t.get("ansible.builtin.include_role") or {}).get("name") == "_uv_venv"]


def missing_required(include: dict) -> list[str]:
    entry = include["ansible.builtin.include_role"]["tasks_from"]
    options = SPECS[entry].get("options") or {}
    required = [k for k, o in options.items() if o.get("required")]
    return [k for k in required if k not in (include.get("vars") or {})]


def task_files():
    return sorted(p for p in ROOT.glob("roles/*/tasks/*.yml") if p.parent.parent.name != "_uv_venv")


@pytest.mark.parametrize(("role", "entries"), [("sglang_install", {"bootstrap", "venv", "prune"}),
                                               ("sglang_router", {"bootstrap", "venv", "prune"})])
def test_roles_use_the_shared_role(role, entries):
    found = [i for p in sorted((ROOT / "roles" / role / "tasks").glob("*.yml")) for i in includes(p)]
    assert {i["ansible.builtin.include_role"]["tasks_from"] for i in found} == entries
    for include in found:
        assert missing_required(include) == [], include["name"]


def test_no_second_copy_of_the_uv_steps():
    found = [f"{p.relative_to(ROOT)}: {step}" for p in task_files() for step in UV_STEPS if step in p.read_text()]
    assert found == []


def test_the_role_refuses_to_run_alone():
    main = yaml.safe_load((ROOT / "roles/_uv_venv/tasks/main.yml").read_text())
    assert "ansible_parent_role_names" in str(main[0]["ansible.builtin.assert"]["that"])


def test_missing_required_can_fail():
    include = {"ansible.builtin.include_role": {"name": "_uv_venv", "tasks_from": "prune"},
               "vars": {"_uv_venv_root": "/opt/x"}}
    assert set(missing_required(include)) == {"_uv_venv_path", "_uv_venv_pattern", "_uv_venv_keep"}
