"""M3-depth probes of ``sgl-deploy probe``: multi-turn reasoning, parallel tool calls, nested
tool arguments, the thinking switch, an accuracy set and the sampling defaults.

The upstream reports these guard against (issue #18):

* multi-turn M3 chat leaked a stray ``</mm:think>`` into content (comment on sglang#28715);
* streamed M2 tool calls gave a ``null`` name and duplicated arguments (sglang#23071);
* ``thinking: {"type": "disabled"}`` is silently ignored (sglang#32276, open);
* M3 parameter tags are namespaced, arrays use ``<item>``; parallel and nested calls are where
  parsers slip (vllm#51075, MiniMax-M3#31);
* accuracy drifted on one GPU type until an upstream kernel fix (cookbook GSM8K baselines:
  about 97.0% on H200, 96.5% on B200).

Every verdict goes through a pure ``check_*`` function (unit-tested without a server);
:class:`M3Suite` makes the requests through a :class:`sgl_deploy.probe_client.ProbeClient` it is
given (composition; ``probe_default.ProbeRunner`` composes it with the default suite).
"""

from __future__ import annotations

import json
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from sgl_deploy.probe_checks import (
    ACCURACY_THRESHOLD,  # noqa: F401 (re-exported: probe_m3.ACCURACY_THRESHOLD)
    MODEL_SAMPLING,
    RECIPE_EXTRA_BODY,
    RECIPE_SAMPLING,
    RECIPE_SAMPLING_FULL,
    TOOL_MARKUP,
    WEATHER_TOOL,
    ProbeResult,
    answer_text,
    check_reasoning,
    check_tool_arguments,
    check_tool_followup,
    contains_word,
    normalize_base_url,  # noqa: F401 (re-exported: probe_m3.normalize_base_url)
    percentile,
    reassemble_tool_call_stream,
    shorten,
    strip_think,
)
from sgl_deploy.probe_client import ProbeClient

THINKING_OFF_ISSUE = "sglang#32276"
THINKING_OFF_ISSUE_URL = "https://github.com/sgl-project/sglang/issues/32276"
# M3's documented switch (chat template kwarg, sglang.md §4 'chat_template_kwargs').
THINKING_OFF_KWARGS = {"thinking_mode": "disabled"}

ACCURACY_CONCURRENCY = 8
ACCURACY_PROBLEMS = 120
ACCURACY_SEED = 18
ACCURACY_INSTRUCTION = "Solve the problem. End your reply with a line 'Answer: <integer>'."
# ACCURACY_THRESHOLD, MODEL_SAMPLING and RECIPE_SAMPLING_FULL live in probe_checks (imported above).

PARALLEL_CITIES = ("Paris", "Tokyo")
PARALLEL_QUESTION = (
    f"What's the weather like in {PARALLEL_CITIES[0]} and in {PARALLEL_CITIES[1]} today? "
    "Use celsius. Look both up at once."
)
PARALLEL_RESULTS = {
    "Paris": {"location": "Paris", "temperature": 22, "unit": "celsius", "condition": "sunny"},
    "Tokyo": {"location": "Tokyo", "temperature": 17, "unit": "celsius", "condition": "rain"},
}

MEETING_TOOL = {
    "type": "function",
    "function": {
        "name": "schedule_meeting",
        "description": "Schedule a meeting with attendees in a time slot",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "Meeting title"},
                "attendees": {"type": "array", "items": {"type": "string"},
                              "description": "First names of the attendees"},
                "slot": {
                    "type": "object",
                    "properties": {
                        "day": {"type": "string", "enum": [
                            "Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]},
                        "hour": {"type": "integer", "description": "Hour of day, 0-23"},
                    },
                    "required": ["day", "hour"],
                    "additionalProperties": False,
                },
            },
            "required": ["title", "attendees", "slot"],
            "additionalProperties": False,
        },
    },
}
MEETING_QUESTION = (
    "Schedule a meeting titled Budget review with Alice, Bob and Carol on Tuesday at 10."
)
MEETING_EXPECT = {"title": "Budget review", "attendees": ["Alice", "Bob", "Carol"],
                  "slot": {"day": "Tuesday", "hour": 10}}

