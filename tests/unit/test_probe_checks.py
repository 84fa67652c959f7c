"""Unit tests of the probe runner's pure checking logic (no server)."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import datetime, timezone

import pytest

from sgl_deploy import probe, report
from sgl_deploy.probe import (
    WEATHER_TOOL,
    StreamCapture,
    UsageError,
    check_chat,
    check_colour,
    check_models,
    check_reasoning,
    check_stream,
    check_tool_arguments,
    check_tool_call,
    check_tool_followup,
    make_png,
    percentile,
    read_api_key,
    reassemble_tool_call_stream,
    select_probes,
    strip_think,
    validate_schema,
)

SCHEMA = WEATHER_TOOL["function"]["parameters"]
EXPECT = {"location_contains": "paris", "unit": "celsius"}


def response(message, finish="stop", usage=(10, 5)):
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
    }


# --------------------------------------------------------------------------- think tags


@pytest.mark.parametrize("text, answer, thinking", [
    ("<think>hmm</think>\n\nPARIS", "PARIS", "hmm"),
    ("<mm:think>a\nb</mm:think>42", "42", "a\nb"),
    ("reasoning only closed\n</think>\n\nok", "ok", "reasoning only closed"),
    ("plain", "plain", ""),
    ("", "", ""),
    (None, "", ""),
])
def test_strip_think(text, answer, thinking):
    assert strip_think(text) == (answer, thinking)


# --------------------------------------------------------------------------- reasoning


@pytest.mark.parametrize("parser", ["minimax-m3", "minimax", "deepseek-r1", "qwen3"])
def test_separating_parser_ok(parser):
    ok, detail = check_reasoning({"content": "7", "reasoning_content": "3+4 is 7"}, parser)
    assert ok, detail


@pytest.mark.parametrize("content", ["<think>x</think>7", "<mm:think>x</mm:think>7", "x</mm:think>7"])
def test_separating_parser_fails_on_leaked_tags(content):
    ok, detail = check_reasoning({"content": content, "reasoning_content": "x"}, "minimax-m3")
    assert not ok and "leaked" in detail


def test_separating_parser_fails_without_reasoning():
    ok, detail = check_reasoning({"content": "7", "reasoning_content": None}, "minimax")
    assert not ok and "reasoning_content is empty" in detail


def test_separating_parser_fails_without_answer():
    ok, detail = check_reasoning({"content": "", "reasoning_content": "thinking"}, "minimax-m3")
    assert not ok and "content is empty" in detail


def test_append_think_ok():
    msg = {"content": "<think>3+4 is 7\n</think>\n\n7", "reasoning_content": None}
    ok, detail = check_reasoning(msg, "minimax-append-think")
    assert ok, detail


def test_append_think_fails_when_reasoning_separated():
    msg = {"content": "7", "reasoning_content": "3+4"}
    ok, detail = check_reasoning(msg, "minimax-append-think")
    assert not ok and "keeps thinking in content" in detail


def test_append_think_fails_without_block():
    ok, detail = check_reasoning({"content": "7"}, "minimax-append-think")
    assert not ok and "no <think>" in detail


def test_append_think_fails_without_answer():
    ok, _ = check_reasoning({"content": "<think>x</think>"}, "minimax-append-think")
    assert not ok


def test_unknown_parser_accepts_either_mode():
    assert check_reasoning({"content": "7", "reasoning_content": "x"}, None)[0]
    assert check_reasoning({"content": "<think>x</think>7"}, None)[0]
    assert not check_reasoning({"content": "7"}, None)[0]


# --------------------------------------------------------------------------- chat


def test_check_chat_ok():
    ok, detail = check_chat(response({"content": "17 + 25 = 42."}), "42")
    assert ok, detail


def test_check_chat_strips_think_before_matching():
    ok, _ = check_chat(response({"content": "<think>4 and 2 ... 142?</think>The answer is 42"}), "42")
    assert ok
    ok, _ = check_chat(response({"content": "<think>42</think>no idea"}), "42")
    assert not ok


@pytest.mark.parametrize("resp, needle", [
    (response({"content": "142"}), "lacks"),
    (response({"content": ""}, finish="length"), "cut by max_tokens"),
    (response({"content": "42"}, finish="abort"), "finish_reason"),
    (response({"content": "42"}, usage=(0, 5)), "prompt_tokens"),
    (response({"content": "42"}, usage=(5, 0)), "completion_tokens"),
    ({"choices": []}, "no choices"),
])
def test_check_chat_failures(resp, needle):
    ok, detail = check_chat(resp, "42")
    assert not ok and needle in detail


# --------------------------------------------------------------------------- schema / tools


def test_validate_schema_ok():
    assert validate_schema({"location": "Paris", "unit": "celsius"}, SCHEMA) == []


@pytest.mark.parametrize("value, needle", [
    ({"unit": "celsius"}, "missing required 'location'"),
    ({"location": 3, "unit": "celsius"}, "expected string"),
    ({"location": "Paris", "unit": "kelvin"}, "not one of"),
    (["Paris"], "expected object"),
])
def test_validate_schema_errors(value, needle):
    errors = validate_schema(value, SCHEMA)
    assert errors and needle in errors[0]


def test_validate_schema_nested_and_types():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "opt": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
    }
    assert validate_schema({"n": 1, "tags": ["a"], "opt": None}, schema) == []
    assert validate_schema({"n": True}, schema) == ["$.n: expected integer, got bool"]
    assert validate_schema({"tags": ["a", 2]}, schema) == ["$.tags[1]: expected string, got int"]
    assert validate_schema({"x": 1}, schema) == ["$: unexpected property 'x'"]


def test_check_tool_arguments():
    ok, _, parsed = check_tool_arguments('{"location": "Paris, France", "unit": "celsius"}', SCHEMA, EXPECT)
    assert ok and parsed["location"] == "Paris, France"
    ok, detail, _ = check_tool_arguments('{"location": "Paris", "unit": celsius}', SCHEMA, EXPECT)
    assert not ok and "not valid JSON" in detail
    ok, detail, _ = check_tool_arguments('{"location": "Rome", "unit": "celsius"}', SCHEMA, EXPECT)
    assert not ok and "does not mention 'paris'" in detail
    ok, detail, _ = check_tool_arguments('{"location": "Paris", "unit": "fahrenheit"}', SCHEMA, EXPECT)
    assert not ok and "unit" in detail
    ok, detail, _ = check_tool_arguments("[1]", SCHEMA, EXPECT)
    assert not ok and "not an object" in detail


def tool_response(arguments, finish="tool_calls", name="get_weather", content=""):
    return response({"content": content, "tool_calls": [
        {"id": "call_" + "a" * 24, "type": "function", "function": {"name": name, "arguments": arguments}}
    ]}, finish=finish)


def test_check_tool_call_ok():
    ok, detail, call = check_tool_call(tool_response('{"location": "Paris", "unit": "celsius"}'), WEATHER_TOOL, EXPECT)
    assert ok, detail
    assert call["id"].startswith("call_") and call["name"] == "get_weather"


@pytest.mark.parametrize("resp, needle", [
    (tool_response('{"location": "Paris"', finish="tool_calls"), "not valid JSON"),
    (tool_response('{"location": "Paris", "unit": "celsius"}', finish="stop"), "finish_reason"),
    (tool_response('{"location": "Paris", "unit": "celsius"}', name="get_time"), "called 'get_time'"),
    (tool_response('{"location": "Paris", "unit": "celsius"}', content="<minimax:tool_call>"), "markup leaked"),
    (response({"content": ']<]minimax[>[<tool_call>...'}), "raw tool markup"),
    (response({"content": "It is sunny"}), "no tool_calls"),
])
def test_check_tool_call_failures(resp, needle):
    ok, detail, _ = check_tool_call(resp, WEATHER_TOOL, EXPECT)
    assert not ok and needle in detail


def test_check_tool_followup():
    assert check_tool_followup(response({"content": "It is 22 C in Paris."}))[0]
    assert not check_tool_followup(tool_response('{"location": "Paris"}', finish="tool_calls"))[0]
    assert not check_tool_followup(response({"content": "<think>x</think>"}))[0]


# --------------------------------------------------------------------------- streams


def test_reassemble_tool_call_stream_sglang_shape():
    deltas = [
        {"id": "call_1", "index": 0, "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"id": None, "index": 0, "function": {"name": None, "arguments": '{"location": "Pa'}},
        {"id": None, "index": 0, "function": {"name": None, "arguments": 'ris", "unit": "celsius"}'}},
    ]
    calls, problems = reassemble_tool_call_stream(deltas)
    assert problems == []
    assert calls == {0: {"id": "call_1", "name": "get_weather",
                         "arguments": '{"location": "Paris", "unit": "celsius"}'}}
    assert json.loads(calls[0]["arguments"])["unit"] == "celsius"


def test_reassemble_tool_call_stream_two_calls_and_problems():
    deltas = [
        {"id": "a", "index": 0, "function": {"name": "f", "arguments": "{}"}},
        {"id": None, "index": 1, "function": {"name": None, "arguments": "{"}},
        {"id": None, "index": 1, "function": {"name": "g", "arguments": "}"}},
        {"id": "b", "index": 0, "function": {"name": "h", "arguments": ""}},
    ]
    calls, problems = reassemble_tool_call_stream(deltas)
    assert calls[1]["arguments"] == "{}" and calls[1]["name"] == "g"
    assert "call 1: first delta has no id" in problems
    assert any("name changed" in p for p in problems)
    assert any("id changed" in p for p in problems)


def capture(pieces, finish="stop", content=None, error=None):
    cap = StreamCapture(pieces=pieces, finish_reason=finish, error=error)
    cap.content = content if content is not None else "".join(t for _, k, t in pieces if k == "content")
    return cap


def test_check_stream_ok():
    pieces = [(0.10, "reasoning", "hm"), (0.12, "content", "5"), (0.15, "content", "6")]
    ok, detail = check_stream(capture(pieces), "56")
    assert ok, detail


@pytest.mark.parametrize("cap, needle", [
    (capture([(0.1, "content", "56")]), "want >= 2"),
    (capture([(0.1, "content", "5"), (0.1, "content", "6")]), "same instant"),
    (capture([(0.1, "content", "5"), (0.2, "content", "6")], finish=None), "without a finish_reason"),
    (capture([(0.1, "content", "5"), (0.2, "content", "7")]), "lacks"),
    (capture([], error="stream failed after 2.0s: APITimeoutError"), "APITimeoutError"),
])
def test_check_stream_failures(cap, needle):
    ok, detail = check_stream(cap, "56")
    assert not ok and needle in detail


def test_stream_tokens_per_s():
    cap = StreamCapture(usage={"completion_tokens": 20}, first_s=1.0, last_s=3.0)
    assert cap.tokens_per_s() == 10.0
    assert StreamCapture(first_s=1.0, last_s=1.0).tokens_per_s() is None


# --------------------------------------------------------------------------- models / vision


MODELS = {"object": "list", "data": [{"id": "MiniMax-M3", "object": "model"}]}
INFO = {"served_model_name": "MiniMax-M3", "reasoning_parser": "minimax-m3",
        "tool_call_parser": "minimax-m3", "has_image_understanding": True}


def test_check_models():
    assert check_models(MODELS, "MiniMax-M3", INFO, {}, "auto")[0]
    assert check_models(MODELS, "MiniMax-M3", None, {}, "auto")[0]
    ok, detail = check_models(MODELS, "other", INFO, {}, "auto")
    assert not ok and "not 'other'" in detail
    ok, detail = check_models(MODELS, "MiniMax-M3", INFO, {"tool_call_parser": "qwen"}, "auto")
    assert not ok and "tool_call_parser" in detail
    ok, detail = check_models(MODELS, "MiniMax-M3", {**INFO, "has_image_understanding": False}, {}, "on")
    assert not ok and "has_image_understanding" in detail


def test_check_models_router_listing():
    ok, detail = check_models({"data": [{"id": "unknown"}]}, "MiniMax-M3", None, {}, "auto")
    assert ok and "router" in detail


def test_check_colour():
    assert check_colour("Red.", "red")[0]
    assert not check_colour("Blue", "red")[0]
    assert not check_colour("red or green", "red")[0]
    assert not check_colour("", "red")[0]
    assert not check_colour("reddish", "red")[0]


def _decode_solid_png(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    return header, raw


def test_make_png_is_a_valid_solid_png():
    header, raw = _decode_solid_png(make_png((220, 20, 20), size=8))
    assert header[:4] == (8, 8, 8, 2)
    assert len(raw) == 8 * (1 + 8 * 3)
    assert raw[1:4] == bytes((220, 20, 20))


def test_make_png_decodes_with_pillow_when_present():
    pil = pytest.importorskip("PIL.Image")
    import io

    image = pil.open(io.BytesIO(make_png((20, 50, 220), size=16)))
    assert image.size == (16, 16) and image.getpixel((3, 3)) == (20, 50, 220)


# --------------------------------------------------------------------------- misc


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)


def test_select_probes():
    assert select_probes(None, None, False) == list(probe.PROBES)
    assert select_probes(None, None, True)[-1] == "bench"
    assert select_probes("tools,chat", None, False) == ["chat", "tools"]
    assert "vision" not in select_probes(None, "vision", False)
    with pytest.raises(UsageError):
        select_probes("chat,bogus", None, False)
    with pytest.raises(UsageError):
        select_probes("bench", None, False)


def test_read_api_key(tmp_path):
    f = tmp_path / "k"
    f.write_text("  s3cret\n")
    assert read_api_key(None, str(f), env={}) == "s3cret"
    assert read_api_key("x", None, env={"SGL_API_KEY": "y"}) == "x"
    assert read_api_key(None, None, env={"SGL_API_KEY": "y"}) == "y"
    assert read_api_key(None, None, env={}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError):
        read_api_key(None, str(tmp_path / "empty"), env={})


def test_bench_command_and_output_scrub(tmp_path):
    cmd = probe.bench_command("/venv/bin/python", "http://h:8000", "M", 8, "/srv/m", str(tmp_path / "o.jsonl"))
    assert cmd[0] == "/venv/bin/python" and cmd[1] == "-c"
    joined = " ".join(cmd[3:])
    for flag in ("--backend sglang-oai-chat", "--base-url http://h:8000", "--dataset-name random-ids",
                 "--num-prompts 8", "--random-input-len 64", "--random-output-len 32", "--tokenizer /srv/m",
                 "--model M"):
        assert flag in joined
    assert "/server_info" in cmd[2]  # the shim answers it locally
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps({"completed": 1}) + "\n" + json.dumps(
        {"completed": 8, "output_throughput": 12.5, "server_info": {"api_key": "LEAK"}}) + "\n")
    record = probe.parse_bench_output(str(out))
    assert record["completed"] == 8 and "server_info" not in record


def test_run_bench_with_a_fake_bench_python(tmp_path):
    """The runner's bench plumbing with a stand-in "python" that writes a JSONL record."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        'out=""; while [ $# -gt 0 ]; do [ "$1" = "--output-file" ] && out="$2"; shift; done\n'
        'echo "{\\"completed\\": 4, \\"output_throughput\\": 99.0, \\"median_ttft_ms\\": 12.0, '
        '\\"server_info\\": {\\"api_key\\": \\"$OPENAI_API_KEY\\"}}" > "$out"\n'
    )
    fake.chmod(0o755)
    ok, detail, data = probe.run_bench(str(fake), "http://h", "M", "k3y", 4, None, timeout=30)
    assert ok, detail
    assert data["completed"] == 4 and data["output_throughput"] == 99.0
    assert "k3y" not in json.dumps(data)
    ok, detail, _ = probe.run_bench(str(tmp_path / "missing"), "http://h", "M", None, 4, None, timeout=5)
    assert not ok and "not found" in detail


