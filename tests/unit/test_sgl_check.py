"""The module sgl_sglang_check (plugins/modules) and its check code (plugins/module_utils/sgl_sglang_check.py):
the argv is a list (JSON-valued extra args pass unchanged to the real SGLang parser), parser choice from
preferences, the cache, check mode (with and without the venv), and the answer on failure."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from module_harness import REPO, FakeModule, load_module, load_module_utils

pytest.importorskip("ansible")
utils = load_module_utils("sgl_sglang_check")
mod = load_module("sgl_sglang_check", ("sgl_sglang_check",))
SGLANG_PY = REPO / ".venv-sglang/bin/python"
JSON_VALUE = '{"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}'


def test_resolve_argv_replaces_only_whole_placeholders():
    argv = ["--tool-call-parser", "{tool_call_parser}", "--reasoning-parser", "{reasoning_parser}",
            "--json-model-override-args", JSON_VALUE, "--x", "{tool_call_parser} inside", "a b 'c' \"d\"", "{}"]
    out = utils.resolve_argv(argv, {"tool_call_parser": "minimax-m2", "reasoning_parser": None})
    assert out == ["--tool-call-parser", "minimax-m2", "--reasoning-parser", "", "--json-model-override-args",
                   JSON_VALUE, "--x", "{tool_call_parser} inside", "a b 'c' \"d\"", "{}"]
    assert utils.resolve_argv(json.dumps(argv), {})[5] == JSON_VALUE  # the JSON text of the list works too
    with pytest.raises(ValueError):
        utils.resolve_argv("--a b", {})


def test_build_request():
    req = utils.build_request("0.5.23", ["A"], ["t1", "t2"], [], ["--x", 1], ["api-key"], "code")
    assert req["config"] == {"api-key": "placeholder"} and req["argv"] == ["--x", "1"]
    assert req["check"] != utils.build_request("0.5.23", ["A"], ["t1", "t2"], [], ["--x", 1], ["api-key"], "code2")["check"]
    assert "config" not in utils.build_request("", [], [], [], [], [])
    assert utils.first_choices(req) == {"tool_call_parser": "t1", "reasoning_parser": None}


# --------------------------------------------------------------------------- a fake installed SGLang

FAKE_SERVER_ARGS = '''
import argparse
class ServerArgs:
    @staticmethod
    def add_cli_args(parser):
        parser.add_argument("--model-path")
        parser.add_argument("--tool-call-parser", choices=["minimax-m2", "qwen"])
        parser.add_argument("--reasoning-parser", choices=["minimax"])
        parser.add_argument("--config")
def prepare_server_args(argv):
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return parser.parse_args(argv)
'''


@pytest.fixture
def venv(tmp_path):
    """A 'venv python': this interpreter with a fake sglang 0.5.23 on its path."""
    site = tmp_path / "site"
    (site / "sglang/srt/models").mkdir(parents=True)
    (site / "sglang/__init__.py").write_text("")
    (site / "sglang/srt/__init__.py").write_text("")
    (site / "sglang/srt/server_args.py").write_text(FAKE_SERVER_ARGS)
    (site / "sglang/srt/models/m3.py").write_text("class MiniMaxM3ForCausalLM:\n    pass\n")
    (site / "sglang-0.5.23.dist-info").mkdir()
    (site / "sglang-0.5.23.dist-info/METADATA").write_text("Metadata-Version: 2.1\nName: sglang\nVersion: 0.5.23\n")
    python = tmp_path / "venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


def params(python, tmp_path, **kw):
    return {"python": str(python), "version": "0.5.23", "architectures": ["MiniMaxM3ForCausalLM"],
            "tool_call_parser": ["minimax-m3", "minimax-m2"], "reasoning_parser": ["minimax"],
            "argv": ["--model-path", "/m", "--tool-call-parser", "{tool_call_parser}",
                     "--reasoning-parser", "{reasoning_parser}"],
            "config_keys": ["api-key"], "cache": str(tmp_path / "cache.json"), **kw}


def test_check_answers_writes_the_cache_and_reuses_it(venv, tmp_path):
    m = FakeModule(mod.ARGUMENT_SPEC, params(venv, tmp_path))
    out = mod.run(m)
    assert out["ok"] and out["verified"] and not out["cached"] and out["changed"], out
    assert out["parsers"] == {"tool_call_parser": "minimax-m2", "reasoning_parser": "minimax"}
    assert out["argv"] == ["--model-path", "/m", "--tool-call-parser", "minimax-m2", "--reasoning-parser", "minimax"]
    assert out["version"] == "0.5.23" and "qwen" in out["choices"]["tool_call_parser"]
    assert json.loads((tmp_path / "cache.json").read_text())["result"]["ok"]
    again = FakeModule(mod.ARGUMENT_SPEC, params(venv, tmp_path))
    out2 = mod.run(again)
    assert out2["cached"] and not out2["changed"] and again.commands == []  # no SGLang import
    assert out2["argv"] == out["argv"]


def test_check_mode_runs_the_check_but_writes_no_cache(venv, tmp_path):
    m = FakeModule(mod.ARGUMENT_SPEC, params(venv, tmp_path), check_mode=True)
    out = mod.run(m)
    assert out["ok"] and out["verified"] and out["changed"] and m.commands
    assert not (tmp_path / "cache.json").exists()


def test_check_mode_without_the_venv(tmp_path):
    m = FakeModule(mod.ARGUMENT_SPEC, params(tmp_path / "none/bin/python", tmp_path), check_mode=True)
    out = mod.run(m)
    assert out["ok"] and not out["verified"] and out["changed"] and m.commands == []
    assert out["parsers"] == {"tool_call_parser": "minimax-m3", "reasoning_parser": "minimax"}
    assert "minimax-m3" in out["argv"] and not (tmp_path / "cache.json").exists()


def test_a_run_without_the_venv_is_an_error(tmp_path):
    out = mod.run(FakeModule(mod.ARGUMENT_SPEC, params(tmp_path / "none/bin/python", tmp_path)))
    assert not out["ok"] and "does not exist" in out["errors"][0] and not out["changed"]


@pytest.mark.parametrize(("change", "needle"), [
    ({"tool_call_parser": ["no-such"]}, "none of the tool-call-parsers ['no-such']"),
    ({"version": "0.5.24"}, "installed sglang is 0.5.23, the pin is 0.5.24"),
    ({"architectures": ["NoSuchArch"]}, "does not know the model architecture NoSuchArch"),
    ({"argv": ["--model-path", "/m", "--no-such-flag"]}, "rejects the server argv"),
])
def test_what_sglang_refuses_is_an_error_and_not_cached(venv, tmp_path, change, needle):
    out = mod.run(FakeModule(mod.ARGUMENT_SPEC, params(venv, tmp_path, **change)))
    assert not out["ok"] and any(needle in e for e in out["errors"]), out["errors"]
    assert not (tmp_path / "cache.json").exists() and not out["changed"]


def test_a_crashing_check_is_an_answer(tmp_path):
    python = tmp_path / "bin/python"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    python.chmod(0o755)
    out = mod.run(FakeModule(mod.ARGUMENT_SPEC, params(python, tmp_path)))
    assert not out["ok"] and "exit 3" in out["errors"][0] and "boom" in out["errors"][0]


def test_the_module_runs_under_ansible(venv, tmp_path):
    """The real module through ansible (AnsiballZ, module_utils shipped), check mode included."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    args = json.dumps(params(venv, tmp_path))
    for extra, changed in ((["--check"], True), ([], True), ([], False)):
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-i", "localhost,",
                               "-e", f"ansible_python_interpreter={sys.executable}", "-m", "sgl_sglang_check", "-a", args,
                               *extra],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert ("| CHANGED =>" if changed else "| SUCCESS =>") in proc.stdout, proc.stdout[-3000:]
        assert "\n    ok: true\n" in proc.stdout, proc.stdout[-3000:]
    assert (tmp_path / "cache.json").exists()


