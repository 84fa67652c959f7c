"""The lab engine (lab/engine/sgl_lab_engine.py) started with the real SGLang argv, then probed.

Slow: every engine start imports sglang (10-30 s), so all engines of this module start at
once in one module-scoped fixture and the tests wait for the one they need.
The interpreter is /work/main/.venv-sglang/bin/python, or $SGL_SGLANG_PYTHON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sgl_deploy import cli
from sgl_deploy.probe import PROBES

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from broken_servers import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "lab" / "engine" / "sgl_lab_engine.py"
PYTHON = os.environ.get("SGL_SGLANG_PYTHON") or str(REPO / ".venv-sglang" / "bin" / "python")
API_KEY = "lab-test-key-0c1d2e"
START_TIMEOUT = 300  # four engines import sglang at once; a busy 2-core machine needs minutes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(480),
    pytest.mark.skipif(not os.path.exists(PYTHON), reason=f"no SGLang venv python at {PYTHON}"),
]

M3_CONFIG = {
    "architectures": ["MiniMaxM3SparseForConditionalGeneration"],
    "model_type": "minimax_m3_vl",  # sglang's MiniMaxM3VLConfig.model_type
    "text_config": {"model_type": "minimax_m2", "max_position_embeddings": 1048576},
}
M2_CONFIG = {
    "architectures": ["MiniMaxM2ForCausalLM"],
    "model_type": "minimax_m2",
    "max_position_embeddings": 196608,
}


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EngineProc:
    """One lab engine subprocess; stdout collected by a thread."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.argv = argv
        self.lines: list[str] = []
        self.port = int(argv[argv.index("--port") + 1]) if "--port" in argv else None
        full_env = {**os.environ, "SGL_LAB_LOAD_SECONDS": "2", "SGL_LAB_WARMUP_SECONDS": "1",
                    "SGL_LAB_TOKEN_DELAY_MS": "2", **(env or {})}
        self.proc = subprocess.Popen(
            [PYTHON, str(ENGINE), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=full_env,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.closed_during_load = None  # port refused after "Load weight begin"?
        self.saw_503 = False

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_exit(self, timeout=START_TIMEOUT) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code

    def wait_ready(self, timeout=START_TIMEOUT) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.reader.join(timeout=5)
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output}")
            out = self.output
            if "Load weight begin" in out and "Uvicorn binding" not in out and self.closed_during_load is None:
                self.closed_during_load = not port_open(self.port)
            if "Uvicorn binding" in out:
                try:
                    status = httpx.get(self.base_url + "/health", timeout=2).status_code
                except httpx.HTTPError:
                    status = None
                if status == 503:
                    self.saw_503 = True
                if status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {timeout}s:\n{self.output}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        return self.proc.returncode


def server_argv(model_dir, port, config, tool_parser, reasoning_parser, served):
    return [
        "--model-path", str(model_dir), "--served-model-name", served,
        "--host", "127.0.0.1", "--port", str(port), "--tp-size", "4",
        "--tool-call-parser", tool_parser, "--reasoning-parser", reasoning_parser,
        "--trust-remote-code", "--mem-fraction-static", "0.85", "--config", str(config),
    ]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-engine")
    m3, m2 = root / "MiniMax-M3", root / "MiniMax-M2.5"
    for path, config in ((m3, M3_CONFIG), (m2, M2_CONFIG)):
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
    cfg = root / "sglang.yaml"
    cfg.write_text(f"api-key: {API_KEY}\nenable-metrics: true\n")
    cfg.chmod(0o600)
    procs = {
        "m3": EngineProc("m3", server_argv(m3, free_port(), cfg, "minimax-m3", "minimax-m3", "MiniMax-M3")),
        "m2": EngineProc("m2", server_argv(m2, free_port(), cfg, "minimax-m2", "minimax-append-think",
                                           "MiniMax-M2.5")),
        "m3-qwen": EngineProc("m3-qwen", server_argv(m3, free_port(), cfg, "qwen", "minimax-m3", "MiniMax-M3")),
        "bad-argv": EngineProc("bad-argv", server_argv(m3, free_port(), cfg, "minimax-m3", "minimax-m3",
                                                       "MiniMax-M3") + ["--cuda-graph-max-bs", "8"]),
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()
        for proc in procs.values():
            assert API_KEY not in proc.output, f"{proc.name} logged the API key"


def run_probe(tmp_path, engine, *extra, suffix=""):
    report, junit, plot = tmp_path / "report.json", tmp_path / "junit.xml", tmp_path / "plot.png"
    code = cli.main([
        "probe", "--base-url", engine.base_url + suffix, "--api-key", API_KEY, "--timeout", "30",
        "--report-json", str(report), "--junit", str(junit), "--plot", str(plot), "--quiet", *extra,
    ])
    return code, json.loads(report.read_text()), junit, plot


def assert_every_probe_passed(code, report, skipped=(), warned=()):
    statuses = {p["name"]: p["status"] for p in report["probes"]}
    assert [p["name"] for p in report["probes"]] == list(PROBES)
    for name in PROBES:
        want = "skip" if name in skipped else ("warn" if name in warned else "pass")
        assert statuses[name] == want, f"{name}: {next(p['detail'] for p in report['probes'] if p['name'] == name)}"
    assert code == 0 and report["passed"] is True
    for p in report["probes"]:
        if p["status"] == "pass":
            assert p["latency_s"] is not None and p["latency_s"] >= 0, p


def test_m3_every_probe_passes(engines, tmp_path, capsys):
    engine = engines["m3"]
    engine.wait_ready()
    assert engine.closed_during_load is True, "port was bound while weights were 'loading'"
    code, report, junit, plot = run_probe(tmp_path, engine, suffix="/v1")  # the OpenAI SDK form
    table = capsys.readouterr().out
    assert_every_probe_passed(code, report)
    assert report["base_url"] == engine.base_url  # the normalised root
    assert report["duration_s"] < 60, "the default probe set must stay under 60 s against the lab engine"
    accuracy = next(p for p in report["probes"] if p["name"] == "accuracy")
    assert accuracy["data"]["accuracy"] == 1.0 and accuracy["data"]["problems"] >= 100
    assert "accuracy 1.000" in table
    streaming = next(p for p in report["probes"] if p["name"] == "streaming")
    assert streaming["ttft_s"] is not None and streaming["tokens_per_s"] > 0
    assert report["probes"][0]["data"]["model_info"]["tool_call_parser"] == "minimax-m3"
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert API_KEY not in table
    assert "The server is fired up and ready to roll!" in engine.output
    for needle in ("Load weight begin", "Loading safetensors checkpoint shards: 100% Completed",
                   "Load weight end", "KV Cache is allocated", "NOT SGLang"):
        assert needle in engine.output


def test_m3_http_surface(engines):
    import httpx

    engine = engines["m3"]
    engine.wait_ready()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    models = httpx.get(engine.base_url + "/v1/models", headers=auth).json()
    assert models["data"][0]["id"] == "MiniMax-M3"
    assert models["data"][0]["owned_by"] == "sgl-lab-engine (NOT SGLang)"
    info = httpx.get(engine.base_url + "/model_info", headers=auth).json()
    assert info["has_image_understanding"] is True and info["reasoning_parser"] == "minimax-m3"
    assert httpx.get(engine.base_url + "/server_info", headers=auth).status_code == 404
    assert httpx.get(engine.base_url + "/model_info").status_code == 401
    assert httpx.get(engine.base_url + "/ready").status_code == 200
    metrics = httpx.get(engine.base_url + "/metrics").text  # exempt from auth
    for name in ("sglang:num_running_reqs", "sglang:gen_throughput", "sglang:num_requests_total",
                 "sglang:time_to_first_token_seconds_bucket", "sglang:e2e_request_latency_seconds_count"):
        assert name in metrics
    plain = httpx.post(engine.base_url + "/v1/chat/completions", headers={**auth, "Content-Type": "text/plain"},
                       content=b"{}")
    assert plain.status_code == 400 and "application/json" in plain.json()["message"]
    # max_tokens cut -> finish_reason length
    cut = httpx.post(engine.base_url + "/v1/chat/completions", headers=auth, json={
        "model": "MiniMax-M3", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 3})
    assert cut.json()["choices"][0]["finish_reason"] == "length"
    assert cut.json()["usage"]["completion_tokens"] == 3
    assert Path(f"/proc/{engine.proc.pid}/comm").read_text().strip() == "sgl-lab-engine"


def test_m2_recipe_every_probe_passes(engines, tmp_path):
    engine = engines["m2"]
    engine.wait_ready()
    code, report, _, _ = run_probe(tmp_path, engine)
    # M2.5 has no vision; its chat template has no thinking switch: thinking-off warns, naming the issue
    assert_every_probe_passed(code, report, skipped=("vision",), warned=("thinking-off",))
    thinking_off = next(p for p in report["probes"] if p["name"] == "thinking-off")
    assert "sglang#32276" in thinking_off["detail"]
    assert report["duration_s"] < 60
    reasoning = next(p for p in report["probes"] if p["name"] == "reasoning")
    assert reasoning["data"]["mode"] == "in-content"  # minimax-append-think keeps <think> in content
    assert reasoning["data"]["content_has_think_tags"] == ["<think>", "</think>"]


def test_m2_rejects_images(engines):
    import httpx

    engine = engines["m2"]
    engine.wait_ready()
    body = {"model": "MiniMax-M2.5", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "colour?"}]}]}
    resp = httpx.post(engine.base_url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 400 and "only supports text input" in resp.json()["message"]


def test_wrong_tool_parser_fails_the_tool_probe(engines, tmp_path):
    engine = engines["m3-qwen"]
    engine.wait_ready()
    code, report, _, _ = run_probe(tmp_path, engine, "--only", "models,chat,tools")
    statuses = {p["name"]: p for p in report["probes"]}
    assert code == 1
    assert statuses["models"]["status"] == "pass" and statuses["chat"]["status"] == "pass"
    assert statuses["tools"]["status"] == "fail"
    assert "no tool_calls" in statuses["tools"]["detail"]
    # the deployment check also catches it when the expected parser is given
    code, report, _, _ = run_probe(tmp_path, engine, "--only", "models", "--tool-call-parser", "minimax-m3")
    assert code == 1 and "tool_call_parser" in report["probes"][0]["detail"]


def test_bad_argv_exits_2_like_sglang(engines):
    engine = engines["bad-argv"]
    assert engine.wait_exit() == 2
    assert "ambiguous option: --cuda-graph-max-bs" in engine.output
