"""`sgl-deploy probe`: post-deploy capability probes against an SGLang endpoint.

Each probe makes real requests (OpenAI Python SDK for chat, plain httpx for ``/v1/models``,
``/model_info``, ``/health`` and the auth check) and passes its verdict through a small pure
check function (``check_*``, ``validate_schema``, ``reassemble_tool_call_stream``), so the
checking logic is unit-tested without a server.

Rules: never call ``/server_info`` (SGLang echoes the API key there), never print the key.

Exit codes: 0 every selected probe passed (skips allowed), 1 some probe failed,
2 usage error, 3 endpoint unreachable on first contact.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from sgl_deploy.probe_m3 import ACCURACY_THRESHOLD, M3Probes, normalize_base_url

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

PROBES = (
    "models", "chat", "streaming", "reasoning", "vision", "tools", "auth", "concurrency",
    # M3 depth (sgl_deploy.probe_m3, issue #18)
    "multiturn", "parallel-tools", "tool-args", "thinking-off", "sampling", "accuracy",
)
OPTIONAL_PROBES = ("bench",)  # only with --bench

# The MiniMax recipes' sampling (temperature 1.0, top_p 0.95, top_k 20 through extra_body).
RECIPE_SAMPLING = {"temperature": 1.0, "top_p": 0.95}
RECIPE_EXTRA_BODY = {"top_k": 20}

THINK_TAGS = ("<think>", "</think>", "<mm:think>", "</mm:think>")
# Reasoning parsers that keep the thinking inside `content` instead of `reasoning_content`.
IN_CONTENT_REASONING_PARSERS = frozenset({"minimax-append-think"})
# Raw tool-call markup that must never reach `content` when a tool parser works.
TOOL_MARKUP = ("<minimax:tool_call>", "]<]minimax[>[", "<invoke name=", "<tool_call>")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": "City and state, e.g. 'San Francisco, CA'",
                },
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
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


class Unreachable(Exception):
    """The endpoint could not be contacted at all (exit 3)."""


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


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


def check_stream(capture: "StreamCapture", expected: str | None = None) -> tuple[bool, str]:
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


def select_probes(only: str | None, skip: str | None, bench: bool) -> list[str]:
    """The probes to run, in canonical order. Raises UsageError on unknown names."""
    known = PROBES + OPTIONAL_PROBES

    def names(value: str | None) -> list[str]:
        items = [n.strip() for n in (value or "").split(",") if n.strip()]
        unknown = [n for n in items if n not in known]
        if unknown:
            raise UsageError(f"unknown probe(s): {', '.join(unknown)} (known: {', '.join(known)})")
        return items

    wanted = names(only)
    skipped = set(names(skip))
    base = list(PROBES) + (["bench"] if bench else [])
    if wanted:
        if "bench" in wanted and not bench:
            raise UsageError("probe 'bench' needs --bench")
        base = [n for n in base if n in wanted]
    return [n for n in base if n not in skipped]


def read_api_key(api_key: str | None, api_key_file: str | None, env=os.environ) -> str | None:
    if api_key and api_key_file:
        raise UsageError("give --api-key or --api-key-file, not both")
    if api_key_file:
        try:
            with open(api_key_file, encoding="utf-8") as fh:
                key = fh.read().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --api-key-file: {exc.strerror}") from None
        if not key:
            raise UsageError("--api-key-file is empty")
        return key
    return api_key or env.get("SGL_API_KEY") or None


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


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    return obj.model_dump()


# --------------------------------------------------------------------------- runner


class ProbeRunner(M3Probes):
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
        reasoning_parser: str | None = None,
        tool_call_parser: str | None = None,
        vision: str = "auto",
        image_url: str | None = None,
        concurrency: int = 8,
        max_tokens: int = 1024,
        bench_python: str | None = None,
        bench_num_prompts: int = 16,
        bench_tokenizer: str | None = None,
        log: Callable[[str], None] | None = None,
        router: bool = False,
        accuracy_threshold: float = ACCURACY_THRESHOLD,
        ca_file: str | None = None,
    ):
        # The server root: the OpenAI SDK form (.../v1) is accepted and normalised.
        self.base_url = normalize_base_url(base_url)
        self.accuracy_threshold = accuracy_threshold
        # Target is the gateway (smg, or an old sglang-router): it serves /v1/models without
        # checking the key (upstream behaviour), so the auth probe checks the generation endpoints only there.
        self.router = router
        # https: verify the server against this CA bundle (a private CA); None: the system store.
        self.ca_file = ca_file
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self.cli_parsers = {"reasoning_parser": reasoning_parser, "tool_call_parser": tool_call_parser}
        self.vision = vision
        self.image_url = image_url
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.bench_python = bench_python
        self.bench_num_prompts = bench_num_prompts
        self.bench_tokenizer = bench_tokenizer
        self.log = log or (lambda _msg: None)
        self.samples: list[RequestSample] = []
        self._samples_lock = threading.Lock()
        self._t0 = time.monotonic()
        self.models_json: dict | None = None
        self.models_latency_s: float | None = None
        self.models_error: str | None = None
        self.model_info: dict | None = None
        self.health_status: int | None = None
        self._http = None
        self._client = None
        # Requests retried once after a connection-level error (a stale keep-alive connection
        # that the server closed after an error response). Reported, never hidden.
        self.retries: list[str] = []

    # ---- plumbing

    def scrub(self, text: str) -> str:
        text = str(text)
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return text

    def auth_headers(self, key: str | None = "default") -> dict:
        key = self.api_key if key == "default" else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def http(self):
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self._httpx_timeout(), follow_redirects=False,
                                      verify=self._verify())
        return self._http

    def _verify(self):
        """httpx's verify: an SSLContext on the CA bundle, or True (the system store)."""
        if not self.ca_file:
            return True
        import ssl

        return ssl.create_default_context(cafile=self.ca_file)

    def _httpx_timeout(self):
        import httpx

        return httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))

    @property
    def client(self):
        if self._client is None:
            import openai

            extra = {}
            if self.ca_file:  # the SDK's own client otherwise (its connection limits and defaults)
                extra["http_client"] = openai.DefaultHttpxClient(timeout=self._httpx_timeout(), verify=self._verify())
            self._client = openai.OpenAI(
                base_url=f"{self.base_url}/v1",
                api_key=self.api_key or "EMPTY",
                timeout=self._httpx_timeout(),
                max_retries=0,
                **extra,
            )
        return self._client

    def close(self) -> None:
        for obj in (self._client, self._http):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # pragma: no cover
                pass

    def record(self, probe: str, start: float, latency: float, ok: bool) -> None:
        with self._samples_lock:
            self.samples.append(RequestSample(probe, start - self._t0, latency, ok))

    def request_safe(self, label: str, method: str, path: str, key: str | None = "default", **kwargs):
        """An HTTP request that is safe to repeat (a GET, or an auth check that must be refused).

        Servers may close a keep-alive connection after an error response (a 401 sent without
        draining the request body), so the next request on that connection fails with a
        connection-level error before any response. Such a request is retried once, on a new
        connection, and the retry is recorded (``self.retries``) for the report. A timeout is not
        retried (a hang is a real failure), and nothing is retried twice.
        """
        import httpx

        url = self.base_url + path
        headers = {**self.auth_headers(key), **kwargs.pop("headers", {})}
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as exc:
            self.retries.append(f"{label}: {type(exc).__name__}: {exc}")
            self.log(f"retrying {label} once on a new connection after {type(exc).__name__}")
            return self.http.request(method, url, headers={**headers, "Connection": "close"}, **kwargs)

    def get(self, path: str, key: str | None = "default"):
        return self.request_safe(f"GET {path}", "GET", path, key=key)

    def chat(self, probe: str, **kwargs) -> tuple[dict, float]:
        """A non-streamed chat completion through the OpenAI SDK -> (response dict, latency)."""
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("max_tokens", self.max_tokens)
        client = self.client  # created (openai imported) outside the timed section
        start = time.monotonic()
        ok = False
        try:
            response = client.chat.completions.create(**kwargs)
            ok = True
            return response.model_dump(), time.monotonic() - start
        finally:
            self.record(probe, start, time.monotonic() - start, ok)

    def stream(self, probe: str, **kwargs) -> StreamCapture:
        """A streamed chat completion; never hangs longer than the timeout between chunks."""
        kwargs.setdefault("model", self.model)
        kwargs.setdefault("max_tokens", self.max_tokens)
        capture = StreamCapture()
        client = self.client
        start = time.monotonic()
        try:
            stream = client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **kwargs
            )
            with stream:
                for chunk in stream:
                    now = time.monotonic() - start
                    if now > self.timeout * 4:
                        raise TimeoutError(f"stream still running after {now:.0f}s")
                    data = chunk.model_dump()
                    if data.get("usage"):
                        capture.usage = data["usage"]
                    for choice in data.get("choices") or []:
                        delta = choice.get("delta") or {}
                        reasoning = delta.get("reasoning_content")
                        content = delta.get("content")
                        for kind, text in (("reasoning", reasoning), ("content", content)):
                            if text:
                                capture.pieces.append((now, kind, text))
                                if kind == "content":
                                    capture.content += text
                                else:
                                    capture.reasoning += text
                        for entry in delta.get("tool_calls") or []:
                            capture.tool_deltas.append(_as_dict(entry))
                        if (reasoning or content or delta.get("tool_calls")) and capture.ttft_s is None:
                            capture.ttft_s = now
                        if reasoning or content or delta.get("tool_calls"):
                            capture.first_s = capture.first_s if capture.first_s is not None else now
                            capture.last_s = now
                        if choice.get("finish_reason"):
                            capture.finish_reason = choice["finish_reason"]
        except Exception as exc:  # timeouts, connection drops, HTTP errors
            capture.error = self.scrub(f"stream failed after {time.monotonic() - start:.1f}s: "
                                       f"{type(exc).__name__}: {exc}")
        capture.total_s = time.monotonic() - start
        self.record(probe, start, capture.total_s, capture.error is None)
        return capture

    # ---- discovery

    def contact(self) -> None:
        """First contact (``GET /health``, no auth). Raises Unreachable on connection errors."""
        import httpx

        try:
            response = self.get("/health", key=None)
        except (httpx.TransportError, httpx.InvalidURL) as exc:  # refused, DNS, timeout, not HTTP
            raise Unreachable(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        self.health_status = response.status_code

    def discover(self) -> None:
        import httpx

        try:
            start = time.monotonic()
            response = self.get("/v1/models")
            self.models_latency_s = time.monotonic() - start
            if response.status_code == 200:
                self.models_json = response.json()
            else:
                self.models_error = f"/v1/models answered HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            self.models_error = f"/v1/models failed: {type(exc).__name__}: {exc}"
        for path in ("/model_info", "/get_model_info"):  # the router only has the old name
            try:
                response = self.get(path)
            except httpx.HTTPError:
                break
            if response.status_code == 200:
                try:
                    self.model_info = response.json()
                except ValueError:
                    pass
                break
            if response.status_code != 404:
                break
        if not self.model and self.models_json:
            ids = [m.get("id") for m in self.models_json.get("data") or []]
            self.model = ids[0] if ids else None

    def parser(self, kind: str) -> tuple[str | None, str]:
        """(parser name, source) for ``reasoning_parser`` / ``tool_call_parser``."""
        if self.cli_parsers.get(kind):
            return self.cli_parsers[kind], "command line"
        if self.model_info is not None and kind in self.model_info:
            return self.model_info.get(kind), "/model_info"
        return None, "unknown"

    # ---- probes

    def probe_models(self) -> ProbeResult:
        if self.models_json is None:
            return ProbeResult("models", "fail", detail=self.models_error or "no /v1/models")
        parsers = {k: self.parser(k)[0] for k in ("reasoning_parser", "tool_call_parser")}
        ok, detail = check_models(
            self.models_json, self.model or "", self.model_info,
            {k: self.cli_parsers[k] for k in parsers}, self.vision,
        )
        if ok and self.health_status != 200:
            ok, detail = False, f"/health answered HTTP {self.health_status}; {detail}"
        latency = self.models_latency_s
        data = {
            "ids": [m.get("id") for m in self.models_json.get("data") or []],
            "owned_by": [m.get("owned_by") for m in self.models_json.get("data") or []],
            "health_status": self.health_status,
            "model_info": {k: (self.model_info or {}).get(k) for k in (
                "served_model_name", "model_path", "reasoning_parser", "tool_call_parser",
                "has_image_understanding", "model_type", "architectures", "weight_version")}
            if self.model_info is not None else None,
            "parsers": parsers,
        }
        return ProbeResult("models", "pass" if ok else "fail", latency_s=latency, detail=detail, data=data)

    def _messages(self, text: str) -> list[dict]:
        return [{"role": "user", "content": text}]

    def _tokens_per_s(self, response: dict, latency: float) -> float | None:
        tokens = (response.get("usage") or {}).get("completion_tokens")
        return tokens / latency if tokens and latency > 0 else None

    def probe_chat(self) -> ProbeResult:
        a, b = random.randint(11, 49), random.randint(11, 49)
        expected = str(a + b)
        response, latency = self.chat(
            "chat", messages=self._messages(f"What is {a}+{b}? Answer with just the number."),
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        ok, detail = check_chat(response, expected)
        choice = (response.get("choices") or [{}])[0]
        return ProbeResult(
            "chat", "pass" if ok else "fail", latency_s=latency,
            tokens_per_s=self._tokens_per_s(response, latency), detail=detail,
            data={"finish_reason": choice.get("finish_reason"), "usage": response.get("usage"),
                  "expected": expected, "answer": answer_text(choice.get("message") or {})},
        )

    def probe_streaming(self) -> ProbeResult:
        a, b = random.randint(2, 9), random.randint(2, 9)
        expected = str(a * b)
        capture = self.stream(
            "streaming",
            messages=self._messages(f"What is {a}*{b}? Answer with just the number."),
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        ok, detail = check_stream(capture, expected)
        return ProbeResult(
            "streaming", "pass" if ok else "fail", latency_s=capture.total_s, ttft_s=capture.ttft_s,
            tokens_per_s=capture.tokens_per_s(), detail=detail,
            data={"chunks": len(capture.pieces), "finish_reason": capture.finish_reason,
                  "usage": capture.usage, "expected": expected},
        )

    def probe_reasoning(self) -> ProbeResult:
        parser, source = self.parser("reasoning_parser")
        if source == "/model_info" and not parser:
            return ProbeResult("reasoning", "fail",
                               detail="the server runs without a reasoning parser (/model_info reasoning_parser is null)")
        a, b = random.randint(3, 9), random.randint(3, 9)
        expected = str(a + b)
        response, latency = self.chat(
            "reasoning",
            messages=self._messages(f"Think step by step, then answer: what is {a}+{b}?"),
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        choice = (response.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        ok, detail = check_reasoning(message, parser)
        if ok and not contains_word(answer_text(message), expected):
            ok, detail = False, f"{detail}; answer {shorten(answer_text(message))!r} lacks {expected!r}"
        return ProbeResult(
            "reasoning", "pass" if ok else "fail", latency_s=latency,
            tokens_per_s=self._tokens_per_s(response, latency), detail=f"{detail} ({source})",
            data={"parser": parser, "parser_source": source, "mode": reasoning_mode(parser),
                  "reasoning_chars": len(message.get("reasoning_content") or ""),
                  "content_has_think_tags": think_tags_in(message.get("content"))},
        )

    def probe_vision(self) -> ProbeResult:
        if self.vision == "off":
            return ProbeResult("vision", "skip", detail="--vision off")
        if self.vision == "auto":
            if self.model_info is None:
                return ProbeResult("vision", "skip", detail="no /model_info to tell; use --vision on")
            if not self.model_info.get("has_image_understanding"):
                return ProbeResult("vision", "skip", detail="model has no image understanding (/model_info)")
        colour = random.choice(sorted(COLOURS))
        content = [
            {"type": "image_url", "image_url": {"url": png_data_url(COLOURS[colour])}},
            {"type": "text", "text": VISION_QUESTION},
        ]
        response, latency = self.chat(
            "vision", messages=[{"role": "user", "content": content}],
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        message = ((response.get("choices") or [{}])[0]).get("message") or {}
        ok, detail = check_colour(answer_text(message), colour)
        data = {"colour": colour, "answer": answer_text(message)}
        if ok and self.image_url:
            content = [
                {"type": "image_url", "image_url": {"url": self.image_url}},
                {"type": "text", "text": VISION_QUESTION},
            ]
            remote, remote_latency = self.chat(
                "vision", messages=[{"role": "user", "content": content}],
                extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
            )
            answer = answer_text(((remote.get("choices") or [{}])[0]).get("message") or {})
            data.update(remote_url=self.image_url, remote_answer=answer, remote_latency_s=remote_latency)
            if not answer:
                ok, detail = False, f"{detail}; remote --image-url answer is empty"
            else:
                detail = f"{detail}; remote URL answer {shorten(answer, 40)!r}"
        return ProbeResult("vision", "pass" if ok else "fail", latency_s=latency,
                           tokens_per_s=self._tokens_per_s(response, latency), detail=detail, data=data)

    def probe_tools(self) -> ProbeResult:
        expect = {"location_contains": WEATHER_CITY, "unit": "celsius"}
        messages = self._messages(WEATHER_QUESTION)
        response, latency = self.chat(
            "tools", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto",
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        ok, detail, call = check_tool_call(response, WEATHER_TOOL, expect)
        data: dict = {"call": call}
        if not ok:
            return ProbeResult("tools", "fail", latency_s=latency, detail=detail, data=data)
        parts = [detail]
        # Second turn: the tool result with the right tool_call_id -> a final answer.
        message = response["choices"][0]["message"]
        assistant = {
            "role": "assistant",
            "content": message.get("content") or "",
            "tool_calls": [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                for c in message["tool_calls"]
            ],
        }
        tool_messages = [
            {"role": "tool", "tool_call_id": c["id"], "content": json.dumps(WEATHER_RESULT)}
            for c in message["tool_calls"]
        ]
        followup, followup_latency = self.chat(
            "tools", messages=messages + [assistant] + tool_messages, tools=[WEATHER_TOOL],
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        ok, detail = check_tool_followup(followup)
        data["followup_latency_s"] = followup_latency
        data["followup_mentions_result"] = contains_word(
            answer_text(followup["choices"][0]["message"]) if followup.get("choices") else "",
            str(WEATHER_RESULT["temperature"]),
        )
        parts.append(detail)
        if ok:
            # Streamed tool call: fragments reassemble into valid JSON.
            capture = self.stream(
                "tools", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto",
                extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
            )
            ok, detail = self._check_streamed_call(capture, expect)
            data["stream_ttft_s"] = capture.ttft_s
            data["stream_fragments"] = len(capture.tool_deltas)
            parts.append("stream: " + detail)
        return ProbeResult("tools", "pass" if ok else "fail", latency_s=latency,
                           tokens_per_s=self._tokens_per_s(response, latency),
                           detail="; ".join(parts), data=data)

    def _check_streamed_call(self, capture: StreamCapture, expect: dict) -> tuple[bool, str]:
        if capture.error:
            return False, capture.error
        calls, problems = reassemble_tool_call_stream(capture.tool_deltas)
        if not calls:
            markup = [m for m in TOOL_MARKUP if m in capture.content]
            hint = f"; raw tool markup in content: {', '.join(markup)}" if markup else ""
            return False, f"no streamed tool_calls (finish {capture.finish_reason!r}){hint}"
        if problems:
            return False, "; ".join(problems)
        call = calls[min(calls)]
        if call["name"] != WEATHER_TOOL["function"]["name"]:
            return False, f"streamed call to {call['name']!r}"
        ok, detail, _ = check_tool_arguments(
            call["arguments"], WEATHER_TOOL["function"]["parameters"], expect
        )
        if not ok:
            return False, detail
        if capture.finish_reason != "tool_calls":
            return False, f"stream finish_reason {capture.finish_reason!r} (want tool_calls)"
        return True, f"{len(capture.tool_deltas)} fragments reassemble to valid JSON"

    def probe_auth(self) -> ProbeResult:
        if not self.api_key:
            return ProbeResult("auth", "skip", detail="UNAUTHENTICATED: no API key configured (--api-key/--api-key-file/"
                               "SGL_API_KEY); an endpoint that answers without one serves anyone who reaches it")
        start = time.monotonic()
        wrong = "wrong-" + os.urandom(6).hex()
        chat_body = {"model": self.model, "messages": self._messages("hi"), "max_tokens": 1}
        checks = {}
        if not self.router:
            checks["GET /v1/models without key"] = ("GET", "/v1/models", None, {})
            checks["GET /v1/models with a wrong key"] = ("GET", "/v1/models", wrong, {})
        checks["POST /v1/chat/completions without key"] = ("POST", "/v1/chat/completions", None, {"json": chat_body})
        checks["POST /v1/chat/completions with a wrong key"] = (
            "POST", "/v1/chat/completions", wrong, {"json": chat_body})
        statuses: dict[str, int | str] = {}
        retries_before = len(self.retries)
        for label, (method, path, key, kwargs) in checks.items():
            try:
                statuses[label] = self.request_safe(label, method, path, key=key, **kwargs).status_code
            except Exception as exc:  # the retry failed too: a real failure, never a pass
                statuses[label] = f"{type(exc).__name__}: {exc}"
        retried = self.retries[retries_before:]
        data = {"statuses": statuses, "retries": retried}
        bad = {k: v for k, v in statuses.items() if v != 401}
        latency = time.monotonic() - start
        if bad:
            detail = "; ".join(f"{k} -> {v} (want 401)" for k, v in bad.items())
            return ProbeResult("auth", "fail", latency_s=latency, detail=detail, data=data)
        if retried:
            note_retry = (f"; {len(retried)} retried once after the server closed a keep-alive connection "
                          f"({retried[0].split(':')[0]})")
        else:
            note_retry = ""
        note = " (gateway: /v1/models is open upstream, not checked)" if self.router else ""
        return ProbeResult("auth", "pass", latency_s=latency,
                           detail=f"{len(statuses)} unauthenticated requests got 401{note}{note_retry}",
                           data=data)

    def probe_concurrency(self) -> ProbeResult:
        n = max(1, self.concurrency)

        def one(i: int):
            try:
                response, latency = self.chat(
                    "concurrency", messages=self._messages(f"Reply with the word ok{i}."),
                    extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
                )
            except Exception as exc:
                return False, None, self.scrub(f"{type(exc).__name__}: {exc}"), 0
            choice = (response.get("choices") or [{}])[0]
            message = choice.get("message") or {}
            visible = answer_text(message) or (message.get("reasoning_content") or "").strip()
            if choice.get("finish_reason") not in ("stop", "length") or not visible:
                return False, latency, f"finish {choice.get('finish_reason')!r}, empty output", 0
            return True, latency, "", (response.get("usage") or {}).get("completion_tokens") or 0

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(one, range(n)))
        wall = time.monotonic() - start
        latencies = [r[1] for r in results if r[1] is not None]
        failures = [r[2] for r in results if not r[0]]
        tokens = sum(r[3] for r in results)
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        data = {"n": n, "ok": n - len(failures), "p50_s": p50, "p95_s": p95, "wall_s": wall,
                "latencies_s": latencies, "errors": failures[:5]}
        if failures:
            return ProbeResult("concurrency", "fail", latency_s=p50,
                               detail=f"{len(failures)}/{n} failed: {failures[0]}", data=data)
        return ProbeResult(
            "concurrency", "pass", latency_s=p50, tokens_per_s=tokens / wall if wall > 0 else None,
            detail=f"{n} parallel ok; p50 {p50:.2f}s p95 {p95:.2f}s; wall {wall:.2f}s", data=data,
        )

    def probe_bench(self) -> ProbeResult:
        if not self.bench_python:
            return ProbeResult("bench", "fail", detail="--bench needs --bench-python (an SGLang venv's python)")
        tokenizer = self.bench_tokenizer or (self.model_info or {}).get("tokenizer_path") or (
            self.model_info or {}).get("model_path")
        start = time.monotonic()
        ok, detail, data = run_bench(
            self.bench_python, self.base_url, self.model, self.api_key, self.bench_num_prompts,
            tokenizer, timeout=max(self.timeout * 5, 600),
        )
        latency = time.monotonic() - start
        self.record("bench", start, latency, ok)
        return ProbeResult("bench", "pass" if ok else "fail", latency_s=latency,
                           ttft_s=(data.get("median_ttft_ms") or 0) / 1000 or None,
                           tokens_per_s=data.get("output_throughput"), detail=self.scrub(detail), data=data)

    # ---- the run

    def run(self, selected: list[str]) -> dict:
        started = datetime.now(timezone.utc)
        t0 = time.monotonic()
        results: list[ProbeResult] = []
        try:
            self.contact()
            self.discover()
            for name in selected:
                self.log(f"probe {name} ...")
                if name != "models" and name != "auth" and not self.model:
                    results.append(ProbeResult(name, "fail", detail="model name unknown (/v1/models failed; pass --model)"))
                    continue
                try:
                    result = getattr(self, "probe_" + name.replace("-", "_"))()
                except Exception as exc:  # a probe must never take the run down
                    result = ProbeResult(name, "fail", detail=f"{type(exc).__name__}: {exc}")
                result.detail = self.scrub(result.detail)
                results.append(result)
        finally:
            self.close()
        from sgl_deploy import report

        return report.build_report(
            base_url=self.base_url, model=self.model, started_at=started,
            duration_s=time.monotonic() - t0, probes=[r.to_dict() for r in results],
            requests=[asdict(s) for s in self.samples], retries=[self.scrub(r) for r in self.retries],
            # no key, and the endpoint answered: it serves without authentication
            unauthenticated=not self.api_key and any(r.status == "pass" for r in results),
        )


# --------------------------------------------------------------------------- bench

# bench_serving GETs /server_info twice and stores the whole answer (API key included) in
# its JSONL record. This shim answers those GETs with a local 404 so the key is never
# fetched; the rest is sglang.benchmark.serving unchanged.
BENCH_SHIM = """
import runpy, sys
import requests
_get = requests.get
def _get_without_server_info(url, *args, **kwargs):
    if str(url).rstrip("/").endswith(("/server_info", "/get_server_info")):
        response = requests.Response()
        response.status_code = 404
        response._content = b"{}"
        response.url = str(url)
        return response
    return _get(url, *args, **kwargs)
requests.get = _get_without_server_info
sys.argv[0] = "sglang.benchmark.serving"
runpy.run_module("sglang.benchmark.serving", run_name="__main__", alter_sys=True)
"""

BENCH_FIELDS = (
    "completed", "duration", "total_input_tokens", "total_output_tokens", "request_throughput",
    "input_throughput", "output_throughput", "total_throughput", "mean_ttft_ms", "median_ttft_ms",
    "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_itl_ms", "median_e2e_latency_ms",
    "p99_e2e_latency_ms", "concurrency",
)


def bench_command(
    python: str, base_url: str, model: str | None, num_prompts: int, tokenizer: str | None, output: str
) -> list[str]:
    """argv for sglang.benchmark.serving (flags checked against sglang 0.5.23)."""
    cmd = [
        python, "-c", BENCH_SHIM,
        "--backend", "sglang-oai-chat",
        "--base-url", base_url,
        "--dataset-name", "random-ids",
        "--num-prompts", str(num_prompts),
        "--random-input-len", "64",
        "--random-output-len", "32",
        "--output-file", output,
    ]
    if model:
        cmd += ["--model", model]
    if tokenizer:
        cmd += ["--tokenizer", tokenizer]
    return cmd


def parse_bench_output(path: str) -> dict:
    """The last JSONL record, without ``server_info`` (it would hold the API key)."""
    with open(path, encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip()]
    if not lines:
        raise ValueError("bench_serving wrote no record")
    record = json.loads(lines[-1])
    record.pop("server_info", None)
    return record


def run_bench(
    python: str, base_url: str, model: str | None, api_key: str | None, num_prompts: int,
    tokenizer: str | None, timeout: float,
) -> tuple[bool, str, dict]:
    with tempfile.TemporaryDirectory(prefix="sgl-bench-") as tmp:
        output = os.path.join(tmp, "bench.jsonl")
        cmd = bench_command(python, base_url, model, num_prompts, tokenizer, output)
        env = dict(os.environ)
        env.pop("API_KEY", None)
        if api_key:
            env["OPENAI_API_KEY"] = api_key
        else:
            env.pop("OPENAI_API_KEY", None)
        shown = [a if a != BENCH_SHIM else "<shim: no /server_info>" for a in cmd]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            return False, f"bench python not found: {python}", {"argv": shown}
        except subprocess.TimeoutExpired:
            return False, f"bench_serving ran past {timeout:.0f}s", {"argv": shown}
        if proc.returncode != 0 or not os.path.exists(output):
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            return False, f"bench_serving exit {proc.returncode}: {' | '.join(tail)}", {"argv": shown}
        record = parse_bench_output(output)
    numbers = {k: record.get(k) for k in BENCH_FIELDS if k in record}
    numbers["argv"] = shown
    completed = record.get("completed") or 0
    ok = completed == num_prompts
    detail = (
        f"{completed}/{num_prompts} ok; out {record.get('output_throughput', 0):.1f} tok/s; "
        f"median TTFT {record.get('median_ttft_ms', 0):.0f} ms"
    )
    return ok, detail, numbers


# --------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe",
        help="probe an SGLang endpoint (chat, streaming, reasoning, vision, tools, auth, load)",
        description=(
            "Run capability probes against an SGLang OpenAI-compatible endpoint and write "
            "JSON/JUnit/PNG reports. Exit 0 all passed, 1 a probe failed, 2 usage error, "
            "3 endpoint unreachable. Never calls /server_info."
        ),
    )
    p.add_argument("--base-url", required=True,
                   help="server root or its OpenAI /v1 form, e.g. http://10.0.0.5:8000 or http://10.0.0.5:8000/v1")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="API key (prefer --api-key-file or env SGL_API_KEY)")
    key.add_argument("--api-key-file", help="file holding the API key")
    p.add_argument("--model", help="served model name (default: first id of /v1/models)")
    p.add_argument("--router", action="store_true",
                   help="the target is the gateway (smg or sglang-router; auth: its /v1/models is open upstream)")
    p.add_argument("--ca-file",
                   help="https: CA bundle (PEM) the server certificate must chain to (default: the system store)")
    p.add_argument("--suite", choices=("default", "recipe"), default="default",
                   help="default: the capability probes; recipe: the upstream tutorial's four client "
                        "requests (chat, streaming, tools, image; see examples/ and recipe_suite.py)")
    p.add_argument("--only", help=f"comma list of probes to run ({','.join(PROBES + OPTIONAL_PROBES)})")
    p.add_argument("--skip", help="comma list of probes to skip")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--max-tokens", type=int, default=1024, help="max_tokens per chat request (default 1024)")
    p.add_argument("--report-json", help="write the JSON report here")
    p.add_argument("--junit", help="write a JUnit XML report here")
    p.add_argument("--plot", help="write a latency plot (PNG, needs matplotlib) here")
    p.add_argument("--reasoning-parser", help="expected reasoning parser (default: /model_info)")
    p.add_argument("--tool-call-parser", help="expected tool-call parser (default: /model_info)")
    p.add_argument("--vision", choices=("on", "off", "auto"), default="auto",
                   help="vision probe: auto = when /model_info has_image_understanding")
    p.add_argument("--image-url", help="also ask about this remote image URL (answer must be non-empty)")
    p.add_argument("--concurrency", type=int, default=8, help="parallel requests (default 8)")
    p.add_argument("--accuracy-threshold", type=float, default=ACCURACY_THRESHOLD,
                   help=f"accuracy probe: minimum share of correct answers (default {ACCURACY_THRESHOLD})")
    p.add_argument("--bench", action="store_true", help="also run sglang.benchmark.serving")
    p.add_argument("--bench-python", help="python of a venv with sglang (for --bench)")
    p.add_argument("--bench-num-prompts", type=int, default=16)
    p.add_argument("--bench-tokenizer", help="tokenizer path for --bench (default: /model_info)")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    from sgl_deploy import report

    try:
        if args.suite == "recipe":
            from sgl_deploy import recipe_suite

            selected = recipe_suite.select_probes(args.only, args.skip, args.bench)
            runner_class = recipe_suite.RecipeRunner
        else:
            selected = select_probes(args.only, args.skip, args.bench)
            runner_class = ProbeRunner
        api_key = read_api_key(args.api_key, args.api_key_file)
        if args.timeout <= 0 or args.concurrency < 1 or args.max_tokens < 1:
            raise UsageError("--timeout, --concurrency and --max-tokens must be positive")
        if not 0.0 <= args.accuracy_threshold <= 1.0:
            raise UsageError("--accuracy-threshold must be between 0 and 1")
        if not args.base_url.startswith(("http://", "https://")):
            raise UsageError("--base-url must start with http:// or https://")
        if args.ca_file and not os.path.isfile(args.ca_file):
            raise UsageError(f"--ca-file {args.ca_file}: no such file")
    except UsageError as exc:
        print(f"sgl-deploy probe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    runner = runner_class(
        base_url=args.base_url, api_key=api_key, model=args.model, timeout=args.timeout,
        reasoning_parser=args.reasoning_parser, tool_call_parser=args.tool_call_parser,
        vision=args.vision, image_url=args.image_url, concurrency=args.concurrency,
        max_tokens=args.max_tokens, bench_python=args.bench_python,
        bench_num_prompts=args.bench_num_prompts, bench_tokenizer=args.bench_tokenizer, log=log,
        router=args.router, accuracy_threshold=args.accuracy_threshold, ca_file=args.ca_file,
    )
    try:
        result = runner.run(selected)
        code = EXIT_OK if result["passed"] else EXIT_FAIL
    except Unreachable as exc:
        message = runner.scrub(str(exc))
        print(f"sgl-deploy probe: endpoint unreachable: {message}", file=sys.stderr)
        result = report.build_report(
            base_url=runner.base_url, model=args.model, started_at=datetime.now(timezone.utc),
            duration_s=0.0, probes=[], requests=[], error=f"unreachable: {message}",
        )
        code = EXIT_UNREACHABLE
    print(report.format_table(result))
    if args.report_json:
        report.write_json(result, args.report_json)
    if args.junit:
        report.write_junit(result, args.junit)
    if args.plot:
        if not report.write_plot(result, args.plot):
            log("plot skipped: matplotlib is not installed")
    return code
