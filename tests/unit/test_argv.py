"""SGLang argv from the plan, systemd quoting, and a parse check by the real SGLang."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from sgl_deploy.argv import ArgvError, quote_argv, server_argv, systemd_quote
from sgl_deploy.planner import plan

REPO = Path(__file__).resolve().parents[2]
SGLANG_PY = REPO / ".venv-sglang" / "bin" / "python"
RECIPE = {"weights_gb": 220, "kv_gb_per_mtok": 240}


def plan4() -> dict:
    return plan(gpus_per_node=4, gpu_memory_gb=96, **RECIPE)


def plan8() -> dict:
    return plan(gpus_per_node=8, gpu_memory_gb=144, **RECIPE)


def plan_2nodes(rank: int = 0) -> dict:
    return plan(profile="minimax-m3", nodes=2, gpus_per_node=8, gpu_memory_gb=80, weights_gb=860,
                dist_init_addr="10.77.0.11:20000", node_rank=rank)


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# --------------------------------------------------------------------------- server_argv


def test_single_node_argv():
    argv = server_argv(plan4(), "minimax-m3", "minimax-m3")
    assert argv[:2] == ["--model-path", "/srv/models/MiniMaxAI--MiniMax-M3/master"]
    assert flag_value(argv, "--served-model-name") == "MiniMax-M3"
    assert flag_value(argv, "--host") == "0.0.0.0"
    assert flag_value(argv, "--port") == "8000"
    assert flag_value(argv, "--tp-size") == "4"
    assert flag_value(argv, "--tool-call-parser") == "minimax-m3"
    assert flag_value(argv, "--reasoning-parser") == "minimax-m3"
    assert flag_value(argv, "--mem-fraction-static") == "0.85"
    assert flag_value(argv, "--context-length") == str(plan4()["context_length"])
    assert "--trust-remote-code" in argv and "--enable-metrics" in argv
    for absent in ("--ep-size", "--dp-size", "--pp-size", "--nnodes", "--node-rank", "--dist-init-addr", "--config"):
        assert absent not in argv


def test_ep_only_when_above_one():
    argv = server_argv(plan8(), "minimax-m2", "minimax-append-think")
    assert flag_value(argv, "--tp-size") == "8"
    assert flag_value(argv, "--ep-size") == "8"


def test_dp_and_pp_only_when_above_one():
    p = plan(profile="minimax-m2.5", gpus_per_node=8, gpu_memory_gb=80, dp_size=2)
    assert flag_value(server_argv(p, "minimax-m2", None), "--dp-size") == "2"
    p3 = plan(profile="minimax-m3", nodes=3, gpus_per_node=8, gpu_memory_gb=80)
    p3["dist_init_addr"] = "10.0.0.1:5000"
    argv = server_argv(p3, None, None)
    assert flag_value(argv, "--pp-size") == "3"
    assert "--tool-call-parser" not in argv and "--reasoning-parser" not in argv


def test_multi_node_argv():
    for rank in (0, 1):
        argv = server_argv(plan_2nodes(rank), "minimax-m3", "minimax-m3")
        assert flag_value(argv, "--tp-size") == "16"  # the global tp on every node
        assert flag_value(argv, "--nnodes") == "2"
        assert flag_value(argv, "--node-rank") == str(rank)
        assert flag_value(argv, "--dist-init-addr") == "10.77.0.11:20000"
        assert flag_value(argv, "--watchdog-timeout") == "300" and flag_value(argv, "--dist-timeout") == "600"
    single = server_argv(plan4(), "minimax-m3", "minimax-m3")
    assert "--watchdog-timeout" not in single and "--dist-timeout" not in single


def test_multi_node_plan_carries_the_nccl_safeguards():
    env = plan_2nodes(1)["nccl_environment"]
    assert env == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "TORCH_NCCL_ENABLE_MONITORING": "1",
                   "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "660"}
    assert plan4()["nccl_environment"] == {} and plan4()["watchdog_timeout_s"] is None
    # the same flag in extra_args wins, never twice
    argv = server_argv({**plan_2nodes(), "extra_args": ["--watchdog-timeout=900"]}, "minimax-m3", "minimax-m3")
    assert [a for a in argv if a.startswith("--watchdog-timeout")] == ["--watchdog-timeout=900"]
    assert flag_value(argv, "--dist-timeout") == "600"


def test_multi_node_needs_dist_init_addr():
    p = plan_2nodes()
    p["dist_init_addr"] = None
    with pytest.raises(ArgvError, match="dist_init_addr"):
        server_argv(p, "minimax-m3", "minimax-m3")


def test_no_abbreviated_flags():
    argv = server_argv(plan_2nodes(), "minimax-m3", "minimax-m3", config_file="/etc/sglang/server.yaml")
    flags = [a for a in argv if a.startswith("--")]
    for short in ("--tp", "--ep", "--dp", "--pp", "--model", "--mem", "--context"):
        assert short not in flags


def test_config_file_then_extra_args():
    p = plan4()
    p["extra_args"] = ["--chunked-prefill-size", "8192", "--watchdog-timeout=600"]
    argv = server_argv(p, "minimax-m3", "minimax-m3", config_file="/etc/sglang/minimax.yaml")
    assert argv[-5:] == ["--config", "/etc/sglang/minimax.yaml", "--chunked-prefill-size", "8192", "--watchdog-timeout=600"]


@pytest.mark.parametrize("extra", [["--api-key", "sk-x"], ["--api-key=sk-x"], ["--admin-api-key", "a"], ["--api", "x"]])
def test_api_key_never_in_argv(extra):
    p = plan4()
    p["extra_args"] = extra
    with pytest.raises(ArgvError, match="secret"):
        server_argv(p, "minimax-m3", "minimax-m3")


def test_plan_argv_has_no_key_even_with_config():
    argv = server_argv(plan4(), "minimax-m3", "minimax-m3", config_file="/etc/sglang/key.yaml")
    assert not any("api-key" in a or "sk-" in a for a in argv)


@pytest.mark.parametrize("extra", [["--tp", "8"], ["--tp-size", "8"], ["--ep", "2"], ["--dp", "2"],
                                   ["--model", "x"], ["--context", "1000"], ["--port=1"]])
def test_managed_or_abbreviated_extra_args_refused(extra):
    p = plan4()
    p["extra_args"] = extra
    with pytest.raises(ArgvError):
        server_argv(p, "minimax-m3", "minimax-m3")


def test_extra_args_longer_than_a_managed_flag_are_fine():
    p = plan4()
    p["extra_args"] = ["--enable-metrics-for-all-schedulers", "--model-loader-extra-config", "{}"]
    assert server_argv(p, "minimax-m3", "minimax-m3")[-3:] == p["extra_args"]


# --------------------------------------------------------------------------- systemd quoting


def test_systemd_quote_plain_args_untouched():
    assert systemd_quote("--tp-size") == "--tp-size"
    assert systemd_quote("/srv/models/MiniMaxAI--MiniMax-M3/master") == "/srv/models/MiniMaxAI--MiniMax-M3/master"


def test_systemd_quote_percent_and_dollar_doubled():
    assert systemd_quote("50%") == "50%%"
    assert systemd_quote("$HOME") == "$$HOME"
    assert systemd_quote("${X}%i") == "$${X}%%i"


def test_systemd_quote_needs_quotes():
    assert systemd_quote("a b") == '"a b"'
    assert systemd_quote("") == '""'
    assert systemd_quote('say "hi"') == '"say \\"hi\\""'
    assert systemd_quote("C:\\dir") == '"C:\\\\dir"'
    assert systemd_quote("it's") == '"it\'s"'
    assert systemd_quote(";") == '";"'
    assert systemd_quote("a\nb") == '"a\\nb"'
    assert systemd_quote('{"k": "50% $x"}') == '"{\\"k\\": \\"50%% $$x\\"}"'


def test_quote_argv_roundtrip_like_systemd():
    argv = ["/opt/sglang/current/bin/python", "-m", "sglang.launch_server", "--served-model-name", "Mini Max",
            "--json-model-override-args", '{"a": "b c"}']
    line = quote_argv(argv)
    # with no % or $ present, systemd's word splitting agrees with POSIX shell double quotes
    assert shlex.split(line) == argv


# --------------------------------------------------------------------------- the real SGLang parser

_PROBE = r"""
import json, sys
from sglang.srt.server_args import prepare_server_args
out = []
for argv in json.loads(sys.stdin.read()):
    try:
        sa = prepare_server_args(argv)
        out.append({"ok": True, **{k: getattr(sa, k, None) for k in (
            "model_path", "served_model_name", "tp_size", "ep_size", "dp_size", "pp_size", "nnodes", "node_rank",
            "dist_init_addr", "tool_call_parser", "reasoning_parser", "trust_remote_code", "mem_fraction_static",
            "context_length", "enable_metrics", "api_key", "port", "host", "watchdog_timeout",
            "dist_timeout")}})
    except SystemExit as exc:
        out.append({"ok": False, "code": exc.code})
