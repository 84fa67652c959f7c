"""The lab engine's intent-based tool choice (lab/engine/lab_intent.py): pure, no sglang needed."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lab", "engine"))
import lab_intent  # noqa: E402
import lab_script as ls  # noqa: E402

# The upstream tutorial's tool, as a user pastes it (required: location and unit).
TUTORIAL_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and state, e.g., 'San Francisco, CA'"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}


def tool(name, description, **props):
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": props, "required": list(props)}}}


STOCK = tool("get_quote", "Latest share price of a stock ticker", symbol={"type": "string"})
CLOCK = tool("now", "The current local time in a timezone", timezone={"type": "string"})
# a weather tool whose name says nothing: only the description tells
OPAQUE_WEATHER = tool("lookup_v2", "返回指定城市的天气预报和气温", city={"type": "string"})


def user(text):
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("question, place", [
    ("北京今天天气怎么样？请用摄氏度。", "北京"),
    ("What's the weather in Beijing today, in Celsius?", "Beijing"),
    ("How is the weather today in Celsius for Beijing?", "Beijing"),
    ("成都明天的天气如何？", "成都"),
    ("请问成都的天气", "成都"),
    ("今天成都天气怎么样？", "成都"),
    ("What's the weather like in San Francisco, CA today?", "San Francisco"),
    ("Is it going to rain in Austin?", "Austin"),
])
def test_tutorial_weather_question_calls_get_weather(question, place):
    reply = ls.script_reply(ls.FAMILY_M3, user(question), [STOCK, TUTORIAL_WEATHER, CLOCK], "auto")
    assert reply.kind == "tool_call", reply.text
    assert reply.detail["name"] == "get_weather"
    assert reply.detail["arguments"]["location"].startswith(place)
    assert reply.detail["arguments"]["unit"] == "celsius"


def test_unit_from_either_script():
    fn = TUTORIAL_WEATHER["function"]
    assert ls.tool_arguments(fn, "上海现在多少度？用华氏度。")["unit"] == "fahrenheit"
    assert ls.tool_arguments(fn, "Weather in Austin in fahrenheit please") == {
        "location": "Austin", "unit": "fahrenheit"}
    assert ls.tool_arguments(fn, "上海天气")["unit"] == "celsius"  # the default when nothing is asked


def test_choice_reads_the_description_not_only_the_name():
    assert lab_intent.choose_tool("杭州明天会下雨吗？", [STOCK, CLOCK, OPAQUE_WEATHER]) is OPAQUE_WEATHER["function"]
    assert lab_intent.choose_tool("What time is it in Tokyo?", [STOCK, OPAQUE_WEATHER, CLOCK]) is CLOCK["function"]
    assert lab_intent.choose_tool("腾讯的股价是多少？", [OPAQUE_WEATHER, CLOCK, STOCK]) is STOCK["function"]


def test_no_tool_when_nothing_fits():
    assert lab_intent.choose_tool("What is 2+2?", [TUTORIAL_WEATHER, STOCK]) is None
    assert lab_intent.choose_tool("请介绍 MiniMax-M3 相比 M2.5 有哪些提升？", [TUTORIAL_WEATHER, CLOCK]) is None
    reply = ls.script_reply(ls.FAMILY_M3, user("请用 Python 实现一个二叉搜索树"), [TUTORIAL_WEATHER], "auto")
    assert reply.kind == "answer"
    # tool_choice none: never a call, even when the intent fits
    assert ls.script_reply(ls.FAMILY_M3, user("北京今天天气怎么样？"), [TUTORIAL_WEATHER], "none").kind == "answer"


def test_a_name_outside_the_table_still_matches_literally():
    inventory = tool("lookup_inventory", "Warehouse records", sku={"type": "string"})
    assert lab_intent.choose_tool("How much inventory is left for sku 42?", [inventory]) is inventory["function"]


def test_vocabulary_is_one_table_of_known_kinds():
    kinds = {kind for kind, _, _ in lab_intent.VOCABULARY}
    assert kinds == {"topic", "enum", "place", "colour"}
    for _, _, terms in lab_intent.VOCABULARY:
        assert terms and all(t == t.lower() for t in terms)


def test_image_description_in_the_questions_language():
    from sgl_deploy.probe import png_data_url

    def describe(text):
        content = [{"type": "text", "text": text},
                   {"type": "image_url", "image_url": {"url": png_data_url((220, 20, 20), 16)}}]
        reply = ls.script_reply(ls.FAMILY_M3, [{"role": "user", "content": content}], thinking_mode="disabled")
        assert reply.kind == "vision"
        return reply.text

    assert describe("What colour is this image? Answer with one word.") == "Red"
    chinese = describe("请描述这张图片中的内容。")
    assert "红色" in chinese and "red" in chinese and "绿" not in chinese


def test_a_known_task_is_answered_in_the_questions_language():
    zh = ls.script_reply(ls.FAMILY_M3, user("请用 Python 实现一个二叉搜索树，包含插入、查找和删除操作。"),
                         thinking_mode="disabled")
    assert zh.kind == "answer" and zh.text.startswith("下面是一个二叉搜索树")
    namespace = {}
    exec(zh.text.split("```python")[1].split("```")[0], namespace)  # the code works
    tree = namespace["BST"]()
    for key in (5, 3, 8, 1, 4):
        tree.insert(key)
    tree.delete(3)
    assert tree.search(4) and not tree.search(3)
    en = ls.script_reply(ls.FAMILY_M3, user("Implement a binary search tree in Python"), thinking_mode="disabled")
    assert en.text.startswith("A binary search tree")
    assert lab_intent.task_answer("What is 2+2?") is None