MULTITURN_QUESTIONS = (
    ("What is 17+25? Answer with just the number.", "42"),
    ("What is 6*7? Answer with just the number.", "42"),
    ("Now reply with the word done.", "done"),
)


# --------------------------------------------------------------------------- accuracy set


_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun")
_ITEMS = ("apples", "marbles", "stickers", "pencils", "cards", "shells", "coins", "books")


def accuracy_problems(n: int = ACCURACY_PROBLEMS, seed: int = ACCURACY_SEED) -> list[dict]:
    """``n`` grade-school problems ``{"question", "answer"}`` with exact integer answers,
    generated deterministically from ``seed`` (five kinds, round-robin)."""
    rng = random.Random(seed)
    problems = []
    for i in range(n):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        kind = i % 5
        if kind == 0:
            a, b, c = rng.randint(12, 99), rng.randint(2, 12), rng.randint(3, 60)
            question, answer = f"What is {a} * {b} + {c}?", a * b + c
        elif kind == 1:
            a, b = rng.randint(20, 90), rng.randint(5, 40)
            c = rng.randint(1, a + b - 1)
            question = (f"{name} has {a} {item}. {name} buys {b} more and then gives away {c}. "
                        f"How many {item} does {name} have now?")
            answer = a + b - c
        elif kind == 2:
            a, b = rng.randint(3, 19), rng.randint(4, 25)
            question = (f"There are {a} boxes with {b} {item} in each box. "
                        f"How many {item} are there in total?")
            answer = a * b
        elif kind == 3:
            b, each = rng.randint(2, 12), rng.randint(3, 30)
            question = (f"{name} shares {b * each} {item} equally among {b} friends. "
                        f"How many {item} does each friend get?")
            answer = each
        else:
            count, price = rng.randint(2, 9), rng.randint(2, 11)
            bill = next(v for v in (20, 50, 100, 200) if v >= count * price)
            question = (f"{name} buys {count} notebooks at {price} dollars each and pays with a "
                        f"{bill}-dollar bill. How many dollars of change does {name} get?")
            answer = bill - count * price
        problems.append({"question": question, "answer": answer})
    return problems


def accuracy_prompt(question: str) -> str:
    return f"{question}\n{ACCURACY_INSTRUCTION}"


_ANSWER_RE = re.compile(r"answer\s*(?:is|:)?\s*\**\s*(-?[\d,]*\d)", re.IGNORECASE)
_INT_RE = re.compile(r"-?\d[\d,]*")


def extract_integer(text: str | None) -> int | None:
    """The final integer of an answer: the last ``Answer: N``, else the last integer."""
    text = text or ""
    hits = _ANSWER_RE.findall(text)
    if not hits:
        hits = _INT_RE.findall(text)
    if not hits:
        return None
    try:
        return int(hits[-1].replace(",", ""))
    except ValueError:
        return None


def check_accuracy(outcomes: list[dict], threshold: float) -> tuple[bool, str, float]:
    """``outcomes``: ``{"ok": bool, "error": str|None}`` per problem -> (ok, detail, accuracy)."""
    total = len(outcomes)
    if not total:
        return False, "no problems run", 0.0
    correct = sum(1 for o in outcomes if o.get("ok"))
    errors = sum(1 for o in outcomes if o.get("error"))
    accuracy = correct / total
    detail = f"accuracy {accuracy:.3f} ({correct}/{total}), threshold {threshold:.2f}"
    if errors:
        detail += f"; {errors} request(s) failed"
    return accuracy >= threshold, detail, accuracy


# --------------------------------------------------------------------------- pure checks


def check_multiturn(turns: list[dict], expected: list[str], parser: str | None) -> tuple[bool, str]:
    """Each turn's message (``{"content", "reasoning_content"}``): reasoning where the parser
    puts it, no think tag or stray closer in the visible answer, the expected word there."""
    if len(turns) != len(expected):
        return False, f"{len(turns)} turn(s) answered, want {len(expected)}"
    notes = []
    for i, (message, want) in enumerate(zip(turns, expected), start=1):
        ok, detail = check_reasoning(message, parser)
        if not ok:
            return False, f"turn {i}: {detail}"
        answer = answer_text(message)
        if not contains_word(answer, want):
            return False, f"turn {i}: answer {shorten(answer)!r} lacks {want!r}"
        notes.append(shorten(answer, 20))
    return True, f"{len(turns)} turns clean: " + " | ".join(notes)


