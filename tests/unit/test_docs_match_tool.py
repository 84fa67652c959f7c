"""Docs match the tool (issue 28): the plan-fact table of docs/architecture.md is the Plan dataclass,
every documented `ansible-playbook` command names its inventory, the README's phase table has every
phase tag, and the Makefile's lint / lab-test targets run the stages of scripts/test.sh (one rule,
one place), which stops the lab only when it ran the lab stage."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from sgl_deploy import docs_gen, planner
from sgl_deploy.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "roles").glob("*/README.md"))]


# ---------------------------------------------------------------- the plan fact's fields


def test_architecture_plan_table_is_the_dataclass():
    table = docs_gen.documented_table((REPO / "docs" / "architecture.md").read_text())
    assert table is not None, "docs/architecture.md lost its plan-fields markers"
    assert table == planner.plan_fields_markdown(), (
        "docs/architecture.md's plan table differs from sgl_deploy.planner.Plan: run "
        "`sgl-deploy docs plan-fields --write docs/architecture.md`")
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert documented == [f.name for f in fields(planner.Plan)]
    assert len(documented) == len(fields(planner.Plan)) >= 56


def test_generator_refuses_an_undocumented_field(monkeypatch):
    monkeypatch.delitem(planner.PLAN_FIELD_DOCS, "value_origins")
    with pytest.raises(ValueError, match=r"missing \['value_origins'\]"):
        planner.plan_fields_markdown()


def test_docs_verb_prints_and_writes_the_table(tmp_path, capsys):
    assert cli_main(["docs", "plan-fields"]) == 0
    assert capsys.readouterr().out == planner.plan_fields_markdown()
    doc = tmp_path / "a.md"
    doc.write_text(f"intro\n{docs_gen.BEGIN}\n| stale |\n{docs_gen.END}\ntail\n")
    assert cli_main(["docs", "plan-fields", "--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{docs_gen.END}\ntail\n") and "| stale |" not in text
    assert docs_gen.documented_table(text) == planner.plan_fields_markdown()
    (tmp_path / "b.md").write_text("no markers\n")
    assert cli_main(["docs", "plan-fields", "--write", str(tmp_path / "b.md")]) == 2


# ---------------------------------------------------------------- commands in the docs


def _fenced_commands(text: str) -> list[str]:
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        out += [line.strip() for line in block.splitlines() if line.strip().startswith("ansible-playbook ")]
    return out


def test_every_documented_ansible_playbook_command_names_its_inventory():
    """Without -i, ansible.cfg's inventory (the lab's) is used: a production command must name its own."""
    bad = [(doc.relative_to(REPO).as_posix(), cmd) for doc in DOCS for cmd in _fenced_commands(doc.read_text())
           if not re.search(r"(^|\s)(-i|--inventory)[\s=]", cmd)]
    assert bad == []
    lifecycle = _fenced_commands((REPO / "docs" / "lifecycle.md").read_text())
    assert any("site.yml --check --diff" in c and "-i inventory/prod/hosts.yml" in c for c in lifecycle)


def _phase_tags() -> set[str]:
    tags: set[str] = set()
    for entry in yaml.safe_load((REPO / "site.yml").read_text()):
        book = yaml.safe_load((REPO / entry["ansible.builtin.import_playbook"]).read_text())
        for play in book:
            tags.update(play.get("tags") or [])
            for role in play.get("roles") or []:
                tags.update(role.get("tags") or [] if isinstance(role, dict) else [])
    return tags - {"always"}


def test_readme_phase_table_has_every_phase_tag():
    text = (REPO / "README.md").read_text()
    table = text.split("| phase (tag) | playbook | what it does |", 1)[1].split("\n\n", 1)[0]
    first_column = " ".join(row.split("|")[1] for row in table.splitlines() if row.startswith("| "))
    listed = set(re.findall(r"`([\w-]+)`", first_column))
    assert {"watchdog", "monitoring", "firewall", "serve", "router"} <= _phase_tags()
    assert _phase_tags() - listed == set()


# ---------------------------------------------------------------- Makefile and scripts/test.sh


def _make_n(target: str) -> str:
    proc = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_every_phony_target_has_a_rule():
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    rules = set(re.findall(r"^([\w-]+):", makefile, re.M))
    assert set(phony) - rules == set()
    for target in phony:
        recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)*)", makefile, re.M).group(1)
        assert recipe.strip() or target == "setup", f"make {target} has no recipe"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_lint_and_lab_test_run_the_stages_of_test_sh():
    lint = _make_n("lint")
    assert 'TEST_STAGES="ruff lint" scripts/test.sh' in lint
    assert "--syntax-check" not in lint  # the rule lives in stage_lint, which checks every playbook
    assert "TEST_STAGES=lab scripts/test.sh" in _make_n("lab-test")
    stage_lint = re.search(r"^stage_lint\(\) \{\n(.*?)^\}", (REPO / "scripts" / "test.sh").read_text(), re.M | re.S)
    assert "for pb in site.yml playbooks/*.yml" in stage_lint.group(1)


def _fake_repo(tmp_path: Path) -> tuple[Path, Path]:
    """scripts/test.sh in a tree whose .venv/bin tools only log their calls."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test.sh", root / "scripts" / "test.sh")
    log = tmp_path / "calls.log"
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "ruff", "ansible-lint", "ansible-playbook", "pytest", "molecule"):
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return root, log


@pytest.mark.parametrize("stages,stops_lab", [("ruff lint", False), ("unit", False), ("lab", True)])
def test_test_sh_stops_the_lab_only_after_the_lab_stage(tmp_path, stages, stops_lab):
    root, log = _fake_repo(tmp_path)
    env = {**os.environ, "TEST_STAGES": stages}
    env.pop("SGL_LAB_KEEP", None)
    proc = subprocess.run(["bash", str(root / "scripts" / "test.sh")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text()
    assert ("python lab/labctl.py down --all" in calls) is stops_lab, calls
    if stages == "ruff lint":
        assert "ruff check src plugins lab" in calls and "ansible-lint" in calls
        assert "ansible-playbook --syntax-check -i inventory/lab/hosts.yml site.yml" in calls