print("RESULT " + json.dumps(out, default=str))
"""


@pytest.mark.slow
def test_argv_parses_with_real_sglang(tmp_path):
    if not SGLANG_PY.exists():
        pytest.skip(".venv-sglang missing")
    config = tmp_path / "server.yaml"
    config.write_text("api-key: sk-test-123\n")
    config.chmod(0o600)
    p4, p8, pn0, pn1 = plan4(), plan8(), plan_2nodes(0), plan_2nodes(1)
    m25 = plan(profile="minimax-m2.5", gpus_per_node=4, gpu_memory_gb=96)
    argvs = [
        server_argv(p4, "minimax-m3", "minimax-m3"),
        server_argv(p8, "minimax-m3", "minimax-m3", config_file=str(config)),
        server_argv(pn0, "minimax-m3", "minimax-m3"),
        server_argv(pn1, "minimax-m3", "minimax-m3"),
        server_argv(m25, "minimax-m2", "minimax-append-think"),
        ["--model-path", "x", "--cuda-graph-max-bs", "8"],  # control: removed flag must fail
    ]
    res = subprocess.run([str(SGLANG_PY), "-c", _PROBE], input=json.dumps(argvs), capture_output=True,
                         text=True, timeout=600)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, res.stdout[-2000:] + res.stderr[-4000:]
    r4, r8, rn0, rn1, r25, bad = json.loads(line[len("RESULT "):])
    assert r4["ok"] and r4["tp_size"] == 4 and r4["ep_size"] == 1
    assert r4["tool_call_parser"] == "minimax-m3" and r4["reasoning_parser"] == "minimax-m3"
    assert r4["mem_fraction_static"] == 0.85 and r4["context_length"] == p4["context_length"]
    assert r4["trust_remote_code"] is True and r4["enable_metrics"] is True
    assert r4["served_model_name"] == "MiniMax-M3" and r4["port"] == 8000 and r4["api_key"] is None
    assert r8["ok"] and (r8["tp_size"], r8["ep_size"]) == (8, 8)
    assert r8["api_key"] == "sk-test-123"  # from the --config file, not the command line
    for r, rank in ((rn0, 0), (rn1, 1)):
        assert r["ok"] and r["tp_size"] == 16 and r["nnodes"] == 2 and r["node_rank"] == rank
        assert r["dist_init_addr"] == "10.77.0.11:20000"
        assert r["watchdog_timeout"] == 300 and r["dist_timeout"] == 600  # accepted by SGLang's own parser
    assert r4["watchdog_timeout"] == 300 and r4["dist_timeout"] is None  # SGLang's defaults on a single node
    assert r25["ok"] and r25["tool_call_parser"] == "minimax-m2" and r25["reasoning_parser"] == "minimax-append-think"
    assert bad == {"ok": False, "code": 2}
