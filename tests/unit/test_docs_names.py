"""Docs name only what exists: filters, modules, action plugins and facts named in docs/*.md
and the role READMEs are checked against what the plugins export and what the roles set.

What is checked (precise patterns, so prose is not mistaken for a name):
* a filter: "filter `X`" / "filters `X`", or a pipe into an ``sgl`` name inside backticks
  (`` `plan | sgl_server_argv(parsers)` ``): X must be exported by plugins/filter/*.py;
* "action plugin `X`" / "module `X`": plugins/action/X.py / plugins/modules/X.py;
* any backticked bare ``sgl_*`` name: a filter, an action plugin, a module, a metric of the
  alert rules / Grafana dashboard, or a playbook variable (src/sgl_deploy/playbook_variables.yml);
* a fact: "fact `X`", "`X` fact", a row of a "| fact | meaning |" table: set by a ``set_fact``
  or ``register`` in roles/ or playbooks/; "plan fact `X`": a field of the planner's plan (or the
  plan fact itself);
* a backticked repo path under plugins/, src/, roles/, playbooks/, lab/, scripts/, docs/: exists.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from sgl_deploy import validate

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "roles").glob("*/README.md"))

FILTER_RE = re.compile(r"\bfilters?\s+`([^`]+)`")
PIPE_RE = re.compile(r"`[^`\n]*?\|\s*(sgl[\w.]*)")
PLUGIN_RE = re.compile(r"\b(action plugin|module)\s+`([\w.]+)`")
BARE_RE = re.compile(r"`(sgl_[a-z0-9_]+)`")
FACT_RE = re.compile(r"(?<!plan )\bfact\s+`(\w+)`|`(\w+)`\s+fact\b(?!\s+subsets?)")
PLAN_FIELD_RE = re.compile(r"\bplan fact\s+`(\w+)`")
FACT_TABLE_HEAD_RE = re.compile(r"^\|\s*fact\s*\|", re.M)
PATH_RE = re.compile(r"`((?:plugins|src|roles|playbooks|lab|scripts|docs)/[\w./-]*\w)`")


def _load_filters() -> set[str]:
    pytest.importorskip("ansible")
    names: set[str] = set()
    for path in sorted((ROOT / "plugins" / "filter").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_docs_filter_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names.update(module.FilterModule().filters())
    return names


def _stems(folder: str) -> set[str]:
    return {p.stem for p in (ROOT / folder).glob("*.py") if not p.name.startswith("_")}


def _metrics() -> set[str]:
    text = "".join(p.read_text() for p in [*(ROOT / "roles" / "monitoring" / "templates").glob("*alerts*"),
                                           *(ROOT / "templates" / "grafana").glob("*.json")])
    return set(re.findall(r"\bsgl_[a-z0-9_]+", text))


def _walk_tasks(node, out: set[str]) -> None:
    """The names tasks set or register: the validation's own walker (one rule, sgl_deploy.validate)."""
    validate._walk_fact_names(node, out)


def set_facts() -> set[str]:
    out: set[str] = set()
    for path in [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("roles/*/handlers/*.yml"),
                 *ROOT.glob("playbooks/*.yml"), ROOT / "site.yml"]:
        _walk_tasks(yaml.safe_load(path.read_text()), out)
    return out


def _playbook_variables() -> set[str]:
    """Variables the playbooks read (src/sgl_deploy/playbook_variables.yml), e.g. sgl_validate_allow_unknown."""
    return set(validate.playbook_variables())


def plan_fields() -> set[str]:
    from sgl_deploy import planner

    return set(planner.Plan.__dataclass_fields__)


def _fact_table_names(text: str) -> list[str]:
    names = []
    for head in FACT_TABLE_HEAD_RE.finditer(text):
        for line in text[head.end():].splitlines()[1:]:
            if not line.startswith("|"):
                break
            m = re.match(r"\|\s*`(\w+)`\s*\|", line)
            if m:
                names.append(m.group(1))
    return names