def check_parallel_calls(
    response: dict, tool: dict, cities: tuple[str, ...]
) -> tuple[bool, str, list[dict]]:
    """One assistant turn with one valid call per city, distinct ids."""
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []
    records = [{"id": c.get("id"), "name": (c.get("function") or {}).get("name"),
                "arguments": (c.get("function") or {}).get("arguments")} for c in calls]
    if len(calls) != len(cities):
        markup = [m for m in TOOL_MARKUP if m in (message.get("content") or "")]
        hint = f"; raw tool markup in content: {', '.join(markup)}" if markup else ""
        return False, f"{len(calls)} tool call(s), want {len(cities)} (one per city){hint}", records
    ids = [r["id"] for r in records]
    if not all(ids) or len(set(ids)) != len(ids):
        return False, f"tool call ids not distinct: {ids!r}", records
    schema = tool["function"]["parameters"]
    seen = []
    for record in records:
        if record["name"] != tool["function"]["name"]:
            return False, f"called {record['name']!r}, want {tool['function']['name']!r}", records
        ok, detail, parsed = check_tool_arguments(record["arguments"], schema)
        if not ok:
            return False, detail, records
        seen.append(str(parsed.get("location", "")))
    missing = [c for c in cities if not any(c.lower() in s.lower() for s in seen)]
    if missing:
        return False, f"calls cover {seen!r}, missing {missing!r}", records
    if choice.get("finish_reason") != "tool_calls":
        return False, f"finish_reason {choice.get('finish_reason')!r} (want tool_calls)", records
    return True, f"{len(calls)} calls, distinct ids, locations {seen!r}", records


def check_final_names(response: dict, names: tuple[str, ...]) -> tuple[bool, str]:
    """The answer after the tool results names every one of ``names``."""
    ok, detail = check_tool_followup(response)
    if not ok:
        return False, detail
    answer = answer_text(response["choices"][0]["message"])
    missing = [n for n in names if not contains_word(answer, n)]
    if missing:
        return False, f"final answer {shorten(answer)!r} does not name {', '.join(missing)}"
    return True, f"final answer names {', '.join(names)}"


def check_expected_args(parsed: dict, expect: dict) -> list[str]:
    """Differences of parsed arguments from ``expect`` (lists compared as sets, case-insensitive)."""
    problems = []

    def norm(value):
        if isinstance(value, str):
            return value.strip().lower()
        if isinstance(value, list):
            return sorted(norm(v) for v in value)
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        return value

    for key, want in expect.items():
        if norm(parsed.get(key)) != norm(want):
            problems.append(f"{key}={parsed.get(key)!r}, want {want!r}")
    return problems


def check_nested_args(arguments: Any, tool: dict, expect: dict) -> tuple[bool, str]:
    ok, detail, parsed = check_tool_arguments(arguments, tool["function"]["parameters"])
    if not ok:
        return False, detail
    problems = check_expected_args(parsed, expect)
    if problems:
        return False, "arguments differ: " + "; ".join(problems)
    return True, detail


def check_streamed_call_shape(deltas: list[dict]) -> tuple[dict[int, dict], list[str]]:
    """Reassemble streamed tool calls and flag the sglang#23071 shapes: a name sent more than
    once (or ``null`` on the first delta), arguments that do not parse as one JSON object
    (duplicated fragments)."""
    calls, problems = reassemble_tool_call_stream(deltas)
    names: dict[int, int] = {}
    for entry in deltas:
        name = (entry.get("function") or {}).get("name")
        if name:
            index = entry.get("index") or 0
            names[index] = names.get(index, 0) + 1
    for index, count in sorted(names.items()):
        if count > 1:
            problems.append(f"call {index}: function name sent {count} times (want once)")
    for index, call in sorted(calls.items()):
        text = call["arguments"]
        try:
            decoder = json.JSONDecoder()
            _, end = decoder.raw_decode(text.strip())
            if text.strip()[end:].strip():
                problems.append(f"call {index}: arguments duplicated or trailing text after the "
                                f"JSON object: {text.strip()[:120]!r}")
        except ValueError:
            problems.append(f"call {index}: streamed arguments are not JSON: {text[:120]!r}")
    return calls, problems


