"""examples/ (run unchanged, as subprocesses) and `sgl-deploy probe --suite recipe` against the lab
engine (lab/engine/sgl_lab_engine.py, SGLang's real parsers), in both parser modes:

* MiniMax-M3 with ``--tool-call-parser minimax-m3 --reasoning-parser minimax-m3`` (reasoning in
  ``reasoning_content``; vision);
* MiniMax-M2.5 with the recipe's ``--tool-call-parser minimax-m2 --reasoning-parser
  minimax-append-think`` (the thinking stays in ``content``; no vision: the image example is refused
  and exits 1, the suite skips its image probe).

Negative: a proxy in front of the M3 engine drops ``tools`` from the requests, so the engine answers
the weather question in text: the suite's tools check and the tool example fail.

Slow: each engine start imports sglang; both start at once in one module fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from broken_servers import free_port  # noqa: E402
from test_lab_engine import API_KEY, M2_CONFIG, M3_CONFIG, PYTHON, EngineProc, server_argv  # noqa: E402

from sgl_deploy import cli  # noqa: E402
from sgl_deploy.recipe_suite import RECIPE_PROBES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = ("chat", "streaming", "tool_calling", "vision")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not os.path.exists(PYTHON), reason=f"no SGLang venv python at {PYTHON}"),
]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe-engines")
    m3, m2 = root / "MiniMax-M3", root / "MiniMax-M2.5"
    for path, config in ((m3, M3_CONFIG), (m2, M2_CONFIG)):
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
    cfg = root / "sglang.yaml"
    cfg.write_text(f"api-key: {API_KEY}\n")
    cfg.chmod(0o600)
    procs = {
        "m3": EngineProc("m3", server_argv(m3, free_port(), cfg, "minimax-m3", "minimax-m3", "MiniMax-M3")),
        "m2-recipe": EngineProc("m2-recipe", server_argv(m2, free_port(), cfg, "minimax-m2",
                                                         "minimax-append-think", "MiniMax-M2.5")),
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def run_example(name, base_url, model):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SSL_CERT"))}
    env.update(OPENAI_BASE_URL=base_url + "/v1", OPENAI_API_KEY=API_KEY, OPENAI_MODEL=model)
    return subprocess.run([sys.executable, str(REPO / "examples" / f"{name}.py")], env=env,
                          capture_output=True, text=True, timeout=120)


def run_suite(tmp_path, base_url):
    report = tmp_path / "report.json"
    code = cli.main(["probe", "--suite", "recipe", "--base-url", base_url, "--api-key", API_KEY,
                     "--timeout", "60", "--report-json", str(report), "--quiet"])
    return code, json.loads(report.read_text())


def test_m3_examples_exit_0(engines):
    engine = engines["m3"]
    engine.wait_ready()
    for name in EXAMPLES:
        proc = run_example(name, engine.base_url, "MiniMax-M3")
        assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr}"
    tool = run_example("tool_calling", engine.base_url, "MiniMax-M3")
    assert "Function called: get_weather" in tool.stdout and "北京" in tool.stdout
    code = run_example("streaming", engine.base_url, "MiniMax-M3").stdout
    assert "class BST" in code and "def delete(self, key):" in code and "<mm:think>" not in code
    vision = run_example("vision", engine.base_url, "MiniMax-M3").stdout
    assert "红色" in vision


def test_m3_recipe_suite_passes(engines, tmp_path, capsys):
    engine = engines["m3"]
    engine.wait_ready()
    code, report = run_suite(tmp_path, engine.base_url)
    table = capsys.readouterr().out
    assert code == 0, table
    assert [p["name"] for p in report["probes"]] == list(RECIPE_PROBES)
    assert all(p["status"] == "pass" for p in report["probes"]), table
    for name in RECIPE_PROBES:
        assert name in table
    assert API_KEY not in table


def test_recipe_parsers_examples_and_suite(engines, tmp_path):
    engine = engines["m2-recipe"]
    engine.wait_ready()
    for name in ("chat", "streaming", "tool_calling"):
        proc = run_example(name, engine.base_url, "MiniMax-M2.5")
        assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr}"
    vision = run_example("vision", engine.base_url, "MiniMax-M2.5")  # M2.5 has no image input
    assert vision.returncode != 0 and "only supports text input" in vision.stderr
    code, report = run_suite(tmp_path, engine.base_url)
    statuses = {p["name"]: p["status"] for p in report["probes"]}
    assert code == 0, report
    assert statuses == {"recipe_chat": "pass", "recipe_streaming": "pass", "recipe_tools": "pass",
                        "recipe_vision": "skip"}


class DropToolsProxy:
    """Forwards to ``upstream`` with ``tools``/``tool_choice`` removed from chat requests: the
    model behind it never sees the tool, so it answers in text."""

    def __init__(self, upstream: str):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, body: bytes | None):
                if body:
                    data = json.loads(body)
                    data.pop("tools", None)
                    data.pop("tool_choice", None)
                    body = json.dumps(data).encode()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type")}
                req = urllib.request.Request(upstream + self.path, data=body, headers=headers,
                                             method=self.command)
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, payload, ctype = resp.status, resp.read(), resp.headers.get("content-type")
                except urllib.error.HTTPError as exc:
                    status, payload, ctype = exc.code, exc.read(), exc.headers.get("content-type")
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        outer.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_engine_answering_without_a_tool_call_fails_the_tools_check(engines, tmp_path):
    engine = engines["m3"]
    engine.wait_ready()
    with DropToolsProxy(engine.base_url) as proxy:
        example = run_example("tool_calling", proxy.base_url, "MiniMax-M3")
        report_path = tmp_path / "report.json"
        code = cli.main(["probe", "--suite", "recipe", "--base-url", proxy.base_url, "--api-key", API_KEY,
                         "--only", "recipe_chat,recipe_tools", "--timeout", "60",
                         "--report-json", str(report_path), "--quiet"])
    report = json.loads(report_path.read_text())
    statuses = {p["name"]: p for p in report["probes"]}
    assert example.returncode != 0 and "no tool call" in example.stderr
    assert code == 1
    assert statuses["recipe_chat"]["status"] == "pass"  # the proxy itself works
    assert statuses["recipe_tools"]["status"] == "fail"
    assert "no tool_calls" in statuses["recipe_tools"]["detail"]
