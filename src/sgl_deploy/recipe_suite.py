"""`sgl-deploy probe --suite recipe`: the upstream deployment tutorial's four client requests.

The first thing a user does after a deployment is paste the tutorial's OpenAI-SDK examples
(datawhalechina/self-llm, models/MiniMax-M3/2-MiniMax-M3-SGLang.md), changing only ``base_url``
and ``api_key``. ``examples/`` holds them as a user writes them; this suite sends exactly the same
four requests (``REQUESTS``; ``tests/unit/test_examples.py`` checks that the examples and this
table agree) and checks the answers:

* ``recipe_chat``       a Chinese question, the recipe's sampling (temperature 1.0, top_p 0.95,
                        top_k 20 through ``extra_body``): a non-empty answer;
* ``recipe_streaming``  a Chinese request for a binary search tree, streamed: the answer arrives in
                        incremental ``delta.content`` chunks;
* ``recipe_tools``      "what is the weather in Beijing today, in Celsius" with the tutorial's
                        ``get_weather`` and ``tool_choice="auto"``: a ``get_weather`` call whose
                        arguments validate against the schema, with a location naming Beijing (in
                        any script) and unit ``celsius``;
* ``recipe_vision``     a text part asking to describe the image and an ``image_url`` part (a
                        solid-colour PNG as a data URL): a description naming the colour (English
                        or Chinese). Skipped like the default vision probe when the model has no
                        image understanding (``--vision``).

The default suite (``probe.PROBES``) is unchanged; this one is composed over the same client
(``probe_client.ProbeClient``) and reuses the pure checks of ``probe_checks``, including the one
``WEATHER_TOOL`` (the tutorial's, verbatim).
"""

from __future__ import annotations

import copy
import json
import random
from typing import Callable

from sgl_deploy.probe_checks import (
    COLOURS,
    WEATHER_TOOL,
    ProbeResult,
    StreamCapture,
    UsageError,
    answer_text,
    check_tool_call,
    contains_word,
    png_data_url,
    shorten,
    strip_think,
    tokens_per_s,
)
from sgl_deploy.probe_client import ProbeClient

SUITE = "recipe"
RECIPE_PROBES = ("recipe_chat", "recipe_streaming", "recipe_tools", "recipe_vision")

# The tutorial's tool, verbatim, is probe_checks.WEATHER_TOOL (the default suite sends it too).

# The four requests, without ``model`` (the served name) and, for the image, without the image
# URL (``vision_request`` adds a data URL). ``extra_body`` is the OpenAI SDK's keyword.
REQUESTS: dict[str, dict] = {
    "recipe_chat": {
        "messages": [{"role": "user", "content": "请介绍 MiniMax-M3 相比 M2.5 有哪些提升？"}],
        "max_tokens": 8192,
        "temperature": 1.0,
        "top_p": 0.95,
        "extra_body": {"top_k": 20},
    },
    "recipe_streaming": {
        "messages": [{"role": "user", "content": "请用 Python 实现一个二叉搜索树，包含插入、查找和删除操作。"}],
        "stream": True,
        "max_tokens": 32768,
        "temperature": 1.0,
        "top_p": 0.95,
    },
    "recipe_tools": {
        "messages": [{"role": "user", "content": "北京今天天气怎么样？请用摄氏度。"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
    },
    "recipe_vision": {
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "请描述这张图片中的内容。"},
            {"type": "image_url", "image_url": {"url": None}},
        ]}],
        "max_tokens": 4096,
    },
}

# Beijing in the scripts a model may answer in (the check is case-insensitive).
BEIJING_NAMES = ("beijing", "北京", "peking")
# Colour names in Chinese, for descriptions in the question's language.
COLOUR_NAMES_ZH = {"red": "红", "green": "绿", "blue": "蓝", "yellow": "黄"}


def request(name: str, model: str | None, image_url: str | None = None) -> dict:
    """The keyword arguments of ``client.chat.completions.create`` for probe ``name``."""
    body = copy.deepcopy(REQUESTS[name])
    if name == "recipe_vision":
        body["messages"][0]["content"][1]["image_url"]["url"] = image_url
    return {"model": model, **body}


