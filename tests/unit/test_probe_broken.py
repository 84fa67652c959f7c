"""The probe runner against deliberately broken OpenAI-compatible servers: each fault must
fail exactly the probe(s) that look at the broken behaviour, and nothing may hang."""

from __future__ import annotations

import json
import os
import sys
import time
import xml.etree.ElementTree as ET

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
from broken_servers import FakeServer, free_port  # noqa: E402

from sgl_deploy import cli  # noqa: E402
from sgl_deploy.probe import PROBES  # noqa: E402

API_KEY = "test-key-5f3a"


def run_cli(tmp_path, base_url, *extra, env_key=True, monkeypatch=None):
    report = tmp_path / "report.json"
    junit = tmp_path / "junit.xml"
    argv = ["probe", "--base-url", base_url, "--report-json", str(report), "--junit", str(junit),
            "--quiet", "--concurrency", "4", *extra]
    if env_key and monkeypatch is not None:
        monkeypatch.setenv("SGL_API_KEY", API_KEY)
    code = cli.main(argv)
    data = json.loads(report.read_text()) if report.exists() else None
    return code, data, junit


def failed(report) -> set[str]:
    return {p["name"] for p in report["probes"] if p["status"] == "fail"}


def test_healthy_fake_passes_everything(tmp_path, monkeypatch, capsys):
    with FakeServer(api_key=API_KEY) as server:
        code, report, junit = run_cli(tmp_path, server.base_url, monkeypatch=monkeypatch)
    out = capsys.readouterr()
    assert code == 0, out.out
    assert [p["name"] for p in report["probes"]] == list(PROBES)
    assert all(p["status"] == "pass" for p in report["probes"]), out.out
    assert report["passed"] is True
    # never /server_info, never the key in anything printed or written
    assert not any("server_info" in path for _, path in server.requests)
    assert API_KEY not in out.out + out.err
    assert API_KEY not in (tmp_path / "report.json").read_text()
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(PROBES)) and suite.get("failures") == "0"


@pytest.mark.parametrize(
    "fault, expected",
    [
        # every probe that reads tool-call arguments / the reasoning split sees these
        ("bad-tool-json", {"tools", "parallel-tools", "tool-args"}),
        ("think-leak", {"reasoning", "multiturn"}),
        ("no-auth", {"auth"}),
        ("stray-think-close", {"multiturn"}),
        ("parallel-merged", {"parallel-tools"}),
        ("stream-args-dup", {"tool-args"}),
        ("accuracy-60", {"accuracy"}),
    ],
)
def test_fault_fails_exactly_its_probe(tmp_path, monkeypatch, fault, expected):
    with FakeServer(faults=[fault], api_key=API_KEY) as server:
        code, report, junit = run_cli(tmp_path, server.base_url, monkeypatch=monkeypatch)
    assert code == 1
    assert failed(report) == expected
    assert report["passed"] is False
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    for name in expected:
        assert cases[name].find("failure") is not None


def test_bad_tool_json_detail_names_the_problem(tmp_path, monkeypatch):
    with FakeServer(faults=["bad-tool-json"], api_key=API_KEY) as server:
        _, report, _ = run_cli(tmp_path, server.base_url, "--only", "tools", monkeypatch=monkeypatch)
    tools = report["probes"][0]
    assert tools["status"] == "fail"
    assert "not valid JSON" in tools["detail"]


def test_think_leak_detail_names_the_tags(tmp_path, monkeypatch):
    with FakeServer(faults=["think-leak"], api_key=API_KEY) as server:
        _, report, _ = run_cli(tmp_path, server.base_url, "--only", "reasoning", monkeypatch=monkeypatch)
    assert "reasoning_content is empty" in report["probes"][0]["detail"]


def test_stalled_stream_fails_by_timeout_not_hang(tmp_path, monkeypatch):
    with FakeServer(faults=["stream-stall"], api_key=API_KEY) as server:
        start = time.monotonic()
        code, report, _ = run_cli(tmp_path, server.base_url, "--timeout", "2", monkeypatch=monkeypatch)
        elapsed = time.monotonic() - start
    assert code == 1
    # the tools and tool-args probes stream a tool call too, so they fail with streaming
    assert failed(report) == {"streaming", "tools", "tool-args"}
    streaming = next(p for p in report["probes"] if p["name"] == "streaming")
    assert "Timeout" in streaming["detail"]
    assert elapsed < 20, f"runner took {elapsed:.1f}s: it waited on the stalled stream"


