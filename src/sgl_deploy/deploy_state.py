"""Deploy state of an engine host: the local fact ``/etc/ansible/facts.d/sglang.fact``.

The serve role writes it (JSON, :func:`build`) after the readiness gate passed, so it always
describes a version that started: the SGLang version and venv, the model (id, revision, path,
served name), the full command (``argv``, its sha256, and the ``ExecStart=`` text the unit runs),
the port and a summary of the plan. Ansible shows it as ``ansible_local.sglang``.

Readers (the serve role's backup step for rollback and the redeploy report, ``sgl-deploy status``)
call :func:`read`: the fact when it is there and valid, else, for hosts deployed before the fact
existed, the same fields recovered from the unit text (:func:`from_unit`; ``source: unit``).
Nothing else parses unit text.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from sgl_deploy.argv import split_exec_start

FACT_DIR = "/etc/ansible/facts.d"
FACT_PATH = f"{FACT_DIR}/sglang.fact"  # sglang_service_name's default


def fact_path(service: str = "sglang") -> str:
    """The fact file of a service (``sglang_service_name``): ``ansible_local.<service>``."""
    return f"{FACT_DIR}/{service}.fact"
SCHEMA = 1
PLAN_KEYS = ("sglang_version", "gpus_per_node", "tp_size", "ep_size", "dp_size", "pp_size", "nnodes", "node_rank",
             "dist_init_addr", "mem_fraction_static", "context_length", "max_total_tokens")
# the unit template's comment line: "# SGLang serving <model_id>@<revision>"
_SERVING_RE = re.compile(r"^# SGLang serving (\S+)@(\S+)\s*$", re.M)


def argv_sha256(argv: list[str]) -> str:
    """sha256 of the command as a JSON list (launcher, server args, --config)."""
    return hashlib.sha256(json.dumps([str(a) for a in argv]).encode()).hexdigest()


def _flag(argv: list[str], flag: str) -> str:
    try:
        return str(argv[argv.index(flag) + 1])
    except (ValueError, IndexError):
        return ""


def build(plan: Mapping[str, Any], install: Mapping[str, Any], exec_start: str, unit: str) -> dict[str, Any]:
    """The fact's content: from the plan fact, the install result and the unit's ``ExecStart=`` text
    (what the unit runs, ``%d`` specifier included)."""
    argv = split_exec_start(exec_start)
    return {
        "schema": SCHEMA,
        "unit": unit,
        "version": str(install.get("version") or plan.get("sglang_version") or ""),
        "venv": str(install.get("venv_path") or ""),
        "model": {
            "id": str(plan.get("model_id") or ""),
            "revision": str(plan.get("model_revision") or ""),
            "path": str(plan.get("model_path") or ""),
            "served_model_name": str(plan.get("served_model_name") or ""),
        },
        "exec_start": exec_start,
        "argv": argv,
        "argv_sha256": argv_sha256(argv),
        "port": int(plan.get("port") or _flag(argv, "--port") or 0),
        "plan": {k: plan.get(k) for k in PLAN_KEYS if k in plan},
    }


def parse_fact(text: str | None) -> dict[str, Any] | None:
    """The fact file's content, or None when it is missing, not JSON or not this schema."""
    if not text or not str(text).strip():
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("argv"), list):
        return None
    if not isinstance(data.get("model"), dict) or not data.get("exec_start"):
        return None
    return data


def from_unit(unit_text: str | None) -> dict[str, Any] | None:
    """Fallback for a host deployed before the fact existed: the same fields from the unit text
    (its ``ExecStart=`` line and the template's ``# SGLang serving id@revision`` comment). The
    version and venv are not in the unit: empty here (readers take them from the venv link)."""
    text = str(unit_text or "")
    line = next((ln for ln in text.splitlines() if ln.startswith("ExecStart=")), "")
    if not line:
        return None
    exec_start = line[len("ExecStart="):]
    argv = split_exec_start(exec_start)
    serving = _SERVING_RE.search(text)
    return {
        "schema": SCHEMA,
        "unit": "",
        "version": "",
        "venv": "",
        "model": {
            "id": serving.group(1) if serving else "",
            "revision": serving.group(2) if serving else "",
            "path": _flag(argv, "--model-path"),
            "served_model_name": _flag(argv, "--served-model-name"),
        },
        "exec_start": exec_start,
        "argv": argv,
        "argv_sha256": argv_sha256(argv),
        "port": int(_flag(argv, "--port") or 0),
        "plan": {},
    }


def read(fact_text: str | None, unit_text: str | None = None) -> dict[str, Any]:
    """The deploy state: the fact (``source: fact``), else the unit (``source: unit``), else
    ``{"source": "none"}`` (nothing deployed)."""
    state = parse_fact(fact_text)
    if state is not None:
        return {**state, "source": "fact"}
    state = from_unit(unit_text)
    if state is not None:
        return {**state, "source": "unit"}
    return {"source": "none"}


def summary(state: Mapping[str, Any]) -> dict[str, Any]:
    """The flat view the backup step and the redeploy report use (``argv_sha1``: sha1 of the
    ``ExecStart=`` text, the report's field)."""
    model = state.get("model") or {}
    exec_start = str(state.get("exec_start") or "")
    return {
        "source": state.get("source", "none"),
        "sglang_version": str(state.get("version") or ""),
        "venv": str(state.get("venv") or ""),
        "model_id": str(model.get("id") or ""),
        "model_revision": str(model.get("revision") or ""),
        "model_path": str(model.get("path") or ""),
        "served_model_name": str(model.get("served_model_name") or ""),
        "port": str(state.get("port") or ""),
        "exec_start": exec_start,
        "argv_sha1": hashlib.sha1(exec_start.encode()).hexdigest() if exec_start else "",
        "argv_sha256": str(state.get("argv_sha256") or ""),
    }