# --------------------------------------------------------------------------- pure checks


def check_answer(response: dict) -> tuple[bool, str]:
    """A non-streamed answer: something visible after any reasoning."""
    choices = response.get("choices") or []
    if not choices:
        return False, "no choices in the response"
    choice = choices[0]
    message = choice.get("message") or {}
    answer = answer_text(message)
    finish = choice.get("finish_reason")
    if not answer:
        cut = " (cut by max_tokens)" if finish == "length" else ""
        return False, f"empty answer{cut}; finish {finish!r}"
    return True, f"answer {shorten(answer, 60)!r}; finish {finish}"


def check_content_stream(capture: StreamCapture) -> tuple[bool, str]:
    """A streamed answer read from ``delta.content``: at least two chunks, arriving at
    different times, a finish reason, a non-empty answer."""
    if capture.error:
        return False, capture.error
    timed = [t for t, kind, _ in capture.pieces if kind == "content"]
    problems = []
    if len(timed) < 2:
        problems.append(f"{len(timed)} delta.content chunk(s), want >= 2")
    elif len({round(t, 4) for t in timed}) < 2:
        problems.append("all delta.content chunks arrived at the same instant (not incremental)")
    if not capture.finish_reason:
        problems.append("stream ended without a finish_reason")
    answer, _ = strip_think(capture.content)
    if not answer:
        problems.append("streamed answer is empty")
    if problems:
        return False, "; ".join(problems)
    return True, f"{len(timed)} content chunks over {timed[-1] - timed[0]:.2f}s; finish {capture.finish_reason}"


def names_beijing(location) -> bool:
    low = str(location or "").lower()
    return any(name in low for name in BEIJING_NAMES)


def check_weather_call(response: dict) -> tuple[bool, str, dict | None]:
    """A ``get_weather`` call, arguments valid against the schema, unit celsius, Beijing named."""
    ok, detail, call = check_tool_call(response, WEATHER_TOOL, {"unit": "celsius"})
    if not ok:
        return False, detail, call
    arguments = json.loads(call["arguments"]) if isinstance(call["arguments"], str) else call["arguments"]
    if not names_beijing(arguments.get("location")):
        return False, f"location {arguments.get('location')!r} does not name Beijing (北京)", call
    return True, detail, call


def check_description(answer: str, colour: str) -> tuple[bool, str]:
    """The description names ``colour`` (English or Chinese) and none of the other test colours."""
    if not answer:
        return False, "empty description"

    def named(name: str) -> bool:
        return contains_word(answer, name) or COLOUR_NAMES_ZH[name] in answer

    if not named(colour):
        return False, f"description {shorten(answer)!r} does not name {colour} ({COLOUR_NAMES_ZH[colour]})"
    others = [c for c in COLOUR_NAMES_ZH if c != colour and named(c)]
    if others:
        return False, f"description {shorten(answer)!r} names other colours too: {', '.join(others)}"
    return True, f"description {shorten(answer, 60)!r} names {colour}"


def select_probes(only: str | None, skip: str | None, bench: bool) -> list[str]:
    """The recipe probes to run, in order. Raises UsageError on unknown names or --bench."""
    if bench:
        raise UsageError("--bench belongs to the default suite, not --suite recipe")

    def names(value: str | None) -> list[str]:
        items = [n.strip() for n in (value or "").split(",") if n.strip()]
        unknown = [n for n in items if n not in RECIPE_PROBES]
        if unknown:
            raise UsageError(
                f"unknown probe(s) for --suite recipe: {', '.join(unknown)} (known: {', '.join(RECIPE_PROBES)})")
        return items

    wanted, skipped = names(only), set(names(skip))
    return [n for n in RECIPE_PROBES if (not wanted or n in wanted) and n not in skipped]


# --------------------------------------------------------------------------- runner