# --------------------------------------------------------------------------- report


def sample_report(statuses=("pass", "fail", "skip")):
    probes = [
        {"name": f"p{i}", "status": s, "latency_s": 0.5 if s != "skip" else None, "ttft_s": None,
         "tokens_per_s": 10.0 if s == "pass" else None, "detail": f"detail {s}", "data": {}}
        for i, s in enumerate(statuses)
    ]
    requests = [{"probe": "p0", "start_s": 0.1, "latency_s": 0.5, "ok": True},
                {"probe": "p1", "start_s": 0.7, "latency_s": 0.9, "ok": False}]
    return report.build_report(base_url="http://h:1", model="M",
                               started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                               duration_s=1.5, probes=probes, requests=requests)


def test_report_passed_flag():
    assert sample_report(("pass", "skip"))["passed"] is True
    assert sample_report(("pass", "fail"))["passed"] is False
    assert sample_report(())["passed"] is False


def test_format_table():
    text = report.format_table(sample_report())
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["probe", "result", "latency", "TTFT", "tok/s", "detail"]
    assert "FAIL" in lines[3] and "0.500s" in lines[3]
    assert lines[-1].startswith("FAILED (failed: p1)")


def test_junit_xml(tmp_path):
    import xml.etree.ElementTree as ET

    path = tmp_path / "sub" / "junit.xml"
    report.write_junit(sample_report(), str(path))
    suite = ET.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["p1"].find("failure").get("message") == "detail fail"
    assert cases["p2"].find("skipped") is not None


def test_json_and_plot(tmp_path):
    data = sample_report()
    report.write_json(data, str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["probes"][1]["status"] == "fail"
    pytest.importorskip("matplotlib")
    assert report.write_plot(data, str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