@pytest.mark.skipif(not SGLANG_PY.exists(), reason="needs the real SGLang in .venv-sglang")
def test_json_valued_extra_arg_reaches_the_real_sglang_parser_unchanged():
    """The check code run as the module runs it (``python -c <source> <request>``) with the real SGLang
    0.5.23, and the value prepare_server_args parsed from the argv it built."""
    request = {"version": "", "architectures": [], "tool_call_parser": ["no-such", "minimax-m2"],
               "reasoning_parser": [], "argv": ["--model-path", "/srv/models/x", "--tool-call-parser",
                                                "{tool_call_parser}", "--json-model-override-args", JSON_VALUE]}
    run = subprocess.run([str(SGLANG_PY), "-c", mod.check_source(), json.dumps(request)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["ok"] and answer["argv"][-1] == JSON_VALUE, answer
    code = textwrap.dedent(f"""
        import contextlib, io, json
        with contextlib.redirect_stderr(io.StringIO()):
            from sglang.srt.server_args import prepare_server_args
        parsed = prepare_server_args({answer["argv"]!r})
        print(json.dumps({{"json": parsed.json_model_override_args, "tool": parsed.tool_call_parser}}))
    """)
    parsed = subprocess.run([str(SGLANG_PY), "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    result = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert result["json"] == JSON_VALUE and json.loads(result["json"])["rope_scaling"]["factor"] == 4.0
    assert result["tool"] == "minimax-m2"
