"""Every module in plugins/modules renders with ansible-doc, and its DOCUMENTATION options are its
argument spec (names, types, elements, defaults, required): one interface, documented as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from module_harness import REPO, load_module

pytest.importorskip("ansible")
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))
UTILS = tuple(sorted(p.stem for p in (REPO / "plugins" / "module_utils").glob("*.py")))


def test_there_are_modules():
    assert {"sgl_sglang_check", "sgl_router_workers", "sgl_ready"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders(name):
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-M", "plugins/modules", "-j", name],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)[name]
    assert doc["doc"]["options"] and doc["examples"].strip() and doc["return"], name
    assert doc["doc"]["attributes"]["check_mode"]["support"] in ("full", "partial"), name


def spec_problems(documented: dict, spec: dict) -> list[str]:
    out = []
    for key in sorted(set(documented) | set(spec)):
        if key not in spec or key not in documented:
            out.append(f"{key}: {'not in the argument spec' if key not in spec else 'not documented'}")
            continue
        doc, arg = documented[key], spec[key]
        for field, fallback in (("type", "str"), ("elements", None), ("default", None), ("required", False)):
            if doc.get(field, fallback) != arg.get(field, fallback):
                out.append(f"{key}: {field} documented {doc.get(field, fallback)!r}, spec {arg.get(field, fallback)!r}")
    return out


@pytest.mark.parametrize("name", MODULES)
def test_documentation_is_the_argument_spec(name):
    module = load_module(name, UTILS)
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    assert spec_problems(documented, module.ARGUMENT_SPEC) == []
    yaml.safe_load(module.EXAMPLES)
    yaml.safe_load(module.RETURN)


def test_spec_problems_can_fail():
    assert spec_problems({"a": {"type": "int"}}, {"a": {"type": "str"}, "b": {}}) == [
        "a: type documented 'int', spec 'str'", "b: not documented"]
