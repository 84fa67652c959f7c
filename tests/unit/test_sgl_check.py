"""The install role's argv check (roles/sglang_install/files/sgl_check.py) takes the argv as a list:
JSON-valued extra args pass unchanged to the real SGLang parser (the old str.format crashed on braces)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles/sglang_install/files/sgl_check.py"
SGLANG_PY = REPO / ".venv-sglang/bin/python"
JSON_VALUE = '{"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}'


def _module():
    spec = importlib.util.spec_from_file_location("sgl_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resolve_argv_replaces_only_whole_placeholders():
    m = _module()
    argv = ["--tool-call-parser", "{tool_call_parser}", "--reasoning-parser", "{reasoning_parser}",
            "--json-model-override-args", JSON_VALUE, "--x", "{tool_call_parser} inside", "a b 'c' \"d\"", "{}"]
    out = m.resolve_argv(argv, {"tool_call_parser": "minimax-m2", "reasoning_parser": None})
    assert out == ["--tool-call-parser", "minimax-m2", "--reasoning-parser", "", "--json-model-override-args",
                   JSON_VALUE, "--x", "{tool_call_parser} inside", "a b 'c' \"d\"", "{}"]
    assert m.resolve_argv(json.dumps(argv), {}) [5] == JSON_VALUE  # the JSON text of the list works too
    with pytest.raises(ValueError):
        m.resolve_argv("--a b", {})


@pytest.mark.skipif(not SGLANG_PY.exists(), reason="needs the real SGLang in .venv-sglang")
def test_json_valued_extra_arg_reaches_the_real_sglang_parser_unchanged():
    """The whole check script (stdin request -> JSON answer) with the real SGLang 0.5.23, and the
    value prepare_server_args parsed from the argv the script built."""
    code = textwrap.dedent(f"""
        import contextlib, importlib.util, io, json, sys
        spec = importlib.util.spec_from_file_location("sgl_check", {str(SCRIPT)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        request = {{"version": "", "architectures": [], "tool_call_parser": ["no-such", "minimax-m2"],
                    "reasoning_parser": [], "argv": ["--model-path", "/srv/models/x", "--tool-call-parser",
                    "{{tool_call_parser}}", "--json-model-override-args", {JSON_VALUE!r}]}}
        sys.stdin = io.StringIO(json.dumps(request))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = m.main()
        answer = json.loads(out.getvalue())
        with contextlib.redirect_stderr(io.StringIO()):
            from sglang.srt.server_args import prepare_server_args
        parsed = prepare_server_args(answer["argv"])
        print(json.dumps({{"rc": rc, "answer": answer, "json": parsed.json_model_override_args,
                           "tool": parsed.tool_call_parser}}))
    """)
    run = subprocess.run([str(SGLANG_PY), "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0 and result["answer"]["ok"], result
    assert result["answer"]["argv"][-1] == JSON_VALUE
    assert result["json"] == JSON_VALUE and json.loads(result["json"])["rope_scaling"]["factor"] == 4.0
    assert result["tool"] == "minimax-m2"