def check_thinking_off(message: dict) -> tuple[str, str]:
    """(pass|warn|fail, detail). Thinking output with thinking disabled is a warn naming the
    upstream issue (never a silent pass); no answer at all is a fail."""
    reasoning = (message.get("reasoning_content") or "").strip()
    _, inline = strip_think(message.get("content"))
    answer = answer_text(message)
    if not answer:
        return "fail", "no answer with thinking disabled"
    if reasoning or inline:
        chars = len(reasoning) + len(inline)
        return "warn", (f"thinking disabled ({json.dumps(THINKING_OFF_KWARGS)}) but the model still "
                        f"thought ({chars} chars): {THINKING_OFF_ISSUE}, {THINKING_OFF_ISSUE_URL}")
    return "pass", f"no thinking with {json.dumps(THINKING_OFF_KWARGS)}; answer {shorten(answer, 40)!r}"


def describe_sampling(model_info: dict | None, profile_sampling: dict | None = None) -> dict:
    """Which sampling defaults the server applies, and what the probes send.

    SGLang's ``/model_info`` has ``preferred_sampling_params`` (``--preferred-sampling-params``);
    when it is null, ``--sampling-defaults model`` (the default) applies the model's
    ``generation_config.json``."""
    archs = (model_info or {}).get("architectures") or []
    known = profile_sampling is not None or any("MiniMaxM3" in str(a) for a in archs)
    model = dict(profile_sampling or MODEL_SAMPLING) if known else None
    preferred = (model_info or {}).get("preferred_sampling_params")
    if isinstance(preferred, str):
        try:
            preferred = json.loads(preferred)
        except ValueError:
            pass
    if model_info is None:
        source, applied = "unknown (no /model_info)", None
    elif preferred:
        source, applied = "server --preferred-sampling-params", preferred
    elif model is not None:
        source, applied = "model generation_config.json (--sampling-defaults model; M3: sglang.md §6)", model
    else:
        source, applied = "model generation_config.json (--sampling-defaults model; values not known here)", None
    differs = {k: {"server": (applied or {}).get(k), "recipe": v}
               for k, v in RECIPE_SAMPLING_FULL.items() if applied and (applied or {}).get(k) != v}
    return {"server_defaults": applied, "source": source, "recipe": RECIPE_SAMPLING_FULL,
            "model_generation_config": model, "recipe_differs": differs}


# --------------------------------------------------------------------------- the probes


