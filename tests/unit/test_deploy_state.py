"""The deploy-state fact (sgl_deploy.deploy_state): what serve writes, what backup/redeploy/status read."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from sgl_deploy import deploy_state as ds
from sgl_deploy import status
from sgl_deploy.argv import quote_argv

PLAN = {"model_id": "MiniMaxAI/MiniMax-M3", "model_revision": "abc123", "model_path": "/srv/models/m3/abc123",
        "served_model_name": "MiniMax-M3", "port": 8100, "sglang_version": "0.5.23", "tp_size": 4, "ep_size": 1,
        "dp_size": 1, "pp_size": 1, "nnodes": 1, "node_rank": 0, "mem_fraction_static": 0.85,
        "recipe_args": ["--x"], "warnings": ["not in the fact"]}
INSTALL = {"version": "0.5.23", "venv_path": "/opt/sglang/venvs/sglang-0.5.23"}
ARGV = ["/opt/sglang/current/bin/python", "-m", "sglang.launch_server", "--model-path", "/srv/models/m3/abc123",
        "--served-model-name", "MiniMax-M3", "--port", "8100", "--tp-size", "4", "--tool-call-parser", "minimax-m3"]
EXEC = quote_argv(ARGV) + " --config %d/sglang-config.yaml"
UNIT = f"""# Ansible managed
# SGLang serving MiniMaxAI/MiniMax-M3@abc123
[Service]
ExecStart={EXEC}
Restart=on-failure
"""


def test_build_holds_every_field():
    fact = ds.build(PLAN, INSTALL, EXEC, "sglang.service")
    assert fact["schema"] == ds.SCHEMA and fact["unit"] == "sglang.service"
    assert (fact["version"], fact["venv"], fact["port"]) == ("0.5.23", "/opt/sglang/venvs/sglang-0.5.23", 8100)
    assert fact["model"] == {"id": "MiniMaxAI/MiniMax-M3", "revision": "abc123", "path": "/srv/models/m3/abc123",
                             "served_model_name": "MiniMax-M3"}
    assert fact["argv"] == ARGV + ["--config", "%d/sglang-config.yaml"] and fact["exec_start"] == EXEC
    assert fact["argv_sha256"] == hashlib.sha256(json.dumps(fact["argv"]).encode()).hexdigest()
    assert fact["plan"]["tp_size"] == 4 and "warnings" not in fact["plan"] and "recipe_args" not in fact["plan"]
    assert ds.parse_fact(json.dumps(fact)) == fact  # JSON round trip


def test_fact_and_unit_fallback_agree():
    """A host deployed before the fact reads the same command, model and hashes from its unit."""
    fact = ds.read(json.dumps(ds.build(PLAN, INSTALL, EXEC, "sglang.service")))
    unit = ds.read(None, UNIT)
    assert (fact["source"], unit["source"]) == ("fact", "unit")
    for key in ("exec_start", "argv", "argv_sha256", "port"):
        assert fact[key] == unit[key], key
    assert fact["model"] == unit["model"]
    assert unit["version"] == "" and unit["venv"] == ""  # not in the unit
    s_fact, s_unit = ds.summary(fact), ds.summary(unit)
    assert s_fact["argv_sha1"] == s_unit["argv_sha1"] == hashlib.sha1(EXEC.encode()).hexdigest()
    assert s_fact["model_id"] == "MiniMaxAI/MiniMax-M3" and s_fact["port"] == "8100"
    assert s_fact["sglang_version"] == "0.5.23" and s_unit["sglang_version"] == ""


@pytest.mark.parametrize("text", [None, "", "not json", "[]", json.dumps({"schema": 99, "argv": []}),
                                  json.dumps({"schema": ds.SCHEMA, "argv": "a b", "model": {}, "exec_start": "x"})])
def test_a_bad_fact_falls_back_to_the_unit(text):
    assert ds.parse_fact(text) is None
    assert ds.read(text, UNIT)["source"] == "unit"


def test_nothing_deployed():
    assert ds.read(None, "[Service]\nType=exec\n") == {"source": "none"}
    assert ds.summary(ds.read(None, None))["exec_start"] == "" and ds.summary({})["argv_sha1"] == ""


def test_unit_without_the_serving_comment():
    state = ds.from_unit(f"[Service]\nExecStart={EXEC}\n")
    assert state["model"]["id"] == "" and state["model"]["path"] == "/srv/models/m3/abc123"


def test_status_engine_script_reads_the_fact(tmp_path):
    """The stdlib script status runs on the host: it returns the fact text and the manifest of the
    fact's model path."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "MANIFEST.json").write_text(json.dumps({"model_id": "MiniMaxAI/MiniMax-M3", "revision": "abc123"}))
    fact = tmp_path / "sglang.fact"
    fact.write_text(json.dumps(ds.build({**PLAN, "model_path": str(model)}, INSTALL, EXEC, "sglang.service")))
    proc = subprocess.run([sys.executable, "-", "sgl-no-such-unit", str(tmp_path), "0", str(fact)],
                          input=status.ENGINE_SCRIPT, capture_output=True, text=True, timeout=60, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ds.parse_fact(out["fact"])["model"]["path"] == str(model)
    assert out["manifest"] == {"model_id": "MiniMaxAI/MiniMax-M3", "revision": "abc123"}