def test_unreachable_endpoint_exits_3(tmp_path, monkeypatch, capsys):
    port = free_port()  # nothing listens there
    code, report, junit = run_cli(tmp_path, f"http://127.0.0.1:{port}", monkeypatch=monkeypatch)
    assert code == 3
    assert report["passed"] is False and report["probes"] == []
    assert "unreachable" in report["error"]
    assert "unreachable" in capsys.readouterr().err
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "1"


def test_no_key_skips_auth_and_fails_the_rest_with_401(tmp_path, monkeypatch):
    monkeypatch.delenv("SGL_API_KEY", raising=False)
    with FakeServer(api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url, "--only", "models,auth",
                                  env_key=False, monkeypatch=monkeypatch)
    assert code == 1
    statuses = {p["name"]: p for p in report["probes"]}
    assert statuses["auth"]["status"] == "skip"
    assert statuses["models"]["status"] == "fail" and "401" in statuses["models"]["detail"]


def test_api_key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SGL_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    with FakeServer(api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url, "--only", "models,auth",
                                  "--api-key-file", str(key_file), env_key=False)
    assert code == 0
    assert {p["status"] for p in report["probes"]} == {"pass"}


@pytest.mark.parametrize("argv", [
    ["probe", "--base-url", "http://127.0.0.1:1", "--only", "chat,nonsense"],
    ["probe", "--base-url", "http://127.0.0.1:1", "--only", "bench"],
    ["probe", "--base-url", "127.0.0.1:1"],
    ["probe", "--base-url", "http://127.0.0.1:1", "--api-key-file", "/nonexistent/key"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        cli.main(["probe"])  # --base-url missing
    assert exc.value.code == 2


def test_silent_endpoint_exits_3_by_timeout(tmp_path, monkeypatch):
    """A port that accepts connections but never answers: timeout on first contact = exit 3."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accept()ed: connect succeeds, no byte ever comes back
        port = listener.getsockname()[1]
        start = time.monotonic()
        code, report, _ = run_cli(tmp_path, f"http://127.0.0.1:{port}", "--timeout", "1",
                                  monkeypatch=monkeypatch)
        assert time.monotonic() - start < 10
    assert code == 3 and "ReadTimeout" in report["error"]


def test_auth_survives_a_server_that_drops_keep_alive_after_401(tmp_path, monkeypatch):
    """The gateway answers 401 without draining the body, then drops the connection: the next
    request on it fails at the connection level. The auth check is retried once, and says so."""
    with FakeServer(faults=["drop-after-401"], api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url, "--only", "auth", monkeypatch=monkeypatch)
        dropped = server.dropped
    auth = report["probes"][0]
    assert dropped >= 1, "the fixture never dropped a connection: the test proves nothing"
    assert code == 0, auth
    assert auth["status"] == "pass", auth
    assert auth["data"]["retries"], auth  # the retry is reported ...
    assert "retried once" in auth["detail"]
    assert report["retries"]  # ... in the probe and in the report
    assert API_KEY not in json.dumps(report)


def test_auth_retry_never_turns_an_accepted_wrong_key_into_a_pass(tmp_path, monkeypatch):
    with FakeServer(faults=["drop-after-401", "wrong-key-ok"], api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url, "--only", "auth", monkeypatch=monkeypatch)
    auth = report["probes"][0]
    assert code == 1
    assert auth["status"] == "fail", auth
    assert "with a wrong key -> 200" in auth["detail"], auth["detail"]


def test_a_connection_error_on_the_retry_too_fails_the_probe(tmp_path, monkeypatch):
    """Nothing is retried twice: a server that keeps dropping fails the probe with the error named."""
    from sgl_deploy.probe import ProbeRunner

    runner = ProbeRunner("http://127.0.0.1:9", api_key=API_KEY, model="m")

    class Dropping:
        calls = 0

        def request(self, *args, **kwargs):
            import httpx

            Dropping.calls += 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response")

        def close(self):
            pass

    runner._http = Dropping()
    result = runner.default.probe_auth()
    assert result.status == "fail"
    assert "RemoteProtocolError" in result.detail
    assert Dropping.calls == 8  # 4 checks, each tried twice, never more


def test_stray_think_close_detail_names_turn_2(tmp_path, monkeypatch):
    with FakeServer(faults=["stray-think-close"], api_key=API_KEY) as server:
        _, report, _ = run_cli(tmp_path, server.base_url, "--only", "multiturn", monkeypatch=monkeypatch)
    detail = report["probes"][0]["detail"]
    assert detail.startswith("turn 2:") and "</mm:think>" in detail


def test_merged_parallel_calls_detail(tmp_path, monkeypatch):
    with FakeServer(faults=["parallel-merged"], api_key=API_KEY) as server:
        _, report, _ = run_cli(tmp_path, server.base_url, "--only", "parallel-tools", monkeypatch=monkeypatch)
    assert "1 tool call(s), want 2" in report["probes"][0]["detail"]


def test_duplicated_stream_args_detail(tmp_path, monkeypatch):
    with FakeServer(faults=["stream-args-dup"], api_key=API_KEY) as server:
        _, report, _ = run_cli(tmp_path, server.base_url, "--only", "tool-args", monkeypatch=monkeypatch)
    detail = report["probes"][0]["detail"]
    assert detail.startswith("streamed:") and "duplicated" in detail


def test_accuracy_at_60_percent_fails_and_reports_the_number(tmp_path, monkeypatch):
    with FakeServer(faults=["accuracy-60"], api_key=API_KEY) as server:
        code, report, junit = run_cli(tmp_path, server.base_url, "--only", "accuracy", monkeypatch=monkeypatch)
    probe = report["probes"][0]
    assert code == 1 and probe["status"] == "fail"
    assert 0.5 <= probe["data"]["accuracy"] <= 0.7, probe["data"]
    assert probe["data"]["problems"] >= 100 and probe["data"]["concurrency"] == 8
    assert probe["data"]["p95_s"] is not None


def test_accuracy_threshold_is_a_variable(tmp_path, monkeypatch):
    with FakeServer(faults=["accuracy-60"], api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url, "--only", "accuracy",
                                  "--accuracy-threshold", "0.5", monkeypatch=monkeypatch)
    assert code == 0 and report["probes"][0]["data"]["threshold"] == 0.5


def test_thinking_ignored_warns_naming_the_upstream_issue(tmp_path, monkeypatch):
    with FakeServer(faults=["thinking-ignored"], api_key=API_KEY) as server:
        code, report, junit = run_cli(tmp_path, server.base_url, "--only", "thinking-off", monkeypatch=monkeypatch)
    probe = report["probes"][0]
    assert probe["status"] == "warn" and "sglang#32276" in probe["detail"]
    assert code == 0 and report["passed"] is True  # a warning, not a failure
    case = next(ET.parse(junit).getroot().iter("testcase"))
    assert "WARN" in case.find("system-out").text and "sglang#32276" in case.find("system-out").text


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/"])
def test_v1_base_url_against_a_strict_server(tmp_path, monkeypatch, suffix):
    with FakeServer(api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url + suffix, "--only", "models,chat",
                                  monkeypatch=monkeypatch)
        paths = [path for _, path in server.requests]
    assert code == 0, report
    assert report["base_url"] == server.base_url  # the normalised root
    assert "/v1/models" in paths and not any(p.startswith("/v1/v1") for p in paths)


def test_the_strict_server_refuses_a_doubled_v1(tmp_path, monkeypatch):
    """Without normalisation the /v1 form fails: the fixture really is strict."""
    from sgl_deploy import probe_client

    monkeypatch.setattr(probe_client, "normalize_base_url", lambda url: url.rstrip("/"))
    with FakeServer(api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url + "/v1", "--only", "models",
                                  monkeypatch=monkeypatch)
    assert code == 1 and "404" in report["probes"][0]["detail"]


def test_an_open_endpoint_is_reported_unauthenticated(tmp_path, monkeypatch, capsys):
    """No key and the endpoint answers: the report says UNAUTHENTICATED, loudly (issue 28)."""
    monkeypatch.delenv("SGL_API_KEY", raising=False)
    with FakeServer(api_key=None) as server:
        code, report, _ = run_cli(tmp_path, server.base_url, "--only", "models,auth", env_key=False, monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert code == 0 and report["unauthenticated"] is True, out
    assert "UNAUTHENTICATED: " + server.base_url in out and "serves anyone" in out
    assert "UNAUTHENTICATED" in {p["name"]: p for p in report["probes"]}["auth"]["detail"]
    # with a key: nothing of the kind
    with FakeServer(api_key=API_KEY) as server:
        code, report, _ = run_cli(tmp_path, server.base_url, "--only", "models,auth", monkeypatch=monkeypatch)
    assert code == 0 and "unauthenticated" not in report and "UNAUTHENTICATED" not in capsys.readouterr().out
