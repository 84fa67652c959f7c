"""Checks and constants of ``sgl-deploy probe``: the first link of the probe chain.

The chain is one-way (issue 29; ``tests/unit/test_import_graph.py`` fails on a cycle):

``probe_checks`` (pure checks, constants, result types) -> ``probe_client`` (the HTTP/OpenAI client,
``Unreachable``, scrubbing, the run loop) -> the suites (``probe_m3``, ``probe_default``,
``recipe_suite``: composed over a client) -> ``probe`` (the CLI: arguments, exit codes, reports).

Everything here is pure (no network), so the checking logic is unit-tested without a server.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from sgl_deploy.errors import SglDeployError

# The MiniMax recipes' sampling (temperature 1.0, top_p 0.95, top_k 20 through extra_body).
RECIPE_SAMPLING = {"temperature": 1.0, "top_p": 0.95}
RECIPE_EXTRA_BODY = {"top_k": 20}

THINK_TAGS = ("<think>", "</think>", "<mm:think>", "</mm:think>")
# Reasoning parsers that keep the thinking inside `content` instead of `reasoning_content`.
IN_CONTENT_REASONING_PARSERS = frozenset({"minimax-append-think"})
# Raw tool-call markup that must never reach `content` when a tool parser works.
TOOL_MARKUP = ("<minimax:tool_call>", "]<]minimax[>[", "<invoke name=", "<tool_call>")

# The one get_weather tool: the upstream tutorial's, verbatim (datawhalechina/self-llm,
# models/MiniMax-M3/2-MiniMax-M3-SGLang.md). The default suite's tools and parallel-tools probes and
# the recipe suite's recipe_tools probe all send it.
WEATHER_TOOL = {
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

# The accuracy probe's default threshold (also the CLI's --accuracy-threshold default).
ACCURACY_THRESHOLD = 0.9
# The model's own sampling defaults (generation_config.json, applied by SGLang's default
# --sampling-defaults model) and the MiniMax recipe's, which the probes send.
MODEL_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 40}
RECIPE_SAMPLING_FULL = {"temperature": 1.0, "top_p": 0.95, "top_k": 20}

WEATHER_QUESTION = "What's the weather like in Paris today? Use celsius."
WEATHER_CITY = "paris"
WEATHER_RESULT = {"location": "Paris", "temperature": 22, "unit": "celsius", "condition": "sunny"}

COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 170, 40),
    "blue": (20, 50, 220),
    "yellow": (245, 220, 20),
}
COLOUR_WORDS = (
    "red", "green", "blue", "yellow", "white", "black", "orange", "purple", "pink",
    "brown", "gray", "grey", "cyan", "magenta",
)
VISION_QUESTION = "What colour is this image? Answer with one word."


# --------------------------------------------------------------------------- results


@dataclass
class ProbeResult:
    name: str
    status: str  # pass | fail | skip | warn (passes, with a known upstream problem named)
    latency_s: float | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    detail: str = ""
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RequestSample:
    """One request of the run, for the latency plot."""

    probe: str
    start_s: float
    latency_s: float
    ok: bool


class UsageError(SglDeployError):
    """Bad command-line input (exit 2)."""


# --------------------------------------------------------------------------- streaming


@dataclass
class StreamCapture:
    """What a streamed chat returned, with arrival times (seconds from request start)."""

    pieces: list = field(default_factory=list)  # (t, kind, text) kind: content|reasoning
    tool_deltas: list = field(default_factory=list)  # delta.tool_calls entries (dicts)
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    error: str | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    first_s: float | None = None
    last_s: float | None = None

    def tokens_per_s(self) -> float | None:
        tokens = (self.usage or {}).get("completion_tokens")
        if tokens is None:
            tokens = len(self.pieces) + len(self.tool_deltas)
        if self.first_s is None or self.last_s is None or self.last_s <= self.first_s:
            return None
        return tokens / (self.last_s - self.first_s)


# --------------------------------------------------------------------------- pure checks

_THINK_BLOCK_RE = re.compile(r"<(mm:)?think>.*?</\1think>", re.DOTALL)
_LEADING_CLOSE_RE = re.compile(r"^.*?</(?:mm:)?think>", re.DOTALL)
_CALL_ID_RE = re.compile(r"^call_[0-9a-f]{24}$")


def think_tags_in(text: str | None) -> list[str]:
    """The think tags present in ``text``."""
    return [tag for tag in THINK_TAGS if tag in (text or "")]


def strip_think(text: str | None) -> tuple[str, str]:
    """Split ``text`` into (answer, thinking): removes ``<think>…</think>`` and
    ``<mm:think>…</mm:think>`` blocks, and a leading block whose opening tag the chat
    template consumed (``…</think>answer``)."""
    text = text or ""
    thinking = []

    def keep(match):
        thinking.append(match.group(0))
        return ""

    answer = _THINK_BLOCK_RE.sub(keep, text)
    if "</think>" in answer or "</mm:think>" in answer:
        answer = _LEADING_CLOSE_RE.sub(keep, answer, count=1)
    inner = "".join(thinking)
    for tag in THINK_TAGS:
        inner = inner.replace(tag, "")
    return answer.strip(), inner.strip()


def reasoning_mode(parser: str | None) -> str:
    """``separate`` (reasoning_content), ``in-content`` (append-think) or ``unknown``."""
    if not parser:
        return "unknown"
    return "in-content" if parser in IN_CONTENT_REASONING_PARSERS else "separate"


def answer_text(message: dict) -> str:
    """The visible answer of an assistant message: content without think blocks."""
    answer, _ = strip_think(message.get("content"))
    return answer


def check_reasoning(message: dict, parser: str | None) -> tuple[bool, str]:
    """Is the reasoning where ``parser`` puts it, and the answer free of think tags?

    ``parser`` None means unknown (no /model_info, no --reasoning-parser): the message must
    then be consistent with one of the two modes.
    """
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or ""
    mode = reasoning_mode(parser)
    if mode == "unknown":
        mode = "separate" if reasoning.strip() else "in-content"
        label = f"parser unknown, looks {mode}"
    else:
        label = f"parser {parser}"
    if mode == "separate":
        if not reasoning.strip():
            return False, f"{label}: reasoning_content is empty"
        leaked = think_tags_in(content)
        if leaked:
            return False, f"{label}: think tags leaked into content: {', '.join(leaked)}"
        if not content.strip():
            return False, f"{label}: content is empty (no answer after the reasoning)"
        return True, f"{label}: reasoning_content {len(reasoning)} chars, content clean"
    if reasoning.strip():
        return False, f"{label}: reasoning_content is filled but this parser keeps thinking in content"
    answer, thinking = strip_think(content)
    if not thinking:
        return False, f"{label}: no <think>…</think> block in content"
    leaked = think_tags_in(answer)
    if leaked:
        return False, f"{label}: stray think tags after the block: {', '.join(leaked)}"
    if not answer:
        return False, f"{label}: no answer after the think block"
    return True, f"{label}: think block in content ({len(thinking)} chars), answer clean"


def contains_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text or "", re.IGNORECASE) is not None


def check_chat(response: dict, expected: str) -> tuple[bool, str]:
    """A non-streamed chat answer: finish reason, a checkable answer, usage counted."""
    choices = response.get("choices") or []
    if not choices:
        return False, "no choices in the response"
    choice = choices[0]
    finish = choice.get("finish_reason")
    message = choice.get("message") or {}
    answer = answer_text(message)
    usage = response.get("usage") or {}
    problems = []
    if finish not in ("stop", "length"):
        problems.append(f"finish_reason {finish!r} (want stop/length)")
    if not answer:
        problems.append("empty answer" + (" (cut by max_tokens)" if finish == "length" else ""))
    elif not contains_word(answer, expected):
        problems.append(f"answer {shorten(answer)!r} lacks {expected!r}")
    if not (usage.get("prompt_tokens") or 0) > 0:
        problems.append("usage.prompt_tokens not > 0")
    if not (usage.get("completion_tokens") or 0) > 0:
        problems.append("usage.completion_tokens not > 0")
    if problems:
        return False, "; ".join(problems)
    return True, f"answer {shorten(answer)!r} contains {expected!r}; finish {finish}"


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def validate_schema(value: Any, schema: dict, path: str = "$") -> list[str]:
    """Errors of ``value`` against a JSON-schema subset: type, enum, required, properties,
    additionalProperties (false), items. An empty list means valid."""
    errors: list[str] = []
    if not isinstance(schema, dict):
        return errors
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_JSON_TYPES.get(k, lambda v: True)(value) for k in kinds):
            errors.append(f"{path}: expected {'/'.join(kinds)}, got {type(value).__name__}")
            return errors
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']!r}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{path}: missing required {name!r}")
        for name, item in value.items():
            if name in props:
                errors.extend(validate_schema(item, props[name], f"{path}.{name}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {name!r}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors.extend(validate_schema(item, schema["items"], f"{path}[{i}]"))
    return errors


def check_tool_arguments(
    arguments: Any, schema: dict, expect: dict | None = None
) -> tuple[bool, str, dict | None]:
    """Arguments (a JSON string) parse, validate against ``schema`` and match ``expect``
    (``{"location_contains": "paris", "unit": "celsius"}``-style: ``<key>_contains`` is a
    case-insensitive substring check, other keys must be equal)."""
    if isinstance(arguments, dict):
        parsed = arguments
    else:
        try:
            parsed = json.loads(arguments or "")
        except (TypeError, ValueError) as exc:
            return False, f"arguments are not valid JSON ({exc}): {shorten(str(arguments))!r}", None
    if not isinstance(parsed, dict):
        return False, f"arguments are JSON {type(parsed).__name__}, not an object", None
    errors = validate_schema(parsed, schema)
    if errors:
        return False, "arguments fail the schema: " + "; ".join(errors), parsed
    for key, want in (expect or {}).items():
        if key.endswith("_contains"):
            name = key[: -len("_contains")]
            if want.lower() not in str(parsed.get(name, "")).lower():
                return False, f"argument {name}={parsed.get(name)!r} does not mention {want!r}", parsed
        elif parsed.get(key) != want:
            return False, f"argument {key}={parsed.get(key)!r}, want {want!r}", parsed
    return True, f"arguments {json.dumps(parsed, ensure_ascii=False)}", parsed


def check_tool_call(
    response: dict, tool: dict, expect: dict | None = None
) -> tuple[bool, str, dict | None]:
    """A non-streamed tool-call turn. Returns (ok, detail, the call as {id,name,arguments})."""
    choices = response.get("choices") or []
    if not choices:
        return False, "no choices in the response", None
    choice = choices[0]
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []
    content = message.get("content") or ""
    if not calls:
        markup = [m for m in TOOL_MARKUP if m in content]
        hint = f"; raw tool markup in content: {', '.join(markup)}" if markup else ""
        return False, f"no tool_calls (finish_reason {choice.get('finish_reason')!r}){hint}", None
    call = calls[0]
    function = call.get("function") or {}
    name = tool["function"]["name"]
    if function.get("name") != name:
        return False, f"called {function.get('name')!r}, want {name!r}", None
    if not call.get("id"):
        return False, "tool call without id", None
    ok, detail, parsed = check_tool_arguments(
        function.get("arguments"), tool["function"].get("parameters") or {}, expect
    )
    record = {"id": call.get("id"), "name": function.get("name"), "arguments": function.get("arguments")}
    if not ok:
        return False, detail, record
    if choice.get("finish_reason") != "tool_calls":
        return False, f"finish_reason {choice.get('finish_reason')!r} (want tool_calls)", record
    markup = [m for m in TOOL_MARKUP if m in content]
    if markup:
        return False, f"raw tool markup leaked into content: {', '.join(markup)}", record
    return True, f"{name}({detail.removeprefix('arguments ')})", record


def check_tool_followup(response: dict) -> tuple[bool, str]:
    """The turn after a tool result: a final answer, no further tool call."""
    choices = response.get("choices") or []
    if not choices:
        return False, "no choices in the follow-up response"
    choice = choices[0]
    message = choice.get("message") or {}
    if message.get("tool_calls"):
        return False, "follow-up turn called a tool again instead of answering"
    if choice.get("finish_reason") not in ("stop", "length"):
        return False, f"follow-up finish_reason {choice.get('finish_reason')!r}"
    answer = answer_text(message)
    if not answer:
        return False, "follow-up answer is empty"
    return True, f"final answer {shorten(answer)!r}"


def reassemble_tool_call_stream(deltas: list[dict]) -> tuple[dict[int, dict], list[str]]:
    """Rebuild streamed tool calls from ``delta.tool_calls`` entries (dicts, in order).

    SGLang's shape: the first delta of a call has ``id`` and ``function.name`` (arguments
    usually ""), later ones ``id: null``, ``name: null`` and argument fragments.
    Returns ({index: {"id","name","arguments"}}, problems).
    """
    calls: dict[int, dict] = {}
    problems: list[str] = []
    for entry in deltas:
        index = entry.get("index")
        if index is None:
            index = 0
            if "index" not in entry:
                problems.append("tool_call delta without index")
        function = entry.get("function") or {}
        call_id, name = entry.get("id"), function.get("name")
        if index not in calls:
            if not call_id:
                problems.append(f"call {index}: first delta has no id")
            if not name:
                problems.append(f"call {index}: first delta has no function name")
            calls[index] = {"id": call_id, "name": name, "arguments": ""}
        else:
            current = calls[index]
            if call_id and current["id"] and call_id != current["id"]:
                problems.append(f"call {index}: id changed mid-stream")
            if name and current["name"] and name != current["name"]:
                problems.append(f"call {index}: name changed mid-stream ({current['name']} -> {name})")
            current["id"] = current["id"] or call_id
            current["name"] = current["name"] or name
        calls[index]["arguments"] += function.get("arguments") or ""
    return calls, problems


def check_stream(capture: StreamCapture, expected: str | None = None) -> tuple[bool, str]:
    """A streamed answer: incremental chunks at different times, a finish reason, no error."""
    if capture.error:
        return False, capture.error
    timed = [t for t, kind, _ in capture.pieces if kind in ("content", "reasoning")]
    problems = []
    if len(timed) < 2:
        problems.append(f"{len(timed)} content/reasoning chunk(s), want >= 2")
    elif len({round(t, 4) for t in timed}) < 2:
        problems.append("all chunks arrived at the same instant (not incremental)")
    if not capture.finish_reason:
        problems.append("stream ended without a finish_reason")
    answer, _ = strip_think(capture.content)
    if expected is not None and capture.finish_reason != "tool_calls":
        if not answer:
            problems.append("streamed answer is empty")
        elif not contains_word(answer, expected):
            problems.append(f"streamed answer {shorten(answer)!r} lacks {expected!r}")
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"{len(timed)} chunks over {timed[-1] - timed[0]:.2f}s; finish {capture.finish_reason}"
    )


def check_models(
    models: dict | None,
    expected_model: str,
    model_info: dict | None,
    parsers: dict[str, str | None],
    vision: str,
) -> tuple[bool, str]:
    """``/v1/models`` lists the model; ``/model_info`` agrees on name, parsers and vision."""
    ids = [m.get("id") for m in (models or {}).get("data") or [] if isinstance(m, dict)]
    notes = []
    if expected_model not in ids:
        if ids == ["unknown"]:
            notes.append(f"router-style listing ('unknown'); model {expected_model!r} taken as given")
        else:
            return False, f"/v1/models lists {ids!r}, not {expected_model!r}"
    else:
        notes.append(f"{expected_model} listed")
    if model_info is None:
        notes.append("no /model_info")
        return True, "; ".join(notes)
    served = model_info.get("served_model_name")
    if served and served != expected_model and ids != ["unknown"]:
        return False, f"/model_info served_model_name {served!r} != {expected_model!r}"
    for key in ("reasoning_parser", "tool_call_parser"):
        want = parsers.get(key)
        have = model_info.get(key)
        if want and have != want:
            return False, f"/model_info {key} is {have!r}, want {want!r}"
    notes.append(
        f"parsers {model_info.get('reasoning_parser')}/{model_info.get('tool_call_parser')}"
    )
    if vision == "on" and not model_info.get("has_image_understanding"):
        return False, "--vision on but /model_info has_image_understanding is false"
    notes.append("vision " + ("yes" if model_info.get("has_image_understanding") else "no"))
    return True, "; ".join(notes)


def check_colour(answer: str, colour: str) -> tuple[bool, str]:
    if not answer:
        return False, "empty answer"
    if not contains_word(answer, colour):
        return False, f"answer {shorten(answer)!r}, want {colour!r}"
    others = [w for w in COLOUR_WORDS if w != colour and contains_word(answer, w)]
    if others:
        return False, f"answer {shorten(answer)!r} names other colours too: {', '.join(others)}"
    return True, f"answer {shorten(answer)!r} = {colour}"


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def make_png(rgb: tuple[int, int, int], size: int = 64) -> bytes:
    """A solid-colour RGB PNG, written with zlib + struct (no PIL on the controller)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size, 9))
        + chunk(b"IEND", b"")
    )


def png_data_url(rgb: tuple[int, int, int], size: int = 64) -> str:
    return "data:image/png;base64," + base64.b64encode(make_png(rgb, size)).decode()


def shorten(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"



def tokens_per_s(response: dict, latency: float) -> float | None:
    """Completion tokens per second of a non-streamed response (None when not counted)."""
    tokens = (response.get("usage") or {}).get("completion_tokens")
    return tokens / latency if tokens and latency > 0 else None


# --------------------------------------------------------------------------- base URL


def normalize_base_url(url: str) -> str:
    """The server root of ``url``: a trailing ``/`` or ``/v1`` (the OpenAI SDK form) is dropped,
    so ``http://h:8000/v1`` and ``http://h:8000`` both give ``http://h:8000``."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    return url