class RecipeSuite:
    """The tutorial's four requests, sent exactly as given through ``client`` (its SDK client,
    timing record, scrubbing and options)."""

    def __init__(self, client: ProbeClient):
        self.client = client

    def probes(self) -> dict[str, Callable[[], ProbeResult]]:
        return {name: getattr(self, "probe_" + name) for name in RECIPE_PROBES}

    def chat(self, probe: str, **kwargs) -> tuple[dict, float]:
        """A non-streamed request exactly as given (the client's chat adds model and max_tokens otherwise)."""
        return self.client.chat(probe, as_sent=True, **kwargs)

    def stream_as_sent(self, probe: str, kwargs: dict) -> StreamCapture:
        """Send the streamed request as the example does (no stream_options) and time every
        ``delta.content`` / ``delta.reasoning_content`` piece (the client's one stream reader)."""
        return self.client.stream(probe, as_sent=True, **kwargs)

    def probe_recipe_chat(self) -> ProbeResult:
        response, latency = self.chat("recipe_chat", **request("recipe_chat", self.client.model))
        ok, detail = check_answer(response)
        choice = (response.get("choices") or [{}])[0]
        return ProbeResult(
            "recipe_chat", "pass" if ok else "fail", latency_s=latency,
            tokens_per_s=tokens_per_s(response, latency), detail=detail,
            data={"finish_reason": choice.get("finish_reason"), "usage": response.get("usage"),
                  "answer": answer_text(choice.get("message") or {})},
        )

    def probe_recipe_streaming(self) -> ProbeResult:
        capture = self.stream_as_sent("recipe_streaming", request("recipe_streaming", self.client.model))
        ok, detail = check_content_stream(capture)
        return ProbeResult(
            "recipe_streaming", "pass" if ok else "fail", latency_s=capture.total_s,
            ttft_s=capture.ttft_s, tokens_per_s=capture.tokens_per_s(), detail=detail,
            data={"content_chunks": sum(1 for _, kind, _ in capture.pieces if kind == "content"),
                  "reasoning_chunks": sum(1 for _, kind, _ in capture.pieces if kind == "reasoning"),
                  "finish_reason": capture.finish_reason},
        )

    def probe_recipe_tools(self) -> ProbeResult:
        response, latency = self.chat("recipe_tools", **request("recipe_tools", self.client.model))
        ok, detail, call = check_weather_call(response)
        choice = (response.get("choices") or [{}])[0]
        return ProbeResult(
            "recipe_tools", "pass" if ok else "fail", latency_s=latency,
            tokens_per_s=tokens_per_s(response, latency), detail=detail,
            data={"call": call, "finish_reason": choice.get("finish_reason")},
        )

    def probe_recipe_vision(self) -> ProbeResult:
        if self.client.vision == "off":
            return ProbeResult("recipe_vision", "skip", detail="--vision off")
        if self.client.vision == "auto":
            if self.client.model_info is None:
                return ProbeResult("recipe_vision", "skip", detail="no /model_info to tell; use --vision on")
            if not self.client.model_info.get("has_image_understanding"):
                return ProbeResult("recipe_vision", "skip", detail="model has no image understanding (/model_info)")
        colour = random.choice(sorted(COLOUR_NAMES_ZH))
        kwargs = request("recipe_vision", self.client.model, png_data_url(COLOURS[colour]))
        response, latency = self.chat("recipe_vision", **kwargs)
        message = ((response.get("choices") or [{}])[0]).get("message") or {}
        answer = answer_text(message)
        ok, detail = check_description(answer, colour)
        return ProbeResult(
            "recipe_vision", "pass" if ok else "fail", latency_s=latency,
            tokens_per_s=tokens_per_s(response, latency), detail=detail,
            data={"colour": colour, "answer": answer},
        )


class RecipeRunner(ProbeClient):
    """A client composed with :class:`RecipeSuite` (``sgl-deploy probe --suite recipe``); its report
    says ``"suite": "recipe"``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = RecipeSuite(self)

    def probes(self) -> dict[str, Callable[[], ProbeResult]]:
        return self.recipe.probes()

    def run(self, selected: list[str]) -> dict:
        result = super().run(selected)
        result["suite"] = SUITE
        return result