class M3Suite:
    """The M3-depth probes, requested through ``client`` (its chat/stream/parser helpers and options:
    ``max_tokens``, ``accuracy_threshold``, ``model_info``)."""

    NAMES = ("multiturn", "parallel-tools", "tool-args", "thinking-off", "sampling", "accuracy")

    def __init__(self, client: ProbeClient, accuracy_problems_n: int = ACCURACY_PROBLEMS):
        self.client = client
        self.accuracy_problems_n = accuracy_problems_n

    def probes(self) -> dict[str, Callable[[], ProbeResult]]:
        return {name: getattr(self, "probe_" + name.replace("-", "_")) for name in self.NAMES}

    def _recipe(self) -> dict:
        return {"extra_body": dict(RECIPE_EXTRA_BODY), **RECIPE_SAMPLING}

    def probe_multiturn(self):
        parser, source = self.client.parser("reasoning_parser")
        messages: list[dict] = []
        turns, latencies = [], []
        for question, _ in MULTITURN_QUESTIONS:
            messages.append({"role": "user", "content": question})
            response, latency = self.client.chat("multiturn", messages=list(messages), **self._recipe())
            latencies.append(latency)
            message = ((response.get("choices") or [{}])[0]).get("message") or {}
            turns.append(message)
            # history as clients send it: the visible content (append-think keeps the block)
            messages.append({"role": "assistant", "content": message.get("content") or ""})
        ok, detail = check_multiturn(turns, [w for _, w in MULTITURN_QUESTIONS], parser)
        return ProbeResult("multiturn", "pass" if ok else "fail", latency_s=sum(latencies),
                           detail=f"{detail} ({source})",
                           data={"parser": parser, "answers": [answer_text(t) for t in turns],
                                 "turn_latencies_s": latencies})

    def probe_parallel_tools(self):
        messages = [{"role": "user", "content": PARALLEL_QUESTION}]
        response, latency = self.client.chat("parallel-tools", messages=messages, tools=[WEATHER_TOOL],
                                             tool_choice="auto", **self._recipe())
        ok, detail, records = check_parallel_calls(response, WEATHER_TOOL, PARALLEL_CITIES)
        data: dict = {"calls": records}
        if not ok:
            return ProbeResult("parallel-tools", "fail", latency_s=latency, detail=detail, data=data)
        message = response["choices"][0]["message"]
        assistant = {"role": "assistant", "content": message.get("content") or "",
                     "tool_calls": [{"id": r["id"], "type": "function",
                                     "function": {"name": r["name"], "arguments": r["arguments"]}}
                                    for r in records]}
        results = []
        for record in records:
            location = str(json.loads(record["arguments"]).get("location", ""))
            city = next((c for c in PARALLEL_CITIES if c.lower() in location.lower()), location)
            results.append({"role": "tool", "tool_call_id": record["id"],
                            "content": json.dumps(PARALLEL_RESULTS.get(city, {"location": city}))})
        followup, followup_latency = self.client.chat(
            "parallel-tools", messages=messages + [assistant] + results, tools=[WEATHER_TOOL],
            **self._recipe())
        ok2, detail2 = check_final_names(followup, PARALLEL_CITIES)
        data["followup_latency_s"] = followup_latency
        return ProbeResult("parallel-tools", "pass" if ok and ok2 else "fail",
                           latency_s=latency + followup_latency, detail=f"{detail}; {detail2}", data=data)

    def probe_tool_args(self):
        messages = [{"role": "user", "content": MEETING_QUESTION}]
        response, latency = self.client.chat("tool-args", messages=messages, tools=[MEETING_TOOL],
                                             tool_choice="auto", **self._recipe())
        choice = (response.get("choices") or [{}])[0]
        calls = (choice.get("message") or {}).get("tool_calls") or []
        data: dict = {"non_streamed": [c.get("function") for c in calls]}
        if len(calls) != 1:
            content = (choice.get("message") or {}).get("content") or ""
            markup = [m for m in TOOL_MARKUP if m in content]
            hint = f"; raw tool markup in content: {', '.join(markup)}" if markup else ""
            return ProbeResult("tool-args", "fail", latency_s=latency, data=data,
                               detail=f"non-streamed: {len(calls)} tool call(s), want 1{hint}")
        function = calls[0].get("function") or {}
        if function.get("name") != MEETING_TOOL["function"]["name"]:
            return ProbeResult("tool-args", "fail", latency_s=latency, data=data,
                               detail=f"non-streamed: called {function.get('name')!r}")
        ok, detail = check_nested_args(function.get("arguments"), MEETING_TOOL, MEETING_EXPECT)
        if not ok:
            return ProbeResult("tool-args", "fail", latency_s=latency, data=data,
                               detail=f"non-streamed: {detail}")
        capture = self.client.stream("tool-args", messages=messages, tools=[MEETING_TOOL],
                                     tool_choice="auto", **self._recipe())
        data["stream_fragments"] = len(capture.tool_deltas)
        if capture.error:
            return ProbeResult("tool-args", "fail", latency_s=latency, data=data,
                               detail=f"streamed: {capture.error}")
        streamed, problems = check_streamed_call_shape(capture.tool_deltas)
        data["streamed"] = list(streamed.values())
        if not problems and len(streamed) != 1:
            problems.append(f"{len(streamed)} streamed call(s), want 1")
        if not problems:
            call = next(iter(streamed.values()))
            if call["name"] != MEETING_TOOL["function"]["name"]:
                problems.append(f"streamed call to {call['name']!r}")
            else:
                ok, sdetail = check_nested_args(call["arguments"], MEETING_TOOL, MEETING_EXPECT)
                if not ok:
                    problems.append(sdetail)
        if problems:
            return ProbeResult("tool-args", "fail", latency_s=latency, data=data,
                               detail="streamed: " + "; ".join(problems))
        return ProbeResult("tool-args", "pass", latency_s=latency, ttft_s=capture.ttft_s, data=data,
                           detail=(f"array + nested object valid in both forms; streamed: name once, "
                                   f"{len(capture.tool_deltas)} fragments, no duplicate"))

    def probe_thinking_off(self):
        recipe = self._recipe()
        recipe["extra_body"]["chat_template_kwargs"] = dict(THINKING_OFF_KWARGS)
        response, latency = self.client.chat(
            "thinking-off", messages=[{"role": "user", "content": "What is 20+22? Answer with just the number."}],
            **recipe)
        message = ((response.get("choices") or [{}])[0]).get("message") or {}
        status, detail = check_thinking_off(message)
        return ProbeResult("thinking-off", status, latency_s=latency, detail=detail,
                           data={"request": {"chat_template_kwargs": THINKING_OFF_KWARGS},
                                 "reasoning_chars": len(message.get("reasoning_content") or ""),
                                 "upstream_issue": THINKING_OFF_ISSUE if status == "warn" else None})

    def probe_accuracy(self):
        problems = accuracy_problems(self.accuracy_problems_n)
        max_tokens = max(self.client.max_tokens, 2048)

        def one(problem: dict) -> dict:
            try:
                response, latency = self.client.chat(
                    "accuracy", messages=[{"role": "user", "content": accuracy_prompt(problem["question"])}],
                    max_tokens=max_tokens, **self._recipe())
            except Exception as exc:
                return {"ok": False, "error": self.client.scrub(f"{type(exc).__name__}: {exc}"), "latency_s": None}
            message = ((response.get("choices") or [{}])[0]).get("message") or {}
            got = extract_integer(answer_text(message))
            return {"ok": got == problem["answer"], "error": None, "latency_s": latency,
                    "got": got, "want": problem["answer"]}

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=ACCURACY_CONCURRENCY) as pool:
            outcomes = list(pool.map(one, problems))
        wall = time.monotonic() - start
        ok, detail, accuracy = check_accuracy(outcomes, self.client.accuracy_threshold)
        latencies = [o["latency_s"] for o in outcomes if o["latency_s"] is not None]
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        wrong = [{"question": p["question"], "want": o.get("want"), "got": o.get("got"),
                  "error": o.get("error")} for p, o in zip(problems, outcomes) if not o["ok"]]
        if p95 is not None:
            detail += f"; p95 {p95:.2f}s; {len(problems)} problems at concurrency {ACCURACY_CONCURRENCY}"
        return ProbeResult("accuracy", "pass" if ok else "fail", latency_s=p50, detail=detail,
                           data={"accuracy": round(accuracy, 4), "threshold": self.client.accuracy_threshold,
                                 "problems": len(problems), "correct": len(problems) - len(wrong),
                                 "concurrency": ACCURACY_CONCURRENCY, "p50_s": p50, "p95_s": p95,
                                 "wall_s": wall, "wrong": wrong[:10]})

    def probe_sampling(self):
        info = describe_sampling(self.client.model_info)
        if info["server_defaults"] is None:
            detail = f"server defaults {info['source']}; probes send the recipe's {RECIPE_SAMPLING_FULL}"
        else:
            diffs = ", ".join(f"{k} {v['server']} (recipe {v['recipe']})" for k, v in info["recipe_differs"].items())
            detail = (f"server applies {info['server_defaults']} from {info['source']}"
                      + (f"; differs from the recipe: {diffs}" if diffs else "; same as the recipe")
                      + "; probes send the recipe's values")
        return ProbeResult("sampling", "pass", latency_s=0.0, detail=detail, data=info)
