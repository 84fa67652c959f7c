"""The scripted "model" of the sgl-lab-engine (NOT SGLang): test-only.

Pure functions, standard library only (PIL is used when present, for JPEG), so the
controller's test venv can unit-test them without importing sglang.

The engine asks this module for the *raw model text* of a reply, in the real MiniMax wire
format of the model family named by the model dir's ``config.json``; the engine then passes
that text through SGLang's own reasoning and tool-call parsers. The text depends on the
model only, never on the parser flags, so a deployment with the wrong parser really shows
the wrong output.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import urllib.request
import zlib
from dataclasses import dataclass, field

import lab_intent  # sibling modules: the engine and the test fixtures put lab/engine on sys.path
import lab_solver

ENGINE_NAME = "sgl-lab-engine (NOT SGLang)"

FAMILY_M3 = "minimax-m3"
FAMILY_M2 = "minimax-m2"

M3_ARCHITECTURES = ("MiniMaxM3SparseForCausalLM", "MiniMaxM3SparseForConditionalGeneration")
M3_VISION_ARCHITECTURES = ("MiniMaxM3SparseForConditionalGeneration",)
M2_ARCHITECTURES = ("MiniMaxM2ForCausalLM",)

# --reasoning-parser auto / --tool-call-parser auto, as sglang's template_detection.py
# resolves them from the architecture.
AUTO_PARSERS = {
    FAMILY_M3: {"reasoning_parser": "minimax-m3", "tool_call_parser": "minimax-m3"},
    FAMILY_M2: {"reasoning_parser": "minimax", "tool_call_parser": "minimax-m2"},
}

DEFAULT_CONTEXT = {FAMILY_M3: 1048576, FAMILY_M2: 196608}

# MiniMax-M3 prefixes every tool-call tag with this namespace token.
M3_NS = "]<]minimax[>["

# Markers that a real tokenizer emits as single tokens: the streaming chunker never splits
# them (splitting "<minimax:tool_call>" would hit sglang's known partial-tag streaming bug,
# which a real model does not trigger because the tag is one token).
ATOMIC_MARKERS = (
    M3_NS,
    "<mm:think>",
    "</mm:think>",
    "<think>",
    "</think>",
    "<minimax:tool_call>",
    "</minimax:tool_call>",
)

_MARKER_RE = re.compile("|".join(re.escape(m) for m in ATOMIC_MARKERS))


class LabModelError(ValueError):
    """A model dir the lab engine cannot serve."""


# --------------------------------------------------------------------------- model dir


def read_model_config(model_path: str) -> dict:
    """Read ``<model_path>/config.json`` and fail the way SGLang does when it is missing."""
    import os

    if not os.path.isdir(model_path):
        raise LabModelError(
            f"Can't load the configuration of '{model_path}'. "
            "The model path does not exist or is not a directory."
        )
    config_path = os.path.join(model_path, "config.json")
    if not os.path.isfile(config_path):
        raise LabModelError(
            f"{model_path} does not appear to have a file named config.json."
        )
    with open(config_path, encoding="utf-8") as fh:
        try:
            config = json.load(fh)
        except json.JSONDecodeError as exc:
            raise LabModelError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise LabModelError(f"{config_path} must hold a JSON object")
    return config


def model_family(config: dict) -> str:
    """Return the wire-format family of a model config (architectures, then model_type)."""
    archs = config.get("architectures") or []
    model_type = str(config.get("model_type") or "")
    if any(a in M3_ARCHITECTURES or "MiniMaxM3" in a for a in archs) or model_type.startswith(
        "minimax_m3"
    ):
        return FAMILY_M3
    if any(a in M2_ARCHITECTURES or "MiniMaxM2" in a for a in archs) or model_type == "minimax_m2":
        return FAMILY_M2
    raise LabModelError(
        f"sgl-lab-engine simulates MiniMax-M2/M3 only; architectures={archs!r} "
        f"model_type={model_type!r} is not one of them"
    )


def has_image_understanding(config: dict) -> bool:
    return any(a in M3_VISION_ARCHITECTURES for a in config.get("architectures") or [])


def context_length(config: dict, family: str) -> int:
    for source in (config, config.get("text_config") or {}):
        value = source.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT[family]


def count_shards(model_path: str) -> int:
    """Number of safetensors shards (from the index when present)."""
    import os

    index = os.path.join(model_path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as fh:
                weight_map = json.load(fh).get("weight_map") or {}
            shards = set(weight_map.values())
            if shards:
                return len(shards)
        except (OSError, ValueError):
            pass
    try:
        return sum(1 for n in os.listdir(model_path) if n.endswith(".safetensors"))
    except OSError:
        return 0


# --------------------------------------------------------------------------- messages


def content_text(content) -> str:
    """The text of a message ``content`` (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text") or ""))
    return " ".join(parts)


def content_images(content) -> list[str]:
    if not isinstance(content, list):
        return []
    urls = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if url:
                urls.append(str(url))
    return urls


def media_part_type(messages: list[dict]) -> str | None:
    """First non-text, non-thinking content part type, as SGLang's media check reports it."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("image_url", "video_url", "audio_url", "input_audio"):
                    return kind
    return None


def tool_call_pairing_error(messages: list[dict]) -> str | None:
    """SGLang's M3 rule: each assistant tool call is answered by exactly one following tool
    message with a matching tool_call_id (unless the assistant message is the last one)."""
    pending: set | None = None
    unpaired = False
    for message in messages:
        role = message.get("role")
        if role == "tool":
            if unpaired:
                continue
            if pending is None:
                return "A tool message must follow an assistant message with tool_calls."
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return f"tool_call_id {call_id!r} does not match an unanswered tool call."
            pending.discard(call_id)
            continue
        if pending:
            return f"Tool calls {sorted(pending)} have no tool message answering them."
        pending, unpaired = None, False
        if role == "assistant" and message.get("tool_calls"):
            ids = [call.get("id") for call in message["tool_calls"]]
            unpaired = None in ids
            pending = None if unpaired else set(ids)
    if pending and messages and messages[-1].get("role") == "tool":
        return f"Tool calls {sorted(pending)} have no tool message answering them."
    return None


def prompt_tokens(messages: list[dict], tools: list[dict] | None = None) -> int:
    """A rough prompt token count (about 4 characters a token, plus per-message framing)."""
    chars = 0
    for message in messages:
        chars += len(content_text(message.get("content"))) + 8
        chars += 300 * len(content_images(message.get("content")))
        for call in message.get("tool_calls") or []:
            chars += len(json.dumps(call))
    if tools:
        chars += len(json.dumps(tools))
    return max(1, (chars + 3) // 4)


# --------------------------------------------------------------------------- images

NAMED_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
    "orange": (250, 140, 20),
    "purple": (130, 40, 170),
    "cyan": (30, 220, 220),
    "magenta": (230, 30, 200),
    "gray": (128, 128, 128),
}


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    return min(
        NAMED_COLOURS,
        key=lambda n: sum((a - b) ** 2 for a, b in zip(rgb, NAMED_COLOURS[n])),
    )


def decode_png(data: bytes) -> list[tuple[int, int, int]]:
    """Decode an 8-bit non-interlaced PNG (grey, RGB, grey+alpha, RGBA) into RGB pixels."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour_type, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour_type)
    if depth != 8 or channels is None or interlace:
        raise ValueError("unsupported PNG layout")
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    pixels = []
    offset = 0
    for _ in range(height):
        filt = raw[offset]
        line = bytearray(raw[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            up_left = prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif filt == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                line[i] = (line[i] + pred) & 0xFF
        prev = line
        for x in range(0, stride, channels):
            if channels in (1, 2):
                pixels.append((line[x], line[x], line[x]))
            else:
                pixels.append((line[x], line[x + 1], line[x + 2]))
    return pixels


def _pixels(data: bytes) -> list[tuple[int, int, int]]:
    try:
        from PIL import Image  # in SGLang's venv

        image = Image.open(io.BytesIO(data)).convert("RGB")
        image.thumbnail((64, 64))
        flat = getattr(image, "get_flattened_data", None) or image.getdata
        return list(flat())
    except ImportError:
        return decode_png(data)


def load_image_bytes(url: str, timeout: float = 10.0) -> bytes:
    """Bytes of a ``data:`` URL (base64) or an http(s) URL."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise ValueError("only base64 data URLs are supported")
        return base64.b64decode(payload)
    if url.startswith(("http://", "https://")):
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (lab only)
            return resp.read()
    raise ValueError(f"unsupported image URL scheme: {url[:16]!r}")


def dominant_colour(data: bytes) -> str:
    """Name of the most frequent named colour among the image's pixels."""
    pixels = _pixels(data)
    if not pixels:
        raise ValueError("empty image")
    step = max(1, len(pixels) // 4096)
    counts: dict[str, int] = {}
    for rgb in pixels[::step]:
        name = nearest_colour(rgb)
        counts[name] = counts.get(name, 0) + 1
    return max(counts, key=counts.get)


# --------------------------------------------------------------------------- the script

_ARITH_RE = re.compile(r"(-?\d+)\s*([+\-*x×/])\s*(-?\d+)")
_WORD_RE = re.compile(
    r"\b(?:reply|respond|answer)\s+(?:only\s+)?with\s+(?:only\s+)?(?:exactly\s+)?"
    r"(?:the\s+)?(?:single\s+)?(?:word\s+)?[\"'“]?([A-Za-z0-9_-]+)",
    re.IGNORECASE,
)
_SAY_RE = re.compile(r"\bsay\s+(?:the\s+word\s+)?[\"'“]?([A-Za-z0-9_-]+)", re.IGNORECASE)
_CAPITALS = {"france": "Paris", "germany": "Berlin", "japan": "Tokyo", "italy": "Rome"}
_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit".split()


def rule_answer(question: str) -> str:
    """A deterministic answer to a plain question (the small rule table)."""
    match = _ARITH_RE.search(question)
    if match:
        a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op in "*x×":
            result = a * b
        else:
            result = a / b if b else "undefined"
            if isinstance(result, float) and result.is_integer():
                result = int(result)
        return f"{a} {op} {b} = {result}."
    for regex in (_WORD_RE, _SAY_RE):
        match = regex.search(question)
        if match:
            return match.group(1)
    low = question.lower()
    if "capital of" in low:
        for country, capital in _CAPITALS.items():
            if country in low:
                return f"The capital of {country.title()} is {capital}."
    words = question.split()
    echo = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    return f"You said: {echo}"


def match_tool(question: str, tools: list[dict]) -> dict | None:
    """The tool the question's intent asks for (lab_intent: name and description, en + zh)."""
    return lab_intent.choose_tool(question, tools)


def extract_location(question: str) -> str:
    return lab_intent.extract_location(question)


def tool_arguments(function: dict, question: str) -> dict:
    """Arguments for a call of ``function`` derived from the question text."""
    schema = function.get("parameters") or {}
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    args: dict = {}
    for name, prop in props.items():
        prop = prop or {}
        if "enum" in prop:
            options = [str(o) for o in prop["enum"]]
            mentioned = lab_intent.mentioned_options(options, question)
            if mentioned:
                args[name] = mentioned[0]
            elif "celsius" in options:
                args[name] = "celsius"
            elif name in required:
                args[name] = options[0]
            continue
        if name not in required:
            continue
        kind = prop.get("type", "string")
        if kind == "string":
            if name in ("location", "city", "place") or "city" in str(prop.get("description", "")).lower():
                args[name] = extract_location(question)
            else:
                args[name] = question.strip()[:80]
        elif kind in ("integer", "number"):
            number = re.search(r"-?\d+", question)
            args[name] = int(number.group()) if number else 1
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
    return args


def wrap_reasoning(family: str, reasoning: str, body: str, thinking_mode: str | None) -> str:
    """Put the reasoning part in front of ``body`` the way each model family emits it.

    M2.x: the chat template already opened ``<think>``, so the output starts inside the
    thinking block and closes it with ``</think>``.
    M3: in adaptive mode (the default) the model opens ``<mm:think>`` itself; with
    ``thinking_mode=enabled`` the template prefills it; ``disabled`` means no thinking.
    """
    if family == FAMILY_M2:
        return f"{reasoning}\n</think>\n\n{body}"
    if thinking_mode == "disabled":
        return body
    if thinking_mode == "enabled":
        return f"{reasoning}</mm:think>{body}"
    return f"<mm:think>{reasoning}</mm:think>{body}"


@dataclass
class ScriptedReply:
    text: str  # raw model text, wire format of the family
    kind: str  # answer | tool_call | tool_result | vision
    detail: dict = field(default_factory=dict)


def _tool_name_for(messages: list[dict], call_id: str | None) -> str | None:
    for message in messages:
        for call in message.get("tool_calls") or []:
            if call.get("id") == call_id:
                return (call.get("function") or {}).get("name")
    return None


def script_reply(
    family: str,
    messages: list[dict],
    tools: list[dict] | None = None,
    tool_choice=None,
    thinking_mode: str | None = None,
    image_loader=load_image_bytes,
) -> ScriptedReply:
    """The raw text the lab "model" generates for a chat request."""
    last = messages[-1] if messages else {"role": "user", "content": ""}
    if last.get("role") == "tool":
        results = lab_solver.tool_results(messages)  # parallel calls: every result of the turn
        result = "; ".join(content_text(m.get("content")).strip() for m in results)
        name = _tool_name_for(messages, last.get("tool_call_id")) or "the tool"
        reasoning = f"The tool {name} answered. I will report its result to the user."
        body = f"Here is what {name} returned: {result}"
        return ScriptedReply(
            wrap_reasoning(family, reasoning, body, thinking_mode), "tool_result", {"tool": name}
        )

    question = content_text(last.get("content")).strip()
    images = content_images(last.get("content"))
    if images:
        colour = dominant_colour(image_loader(images[0]))
        reasoning = "The user sent an image. Its dominant colour decides the answer."
        return ScriptedReply(
            wrap_reasoning(family, reasoning, lab_intent.describe_colour(colour, question), thinking_mode),
            "vision",
            {"colour": colour},
        )

    if tools and tool_choice != "none":
        function = match_tool(question, tools)
        if function is not None:
            calls = lab_solver.tool_call_arguments(function, question, tool_arguments)
            reasoning = f"The user asks something {function['name']} can answer. I will call it."
            call = lab_solver.format_tool_calls(family == FAMILY_M3, function["name"], calls)
            return ScriptedReply(
                wrap_reasoning(family, reasoning, call, thinking_mode),
                "tool_call",
                {"name": function["name"], "arguments": calls[0], "calls": calls},
            )

    if lab_solver.is_problem(question):
        solved = lab_solver.problem_reply(question)
        if solved is not None:
            reasoning = "A word problem: I read the numbers and compute the result."
            return ScriptedReply(
                wrap_reasoning(family, reasoning, solved, thinking_mode), "answer", {"solved": True}
            )

    short = question if len(question) <= 60 else question[:57] + "..."
    reasoning = f"The user asked: {short} I will answer briefly."
    return ScriptedReply(
        wrap_reasoning(family, reasoning, lab_intent.task_answer(question) or rule_answer(question),
                       thinking_mode), "answer"
    )


# --------------------------------------------------------------------------- tokens


def tokenize(text: str, piece: int = 4) -> list[str]:
    """Split model text into "tokens": markers whole, other text in pieces of <= ``piece``
    characters that do not straddle a space (about what a BPE tokenizer yields)."""
    tokens: list[str] = []
    pos = 0
    for match in _MARKER_RE.finditer(text):
        tokens.extend(_split_plain(text[pos : match.start()], piece))
        tokens.append(match.group())
        pos = match.end()
    tokens.extend(_split_plain(text[pos:], piece))
    return tokens


def _split_plain(text: str, piece: int) -> list[str]:
    out = []
    for word in re.findall(r"\s*\S+|\s+", text):
        out.extend(word[i : i + piece] for i in range(0, len(word), piece))
    return out


def limit_tokens(
    tokens: list[str], max_tokens: int | None, ignore_eos: bool = False
) -> tuple[list[str], str]:
    """Apply ``max_tokens``: returns (tokens, finish_reason).

    ``ignore_eos`` (bench_serving sends it) keeps generating filler up to ``max_tokens``.
    """
    if max_tokens is not None and max_tokens >= 0:
        if len(tokens) > max_tokens:
            return tokens[:max_tokens], "length"
        if ignore_eos and len(tokens) < max_tokens:
            extra = max_tokens - len(tokens)
            tokens = tokens + [" " + _FILLER[i % len(_FILLER)] for i in range(extra)]
            return tokens, "length"
    return tokens, "stop"
