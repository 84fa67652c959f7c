"""Pure checks of the M3-depth probes (sgl_deploy/probe_m3.py) and the lab engine's solver."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lab", "engine"))
import lab_script  # noqa: E402
import lab_solver  # noqa: E402

from sgl_deploy import probe_m3 as m3  # noqa: E402


@pytest.mark.parametrize("url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"])
def test_base_url_normalised_to_the_root(url):
    assert m3.normalize_base_url(url) == "http://h:8000"


def test_accuracy_set_is_deterministic_and_large_enough():
    problems = m3.accuracy_problems()
    assert len(problems) >= 100 and problems == m3.accuracy_problems()
    assert all(isinstance(p["answer"], int) for p in problems)
    assert len({p["question"] for p in problems}) >= 100


def test_lab_solver_computes_every_answer_from_the_text():
    for problem in m3.accuracy_problems():
        prompt = m3.accuracy_prompt(problem["question"])
        assert lab_solver.is_problem(prompt)
        assert lab_solver.solve(prompt) == problem["answer"], problem


def test_lab_solver_is_not_a_lookup():
    # numbers it has never seen: computed, not remembered
    assert lab_solver.solve("What is 1234 * 3 + 1?") == 3703
    assert lab_solver.solve("Zed has 7 shells. Zed buys 5 more and then gives away 9. How many?") == 3
    assert lab_solver.solve("What is the meaning of life?") is None


def test_lab_model_answers_a_problem_with_an_answer_line():
    prompt = m3.accuracy_prompt("There are 7 boxes with 6 cards in each box. How many cards are there in total?")
    reply = lab_script.script_reply(lab_script.FAMILY_M3, [{"role": "user", "content": prompt}])
    assert m3.extract_integer(reply.text.rsplit("</mm:think>", 1)[-1]) == 42


@pytest.mark.parametrize("text, want", [
    ("so 3 + 4 = 7.\nAnswer: 7", 7), ("The answer is **1,204**.", 1204), ("= 12 then 15", 15),
    ("Answer: -3", -3), ("no number", None),
])
def test_extract_integer(text, want):
    assert m3.extract_integer(text) == want


def test_check_accuracy_threshold():
    outcomes = [{"ok": True}] * 9 + [{"ok": False}]
    assert m3.check_accuracy(outcomes, 0.9)[0] is True
    assert m3.check_accuracy(outcomes, 0.91)[0] is False
    assert m3.check_accuracy([], 0.9)[0] is False


def test_multiturn_stray_closer_in_turn_2_fails():
    good = {"content": "42", "reasoning_content": "thinking"}
    bad = {"content": "</mm:think>42", "reasoning_content": "thinking"}
    done = {"content": "done", "reasoning_content": "thinking"}
    ok, _ = m3.check_multiturn([good, good, done], ["42", "42", "done"], "minimax-m3")
    assert ok
    ok, detail = m3.check_multiturn([good, bad, done], ["42", "42", "done"], "minimax-m3")
    assert not ok and detail.startswith("turn 2") and "</mm:think>" in detail
    # append-think keeps the block in content; a stray closer without its block still fails
    inline = {"content": "<think>x</think>\n42"}
    assert m3.check_multiturn([inline, inline], ["42", "42"], "minimax-append-think")[0]
    assert not m3.check_multiturn([inline, {"content": "</think>42"}], ["42", "42"], "minimax-append-think")[0]


def _call(i, location):
    return {"id": f"call_{i:024x}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"location": location, "unit": "celsius"})}}


def _calls_response(calls):
    return {"choices": [{"message": {"content": "", "tool_calls": calls}, "finish_reason": "tool_calls"}]}


def test_parallel_calls():
    from sgl_deploy.probe import WEATHER_TOOL

    ok, _, _ = m3.check_parallel_calls(_calls_response([_call(1, "Paris"), _call(2, "Tokyo")]),
                                       WEATHER_TOOL, ("Paris", "Tokyo"))
    assert ok
    merged = _calls_response([_call(1, "Paris and Tokyo")])
    assert "1 tool call(s), want 2" in m3.check_parallel_calls(merged, WEATHER_TOOL, ("Paris", "Tokyo"))[1]
    same_id = _calls_response([_call(1, "Paris"), _call(1, "Tokyo")])
    assert "not distinct" in m3.check_parallel_calls(same_id, WEATHER_TOOL, ("Paris", "Tokyo"))[1]
    twice = _calls_response([_call(1, "Paris"), _call(2, "Paris")])
    assert "missing ['Tokyo']" in m3.check_parallel_calls(twice, WEATHER_TOOL, ("Paris", "Tokyo"))[1]


def test_nested_args_validate_and_match():
    args = json.dumps(m3.MEETING_EXPECT)
    assert m3.check_nested_args(args, m3.MEETING_TOOL, m3.MEETING_EXPECT)[0]
    flat = dict(m3.MEETING_EXPECT, attendees="Alice, Bob, Carol")
    assert "expected array" in m3.check_nested_args(json.dumps(flat), m3.MEETING_TOOL, m3.MEETING_EXPECT)[1]
    wrong = dict(m3.MEETING_EXPECT, slot={"day": "Tuesday", "hour": "10"})
    assert "expected integer" in m3.check_nested_args(json.dumps(wrong), m3.MEETING_TOOL, m3.MEETING_EXPECT)[1]


def _deltas(args: str, name_twice=False, dup=False):
    first = {"index": 0, "id": "call_x", "function": {"name": "schedule_meeting", "arguments": ""}}
    parts = [args[i:i + 5] for i in range(0, len(args), 5)] * (2 if dup else 1)
    rest = [{"index": 0, "id": None, "function": {"name": "schedule_meeting" if name_twice else None,
                                                   "arguments": p}} for p in parts]
    return [first] + rest


def test_streamed_call_shape():
    args = json.dumps(m3.MEETING_EXPECT)
    calls, problems = m3.check_streamed_call_shape(_deltas(args))
    assert not problems and calls[0]["arguments"] == args
    _, problems = m3.check_streamed_call_shape(_deltas(args, dup=True))
    assert any("duplicated" in p for p in problems)
    _, problems = m3.check_streamed_call_shape(_deltas(args, name_twice=True))
    assert any("sent" in p and "times" in p for p in problems)
    null_name = _deltas(args)
    null_name[0]["function"]["name"] = None
    _, problems = m3.check_streamed_call_shape(null_name)
    assert any("no function name" in p for p in problems)


def test_thinking_off_never_a_silent_pass():
    assert m3.check_thinking_off({"content": "42", "reasoning_content": None})[0] == "pass"
    status, detail = m3.check_thinking_off({"content": "42", "reasoning_content": "hmm"})
    assert status == "warn" and "sglang#32276" in detail
    status, detail = m3.check_thinking_off({"content": "<think>hmm</think>42"})
    assert status == "warn" and "sglang#32276" in detail
    assert m3.check_thinking_off({"content": "", "reasoning_content": "hmm"})[0] == "fail"


def test_sampling_defaults_reported():
    other = m3.describe_sampling({"preferred_sampling_params": None, "architectures": ["MiniMaxM2ForCausalLM"]})
    assert other["server_defaults"] is None and "not known" in other["source"]
    info = m3.describe_sampling({"preferred_sampling_params": None,
                                 "architectures": ["MiniMaxM3SparseForConditionalGeneration"]})
    assert info["server_defaults"]["top_k"] == 40 and "generation_config" in info["source"]
    assert info["recipe_differs"] == {"top_k": {"server": 40, "recipe": 20}}
    info = m3.describe_sampling({"preferred_sampling_params": '{"top_k": 20, "temperature": 1.0, "top_p": 0.95}'})
    assert info["source"].startswith("server") and info["recipe_differs"] == {}
    assert m3.describe_sampling(None)["server_defaults"] is None


def test_lab_model_parallel_and_nested_calls_in_m3_wire_format():
    from sgl_deploy.probe import WEATHER_TOOL

    reply = lab_script.script_reply(lab_script.FAMILY_M3, [{"role": "user", "content": m3.PARALLEL_QUESTION}],
                                    [WEATHER_TOOL])
    assert [c["location"] for c in reply.detail["calls"]] == ["Paris", "Tokyo"]
    assert reply.text.count("<invoke name=") == 2 and reply.text.count("<tool_call>") == 1
    reply = lab_script.script_reply(lab_script.FAMILY_M3, [{"role": "user", "content": m3.MEETING_QUESTION}],
                                    [m3.MEETING_TOOL])
    assert reply.detail["arguments"] == m3.MEETING_EXPECT
    ns = lab_solver.M3_NS
    assert f"{ns}<attendees>{ns}<item>Alice{ns}</item>" in reply.text
    assert f"{ns}<slot>{ns}<day>Tuesday{ns}</day>{ns}<hour>10{ns}</hour>{ns}</slot>" in reply.text
