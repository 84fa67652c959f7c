"""`sgl-deploy probe --suite recipe` and examples/: the tutorial's four client requests.

Fast: the examples (run unchanged, as subprocesses) and the suite against the stdlib fake server
(tests/fixtures/broken_servers.py, answers from the lab engine's scripted rules); the checks on
canned answers. Against the real lab engine: tests/unit/test_examples_lab_engine.py (slow).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from broken_servers import FakeServer  # noqa: E402

from sgl_deploy import cli, recipe_suite  # noqa: E402
from sgl_deploy.probe import PROBES, StreamCapture, UsageError, select_probes  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "recipe_chat": REPO / "examples" / "chat.py",
    "recipe_streaming": REPO / "examples" / "streaming.py",
    "recipe_tools": REPO / "examples" / "tool_calling.py",
    "recipe_vision": REPO / "examples" / "vision.py",
}
API_KEY = "recipe-test-key"


class NoToolServer(FakeServer):
    """A model that never calls a tool: answers the tool question in text."""

    def reply(self, body):
        return super().reply({**body, "tools": None, "tool_choice": None})


def run_example(path, base_url, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SSL_CERT"))}
    full_env.update({"OPENAI_BASE_URL": base_url + "/v1", "OPENAI_API_KEY": API_KEY, **env})
    return subprocess.run([sys.executable, str(path)], env=full_env, capture_output=True, text=True,
                          timeout=120)


def run_suite(tmp_path, base_url, *extra):
    report = tmp_path / "report.json"
    code = cli.main(["probe", "--suite", "recipe", "--base-url", base_url, "--api-key", API_KEY,
                     "--timeout", "30", "--report-json", str(report), "--quiet", *extra])
    return code, json.loads(report.read_text())


# --------------------------------------------------------------------------- one source of truth


def _literal(node, names):
    """A Python value for an AST literal; names bound to literals at module level resolve;
    anything computed (a call, an f-string, os.environ) becomes None."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Dict):
        return {_literal(k, names): _literal(v, names) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, names) for e in node.elts]
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def example_request(path: Path) -> dict:
    """The keyword arguments of the example's one chat.completions.create call."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            names[stmt.targets[0].id] = _literal(stmt.value, names)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and ast.unparse(n.func) == "client.chat.completions.create"]
    assert len(calls) == 1, path
    return {kw.arg: _literal(kw.value, names) for kw in calls[0].keywords}


@pytest.mark.parametrize("name", recipe_suite.RECIPE_PROBES)
def test_the_suite_sends_exactly_the_examples_requests(name):
    sent = example_request(EXAMPLES[name])
    assert sent.pop("model") is None  # from OPENAI_MODEL, as the suite takes the served name
    want = recipe_suite.request(name, None)
    want.pop("model")
    assert sent == want


def test_the_recipe_requests_are_the_tutorials():
    chat = recipe_suite.REQUESTS["recipe_chat"]
    assert (chat["temperature"], chat["top_p"], chat["extra_body"]) == (1.0, 0.95, {"top_k": 20})
    assert recipe_suite.REQUESTS["recipe_streaming"]["stream"] is True
    tools = recipe_suite.REQUESTS["recipe_tools"]
    assert tools["tool_choice"] == "auto" and tools["tools"][0]["function"]["name"] == "get_weather"
    content = recipe_suite.request("recipe_vision", "m", "data:image/png;base64,AAAA")["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url"]
    assert content[1]["image_url"]["url"].startswith("data:")
    assert recipe_suite.REQUESTS["recipe_vision"]["messages"][0]["content"][1]["image_url"]["url"] is None


# --------------------------------------------------------------------------- against the fake server


def test_examples_and_suite_pass_against_a_healthy_server(tmp_path):
    with FakeServer(api_key=API_KEY) as server:
        for name, path in EXAMPLES.items():
            proc = run_example(path, server.base_url)
            assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr}"
        code, report = run_suite(tmp_path, server.base_url)
    assert code == 0, report
    assert report["suite"] == "recipe"
    assert [p["name"] for p in report["probes"]] == list(recipe_suite.RECIPE_PROBES)
    assert all(p["status"] == "pass" for p in report["probes"])
    tools = next(p for p in report["probes"] if p["name"] == "recipe_tools")
    assert json.loads(tools["data"]["call"]["arguments"]) == {"location": "北京", "unit": "celsius"}


def test_a_model_that_answers_without_a_tool_call_fails_the_tools_check(tmp_path):
    with NoToolServer(api_key=API_KEY) as server:
        proc = run_example(EXAMPLES["recipe_tools"], server.base_url)
        code, report = run_suite(tmp_path, server.base_url)
    assert proc.returncode != 0 and "no tool call" in proc.stderr
    statuses = {p["name"]: p for p in report["probes"]}
    assert code == 1
    assert statuses["recipe_tools"]["status"] == "fail"
    assert "no tool_calls" in statuses["recipe_tools"]["detail"]
    assert [n for n, p in statuses.items() if p["status"] == "fail"] == ["recipe_tools"]


def test_only_skip_and_usage_errors(tmp_path, capsys):
    with FakeServer(api_key=API_KEY) as server:
        code, report = run_suite(tmp_path, server.base_url, "--only", "recipe_tools,recipe_chat")
        assert code == 0 and [p["name"] for p in report["probes"]] == ["recipe_chat", "recipe_tools"]
        code, report = run_suite(tmp_path, server.base_url, "--vision", "off")
        assert code == 0 and report["probes"][-1]["status"] == "skip"
    with pytest.raises(UsageError):
        recipe_suite.select_probes("chat", None, False)  # a default-suite name
    with pytest.raises(UsageError):
        recipe_suite.select_probes(None, None, True)
    assert cli.main(["probe", "--suite", "recipe", "--base-url", "http://127.0.0.1:9", "--only", "tools"]) == 2
    # the default suite is unchanged
    assert select_probes(None, None, False) == list(PROBES)


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl to make a test certificate")
def test_examples_trust_a_private_ca_from_ssl_cert_file(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    with FakeServer(api_key=API_KEY) as server:
        server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
        https = server.base_url.replace("http://", "https://")
        trusted = run_example(EXAMPLES["recipe_chat"], https, SSL_CERT_FILE=str(cert))
        untrusted = run_example(EXAMPLES["recipe_chat"], https)
    assert trusted.returncode == 0, trusted.stderr
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


# --------------------------------------------------------------------------- pure checks


def completion(message, finish="stop"):
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def call(arguments, name="get_weather"):
    return completion({"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_" + "0" * 24, "type": "function",
         "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}]},
        "tool_calls")


@pytest.mark.parametrize("arguments, ok, why", [
    ({"location": "北京", "unit": "celsius"}, True, ""),
    ({"location": "Beijing, China", "unit": "celsius"}, True, ""),
    ({"location": "北京市", "unit": "celsius"}, True, ""),
    ({"location": "Shanghai", "unit": "celsius"}, False, "does not name Beijing"),
    ({"location": "北京", "unit": "fahrenheit"}, False, "unit"),
    ({"location": "北京"}, False, "missing required 'unit'"),
    ({"location": "北京", "unit": "kelvin"}, False, "not one of"),
    ({"location": 42, "unit": "celsius"}, False, "expected string"),
])
def test_check_weather_call(arguments, ok, why):
    got, detail, _ = recipe_suite.check_weather_call(call(arguments))
    assert got is ok, detail
    assert why in detail


def test_check_weather_call_wants_get_weather_and_a_call():
    assert not recipe_suite.check_weather_call(call({"location": "北京", "unit": "celsius"}, "get_time"))[0]
    text = completion({"role": "assistant", "content": "北京今天晴，25 摄氏度。"})
    ok, detail, _ = recipe_suite.check_weather_call(text)
    assert not ok and "no tool_calls" in detail


def test_check_answer():
    assert recipe_suite.check_answer(completion({"content": "M3 的上下文更长。"}))[0]
    assert recipe_suite.check_answer(completion({"content": "answer", "reasoning_content": "..."}))[0]
    assert not recipe_suite.check_answer(completion({"content": ""}))[0]
    ok, detail = recipe_suite.check_answer(completion({"content": "<think>only thinking</think>"}, "length"))
    assert not ok and "max_tokens" in detail
    assert not recipe_suite.check_answer({"choices": []})[0]


def test_check_content_stream():
    good = StreamCapture(pieces=[(0.1, "reasoning", "x"), (0.2, "content", "class "), (0.3, "content", "BST")],
                         content="class BST", finish_reason="stop")
    assert recipe_suite.check_content_stream(good)[0]
    one = StreamCapture(pieces=[(0.1, "reasoning", "x"), (0.2, "content", "class BST")],
                        content="class BST", finish_reason="stop")
    assert "want >= 2" in recipe_suite.check_content_stream(one)[1]
    burst = StreamCapture(pieces=[(0.2, "content", "a"), (0.2, "content", "b")], content="ab",
                          finish_reason="stop")
    assert "same instant" in recipe_suite.check_content_stream(burst)[1]
    unfinished = StreamCapture(pieces=good.pieces, content="class BST")
    assert "finish_reason" in recipe_suite.check_content_stream(unfinished)[1]
    assert not recipe_suite.check_content_stream(StreamCapture(error="stream failed"))[0]


@pytest.mark.parametrize("answer, colour, ok", [
    ("Red", "red", True),
    ("这是一张纯红色的图片。", "red", True),
    ("图片整体是蓝色的。", "blue", True),
    ("The image is a solid green square.", "green", True),
    ("这是一张纯红色的图片。", "green", False),
    ("红色、绿色、蓝色和黄色", "red", False),
    ("", "red", False),
])
def test_check_description(answer, colour, ok):
    assert recipe_suite.check_description(answer, colour)[0] is ok
