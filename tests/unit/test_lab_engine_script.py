"""The lab engine's scripted model (lab/engine/lab_script.py): pure, no sglang needed."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lab", "engine"))
import lab_script as ls  # noqa: E402

from sgl_deploy.probe import WEATHER_TOOL, png_data_url  # noqa: E402

M3_ARCH = {"architectures": ["MiniMaxM3SparseForConditionalGeneration"], "model_type": "minimax_m3_vl"}
M2_ARCH = {"architectures": ["MiniMaxM2ForCausalLM"], "model_type": "minimax_m2"}


def user(text):
    return [{"role": "user", "content": text}]


def test_model_family_and_vision():
    assert ls.model_family(M3_ARCH) == ls.FAMILY_M3
    assert ls.model_family({"architectures": ["MiniMaxM3SparseForCausalLM"]}) == ls.FAMILY_M3
    assert ls.model_family({"model_type": "minimax_m3"}) == ls.FAMILY_M3
    assert ls.model_family(M2_ARCH) == ls.FAMILY_M2
    with pytest.raises(ls.LabModelError):
        ls.model_family({"architectures": ["LlamaForCausalLM"]})
    assert ls.has_image_understanding(M3_ARCH)
    assert not ls.has_image_understanding({"architectures": ["MiniMaxM3SparseForCausalLM"]})
    assert not ls.has_image_understanding(M2_ARCH)


def test_read_model_config_fails_like_sglang(tmp_path):
    with pytest.raises(ls.LabModelError, match="does not exist"):
        ls.read_model_config(str(tmp_path / "nope"))
    with pytest.raises(ls.LabModelError, match="config.json"):
        ls.read_model_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(M2_ARCH))
    assert ls.read_model_config(str(tmp_path)) == M2_ARCH


def test_context_length_and_shards(tmp_path):
    assert ls.context_length({"max_position_embeddings": 4096}, ls.FAMILY_M2) == 4096
    assert ls.context_length({"text_config": {"max_position_embeddings": 8192}}, ls.FAMILY_M3) == 8192
    assert ls.context_length({}, ls.FAMILY_M3) == 1048576
    (tmp_path / "model-00001-of-00002.safetensors").write_text("")
    (tmp_path / "model-00002-of-00002.safetensors").write_text("")
    assert ls.count_shards(str(tmp_path)) == 2


@pytest.mark.parametrize("question, needle", [
    ("What is 17+25? Answer with just the number.", "42"),
    ("What is 6*7?", "42"),
    ("What is 9-4?", "5"),
    ("Reply with the word banana.", "banana"),
    ("Please respond with exactly OK", "OK"),
    ("Say hello", "hello"),
    ("What is the capital of France?", "Paris"),
    ("Tell me a story", "You said: Tell me a story"),
])
def test_rule_answer(question, needle):
    assert needle in ls.rule_answer(question)


def test_m3_reply_wire_format():
    reply = ls.script_reply(ls.FAMILY_M3, user("What is 2+2?"))
    assert reply.kind == "answer"
    assert reply.text.startswith("<mm:think>") and "</mm:think>2 + 2 = 4." in reply.text
    # thinking_mode=enabled: the template prefilled <mm:think>; disabled: no thinking
    enabled = ls.script_reply(ls.FAMILY_M3, user("What is 2+2?"), thinking_mode="enabled")
    assert not enabled.text.startswith("<mm:think>") and "</mm:think>" in enabled.text
    disabled = ls.script_reply(ls.FAMILY_M3, user("What is 2+2?"), thinking_mode="disabled")
    assert disabled.text == "2 + 2 = 4."


def test_m2_reply_wire_format():
    reply = ls.script_reply(ls.FAMILY_M2, user("What is 2+2?"))
    # the M2 template opens <think>: the output starts inside the block
    assert "<think>" not in reply.text
    assert reply.text.endswith("\n</think>\n\n2 + 2 = 4.")


def test_tool_call_m3_and_m2():
    question = "What's the weather like in San Francisco, CA today? Use celsius."
    m3 = ls.script_reply(ls.FAMILY_M3, user(question), [WEATHER_TOOL])
    assert m3.kind == "tool_call"
    args = {"location": "San Francisco, CA", "unit": "celsius"}
    assert m3.detail == {"name": "get_weather", "arguments": args, "calls": [args]}
    ns = ls.M3_NS
    assert f'{ns}<tool_call>\n{ns}<invoke name="get_weather">\n{ns}<location>San Francisco, CA{ns}</location>' in m3.text
    assert m3.text.endswith(f"{ns}</invoke>\n{ns}</tool_call>")
    m2 = ls.script_reply(ls.FAMILY_M2, user(question), [WEATHER_TOOL])
    assert '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="location">San Francisco, CA</parameter>' in m2.text
    assert m2.text.endswith("</invoke>\n</minimax:tool_call>")


def test_tool_choice_none_and_unmatched_question():
    assert ls.script_reply(ls.FAMILY_M3, user("weather in Paris?"), [WEATHER_TOOL], "none").kind == "answer"
    assert ls.script_reply(ls.FAMILY_M3, user("What is 2+2?"), [WEATHER_TOOL]).kind == "answer"


def test_fahrenheit_when_asked():
    args = ls.tool_arguments(WEATHER_TOOL["function"], "Weather in Austin in fahrenheit please")
    assert args == {"location": "Austin", "unit": "fahrenheit"}


def test_tool_result_turn_quotes_the_result():
    messages = user("weather in Paris?") + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 22}'},
    ]
    reply = ls.script_reply(ls.FAMILY_M3, messages, [WEATHER_TOOL])
    assert reply.kind == "tool_result"
    assert '{"temperature": 22}' in reply.text and "get_weather" in reply.text


@pytest.mark.parametrize("colour, rgb", [
    ("red", (220, 20, 20)), ("green", (20, 170, 40)), ("blue", (20, 50, 220)),
    ("yellow", (245, 220, 20)), ("white", (255, 255, 255)), ("black", (0, 0, 0)),
])
def test_vision_names_the_colour(colour, rgb):
    content = [{"type": "image_url", "image_url": {"url": png_data_url(rgb, 16)}},
               {"type": "text", "text": "What colour is this image?"}]
    reply = ls.script_reply(ls.FAMILY_M3, [{"role": "user", "content": content}])
    assert reply.kind == "vision" and reply.detail["colour"] == colour


def test_stdlib_png_decoder():
    data = ls.base64.b64decode(png_data_url((10, 20, 30), 4).split(",", 1)[1])
    assert ls.decode_png(data) == [(10, 20, 30)] * 16


def test_tokenize_keeps_markers_whole():
    text = ls.script_reply(ls.FAMILY_M3, user("weather in Paris?"), [WEATHER_TOOL]).text
    tokens = ls.tokenize(text)
    assert "".join(tokens) == text
    assert ls.M3_NS in tokens and "<mm:think>" in tokens and "</mm:think>" in tokens
    assert all(len(t) <= 4 for t in tokens if t not in ls.ATOMIC_MARKERS)
    m2 = ls.tokenize("x</think>\n\n<minimax:tool_call>\n<invoke")
    assert "</think>" in m2 and "<minimax:tool_call>" in m2


def test_limit_tokens():
    tokens = ["a", "b", "c"]
    assert ls.limit_tokens(tokens, None) == (tokens, "stop")
    assert ls.limit_tokens(tokens, 2) == (["a", "b"], "length")
    padded, finish = ls.limit_tokens(tokens, 6, ignore_eos=True)
    assert len(padded) == 6 and finish == "length"


def test_tool_call_pairing_error():
    call = {"role": "assistant", "tool_calls": [{"id": "c1"}]}
    assert ls.tool_call_pairing_error([call, {"role": "tool", "tool_call_id": "c1"}]) is None
    assert "does not match" in ls.tool_call_pairing_error([call, {"role": "tool", "tool_call_id": "c2"}])
    assert "must follow" in ls.tool_call_pairing_error([{"role": "user"}, {"role": "tool", "tool_call_id": "x"}])
    assert ls.tool_call_pairing_error([{"role": "user"}, call]) is None  # last message: fine


def test_media_part_type_and_prompt_tokens():
    content = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    assert ls.media_part_type([{"role": "user", "content": content}]) == "image_url"
    assert ls.media_part_type(user("hi")) is None
    assert ls.prompt_tokens(user("hello there")) >= 1


def test_launch_errors_refuse_what_sglang_refuses_later():
    """ep must divide tp (SGLang's argv checks pass --tp 8 --ep 3 and fail at launch)."""
    from types import SimpleNamespace

    import sgl_lab_engine  # imports no sglang at module level

    def args(**kw):
        base = dict(tp_size=8, ep_size=1, pp_size=1, nnodes=1, dp_size=1,
                    served_model_name="MiniMax-M3", model_path="/srv/m")
        return SimpleNamespace(**{**base, **kw})

    assert sgl_lab_engine.launch_errors(args()) == []
    assert sgl_lab_engine.launch_errors(args(ep_size=8)) == []
    assert "multiple of ep_size (3)" in sgl_lab_engine.launch_errors(args(ep_size=3))[0]
    assert "divisible by number of nodes" in sgl_lab_engine.launch_errors(args(tp_size=4, nnodes=3))[0]
    assert "must not contain ':'" in sgl_lab_engine.launch_errors(args(served_model_name="a:b"))[0]


def _fake_args(tmp_path, **kw):
    from types import SimpleNamespace

    base = dict(tp_size=4, ep_size=1, pp_size=1, nnodes=1, dp_size=1, node_rank=0,
                served_model_name=None, model_path=str(tmp_path / "model"), api_key=None,
                reasoning_parser="auto", tool_call_parser="auto", context_length=None,
                enable_metrics=False, tokenizer_path=None, host="127.0.0.1", port=1)
    return SimpleNamespace(**{**base, **kw})


def test_main_exit_at_start_and_model_dir_errors(tmp_path, monkeypatch, capsys):
    """main() without sglang: parse_argv replaced; SGLang-like refusals before any loading."""
    import sgl_lab_engine

    monkeypatch.setattr(sgl_lab_engine, "parse_argv", lambda argv: _fake_args(tmp_path))
    monkeypatch.setenv("SGL_LAB_EXIT_AT_START", "7")
    assert sgl_lab_engine.main([]) == 7
    monkeypatch.delenv("SGL_LAB_EXIT_AT_START")
    assert sgl_lab_engine.main([]) == 1  # no model dir
    assert "does not exist" in capsys.readouterr().out
    (tmp_path / "model").mkdir()
    assert sgl_lab_engine.main([]) == 1  # no config.json
    assert "config.json" in capsys.readouterr().out
    (tmp_path / "model" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert sgl_lab_engine.main([]) == 1
    assert "MiniMax-M2/M3 only" in capsys.readouterr().out
    monkeypatch.setattr(sgl_lab_engine, "parse_argv", lambda argv: _fake_args(tmp_path, ep_size=3))
    assert sgl_lab_engine.main([]) == 1
    assert "multiple of ep_size (3)" in capsys.readouterr().out


def test_engine_resolves_auto_parsers_and_vision(tmp_path):
    import sgl_lab_engine

    engine = sgl_lab_engine.Engine(_fake_args(tmp_path), M3_ARCH)
    assert (engine.reasoning_parser, engine.tool_call_parser) == ("minimax-m3", "minimax-m3")
    assert engine.multimodal and engine.served_model_name == str(tmp_path / "model")
    info = engine.model_info()
    assert info["has_image_understanding"] is True and info["model_type"] == "minimax_m3_vl"
    m2 = sgl_lab_engine.Engine(_fake_args(tmp_path, api_key="k"), M2_ARCH)
    assert (m2.reasoning_parser, m2.tool_call_parser) == ("minimax", "minimax-m2")
    assert not m2.multimodal and m2.context_len == 196608
    assert m2.model_card()["owned_by"] == "sgl-lab-engine (NOT SGLang)"


def test_metrics_text():
    import sgl_lab_engine

    metrics = sgl_lab_engine.Metrics()
    metrics.begin()
    metrics.end(prompt=10, completion=20, ttft=0.2, e2e=0.7)
    text = metrics.render("M", 1000)
    labels = 'engine_type="unified",model_name="M",is_streaming="false"'  # SGLang's own labels
    assert f"sglang:num_requests_total{{{labels}}} 1.0" in text
    assert f"sglang:generation_tokens_total{{{labels}}} 20.0" in text
    assert f'sglang:time_to_first_token_seconds_bucket{{{labels},le="0.1"}} 0.0' in text
    assert f'sglang:time_to_first_token_seconds_bucket{{{labels},le="0.2"}} 1.0' in text
    assert f"sglang:e2e_request_latency_seconds_count{{{labels}}} 1.0" in text