def problems(text: str, where: str, filters: set[str], actions: set[str], modules: set[str],
             metrics: set[str], facts: set[str], fields: set[str], variables: set[str] = frozenset()) -> list[str]:
    out = []
    for m in FILTER_RE.finditer(text):
        if m.group(1).startswith("sgl") and m.group(1) not in filters:
            out.append(f"{where}: filter `{m.group(1)}` does not exist")
    for m in PIPE_RE.finditer(text):
        if m.group(1) not in filters:
            out.append(f"{where}: filter `{m.group(1)}` does not exist")
    for m in PLUGIN_RE.finditer(text):
        kind, name = m.groups()
        if (kind == "action plugin" and name not in actions) or (kind == "module" and name.startswith("sgl")
                                                                 and name not in modules):
            out.append(f"{where}: {kind} `{name}` does not exist")
    for m in BARE_RE.finditer(text):
        if m.group(1) not in filters | actions | modules | metrics | variables:
            out.append(f"{where}: `{m.group(1)}` is no filter, module, action plugin, metric or playbook variable")
    named = [a or b for a, b in FACT_RE.findall(text)] + _fact_table_names(text)
    out += [f"{where}: fact `{n}` is set nowhere" for n in named if n not in facts]
    out += [f"{where}: plan fact `{n}` is no plan field" for n in PLAN_FIELD_RE.findall(text)
            if n not in fields | facts]
    out += [f"{where}: `{p}` does not exist" for p in PATH_RE.findall(text)
            if "<" not in p and "*" not in p and not (ROOT / p).exists()]
    return out


@pytest.fixture(scope="module")
def known():
    # callback plugins (plugins/callback) are named in the docs like action plugins
    return dict(filters=_load_filters(), actions=_stems("plugins/action") | _stems("plugins/callback"),
                modules=_stems("plugins/modules"),
                metrics=_metrics(), facts=set_facts(), fields=plan_fields(), variables=_playbook_variables())


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_names_in_docs_exist(doc, known):
    assert problems(doc.read_text(), str(doc.relative_to(ROOT)), **known) == []


def test_the_collectors_find_what_exists(known):
    assert {"sgl_plan", "sgl_server_argv", "sgl_engine_port"} <= known["filters"]
    assert "sgl_poll" in known["actions"]
    assert "sgl_router_worker_health" in known["metrics"]
    assert {"gpu_preflight_facts", "sglang_plan_result", "sglang_install_result", "sglang_router_url"} <= known["facts"]
    assert "msa_jit_warm" in known["fields"]


@pytest.mark.parametrize(("text", "needle"), [
    ("with the filter `sgl_deploy.plan` (code in planner.py)", "filter `sgl_deploy.plan`"),
    ("checks the argv (`plan | sgl_deploy.server_argv(parsers)`)", "filter `sgl_deploy.server_argv`"),
    ("the action plugin `sgl_no_such` polls", "action plugin `sgl_no_such`"),
    ("the module `sgl_no_such_module` reconciles", "module `sgl_no_such_module`"),
    ("picks parsers (`sglang_install_parsers` fact)", "fact `sglang_install_parsers`"),
    ("| fact | meaning |\n|---|---|\n| `no_such_fact` | x |\n", "fact `no_such_fact`"),
    ("plan fact `no_such_field`", "plan fact `no_such_field`"),
    ("run `sgl_nothing` first", "`sgl_nothing` is no filter"),
    ("see `plugins/filter/no_such.py`", "`plugins/filter/no_such.py` does not exist"),
])
def test_a_wrong_name_fails(text, needle, known):
    assert any(needle in p for p in problems(text, "doc", **known)), problems(text, "doc", **known)


@pytest.mark.parametrize("text", [
    "the `min`, `hardware` and `mounts` fact subsets",
    "the filter `sgl_plan` and `plan | sgl_server_argv(parsers)`",
    "the module `ansible.builtin.uri`",
    "`sgl_router_worker_health == 0`",
    "plan fact `msa_jit_warm`",
])
def test_prose_is_no_name(text, known):
    assert problems(text, "doc", **known) == []
