"""The default suite of ``sgl-deploy probe``: a link of the suites layer of the probe chain.

:class:`DefaultSuite` holds the capability probes (models, chat, streaming, reasoning, vision,
tools, auth, concurrency, and the optional bench); :class:`ProbeRunner` is a
:class:`~sgl_deploy.probe_client.ProbeClient` composed with this suite and
:class:`~sgl_deploy.probe_m3.M3Suite` (``PROBES``, in that order). Every verdict goes through a
pure check of ``probe_checks``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from sgl_deploy.probe_checks import (
    COLOURS,
    RECIPE_EXTRA_BODY,
    RECIPE_SAMPLING,
    TOOL_MARKUP,
    VISION_QUESTION,
    WEATHER_CITY,
    WEATHER_QUESTION,
    WEATHER_RESULT,
    WEATHER_TOOL,
    ProbeResult,
    StreamCapture,
    UsageError,
    answer_text,
    check_chat,
    check_colour,
    check_models,
    check_reasoning,
    check_stream,
    check_tool_arguments,
    check_tool_call,
    check_tool_followup,
    contains_word,
    percentile,
    png_data_url,
    reasoning_mode,
    reassemble_tool_call_stream,
    shorten,
    think_tags_in,
    tokens_per_s,
)
from sgl_deploy.probe_client import ProbeClient
from sgl_deploy.probe_m3 import M3Suite

PROBES = (
    "models", "chat", "streaming", "reasoning", "vision", "tools", "auth", "concurrency",
    # M3 depth (sgl_deploy.probe_m3, issue #18)
    "multiturn", "parallel-tools", "tool-args", "thinking-off", "sampling", "accuracy",
)
OPTIONAL_PROBES = ("bench",)  # only with --bench


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



# --------------------------------------------------------------------------- the suite


class DefaultSuite:
    """The capability probes, requested through ``client``."""

    NAMES = ("models", "chat", "streaming", "reasoning", "vision", "tools", "auth", "concurrency", "bench")

    def __init__(self, client: ProbeClient):
        self.client = client

    def probes(self) -> dict[str, Callable[[], ProbeResult]]:
        return {name: getattr(self, "probe_" + name) for name in self.NAMES}

    def probe_models(self) -> ProbeResult:
        if self.client.models_json is None:
            return ProbeResult("models", "fail", detail=self.client.models_error or "no /v1/models")
        parsers = {k: self.client.parser(k)[0] for k in ("reasoning_parser", "tool_call_parser")}
        ok, detail = check_models(
            self.client.models_json, self.client.model or "", self.client.model_info,
            {k: self.client.cli_parsers[k] for k in parsers}, self.client.vision,
        )
        if ok and self.client.health_status != 200:
            ok, detail = False, f"/health answered HTTP {self.client.health_status}; {detail}"
        latency = self.client.models_latency_s
        data = {
            "ids": [m.get("id") for m in self.client.models_json.get("data") or []],
            "owned_by": [m.get("owned_by") for m in self.client.models_json.get("data") or []],
            "health_status": self.client.health_status,
            "model_info": {k: (self.client.model_info or {}).get(k) for k in (
                "served_model_name", "model_path", "reasoning_parser", "tool_call_parser",
                "has_image_understanding", "model_type", "architectures", "weight_version")}
            if self.client.model_info is not None else None,
            "parsers": parsers,
        }
        return ProbeResult("models", "pass" if ok else "fail", latency_s=latency, detail=detail, data=data)

    def _messages(self, text: str) -> list[dict]:
        return [{"role": "user", "content": text}]

    def probe_chat(self) -> ProbeResult:
        a, b = random.randint(11, 49), random.randint(11, 49)
        expected = str(a + b)
        response, latency = self.client.chat(
            "chat", messages=self._messages(f"What is {a}+{b}? Answer with just the number."),
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        ok, detail = check_chat(response, expected)
        choice = (response.get("choices") or [{}])[0]
        return ProbeResult(
            "chat", "pass" if ok else "fail", latency_s=latency,
            tokens_per_s=tokens_per_s(response, latency), detail=detail,
            data={"finish_reason": choice.get("finish_reason"), "usage": response.get("usage"),
                  "expected": expected, "answer": answer_text(choice.get("message") or {})},
        )

    def probe_streaming(self) -> ProbeResult:
        a, b = random.randint(2, 9), random.randint(2, 9)
        expected = str(a * b)
        capture = self.client.stream(
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
        parser, source = self.client.parser("reasoning_parser")
        if source == "/model_info" and not parser:
            return ProbeResult("reasoning", "fail",
                               detail="the server runs without a reasoning parser (/model_info reasoning_parser is null)")
        a, b = random.randint(3, 9), random.randint(3, 9)
        expected = str(a + b)
        response, latency = self.client.chat(
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
            tokens_per_s=tokens_per_s(response, latency), detail=f"{detail} ({source})",
            data={"parser": parser, "parser_source": source, "mode": reasoning_mode(parser),
                  "reasoning_chars": len(message.get("reasoning_content") or ""),
                  "content_has_think_tags": think_tags_in(message.get("content"))},
        )

    def probe_vision(self) -> ProbeResult:
        if self.client.vision == "off":
            return ProbeResult("vision", "skip", detail="--vision off")
        if self.client.vision == "auto":
            if self.client.model_info is None:
                return ProbeResult("vision", "skip", detail="no /model_info to tell; use --vision on")
            if not self.client.model_info.get("has_image_understanding"):
                return ProbeResult("vision", "skip", detail="model has no image understanding (/model_info)")
        colour = random.choice(sorted(COLOURS))
        content = [
            {"type": "image_url", "image_url": {"url": png_data_url(COLOURS[colour])}},
            {"type": "text", "text": VISION_QUESTION},
        ]
        response, latency = self.client.chat(
            "vision", messages=[{"role": "user", "content": content}],
            extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
        )
        message = ((response.get("choices") or [{}])[0]).get("message") or {}
        ok, detail = check_colour(answer_text(message), colour)
        data = {"colour": colour, "answer": answer_text(message)}
        if ok and self.client.image_url:
            content = [
                {"type": "image_url", "image_url": {"url": self.client.image_url}},
                {"type": "text", "text": VISION_QUESTION},
            ]
            remote, remote_latency = self.client.chat(
                "vision", messages=[{"role": "user", "content": content}],
                extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
            )
            answer = answer_text(((remote.get("choices") or [{}])[0]).get("message") or {})
            data.update(remote_url=self.client.image_url, remote_answer=answer, remote_latency_s=remote_latency)
            if not answer:
                ok, detail = False, f"{detail}; remote --image-url answer is empty"
            else:
                detail = f"{detail}; remote URL answer {shorten(answer, 40)!r}"
        return ProbeResult("vision", "pass" if ok else "fail", latency_s=latency,
                           tokens_per_s=tokens_per_s(response, latency), detail=detail, data=data)

    def probe_tools(self) -> ProbeResult:
        expect = {"location_contains": WEATHER_CITY, "unit": "celsius"}
        messages = self._messages(WEATHER_QUESTION)
        response, latency = self.client.chat(
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
        followup, followup_latency = self.client.chat(
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
            capture = self.client.stream(
                "tools", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto",
                extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
            )
            ok, detail = self._check_streamed_call(capture, expect)
            data["stream_ttft_s"] = capture.ttft_s
            data["stream_fragments"] = len(capture.tool_deltas)
            parts.append("stream: " + detail)
        return ProbeResult("tools", "pass" if ok else "fail", latency_s=latency,
                           tokens_per_s=tokens_per_s(response, latency),
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
        if not self.client.api_key:
            return ProbeResult("auth", "skip", detail="UNAUTHENTICATED: no API key configured (--api-key/--api-key-file/"
                               "SGL_API_KEY); an endpoint that answers without one serves anyone who reaches it")
        start = time.monotonic()
        wrong = "wrong-" + os.urandom(6).hex()
        chat_body = {"model": self.client.model, "messages": self._messages("hi"), "max_tokens": 1}
        checks = {}
        if not self.client.router:
            checks["GET /v1/models without key"] = ("GET", "/v1/models", None, {})
            checks["GET /v1/models with a wrong key"] = ("GET", "/v1/models", wrong, {})
        checks["POST /v1/chat/completions without key"] = ("POST", "/v1/chat/completions", None, {"json": chat_body})
        checks["POST /v1/chat/completions with a wrong key"] = (
            "POST", "/v1/chat/completions", wrong, {"json": chat_body})
        statuses: dict[str, int | str] = {}
        retries_before = len(self.client.retries)
        for label, (method, path, key, kwargs) in checks.items():
            try:
                statuses[label] = self.client.request_safe(label, method, path, key=key, **kwargs).status_code
            except Exception as exc:  # the retry failed too: a real failure, never a pass
                statuses[label] = f"{type(exc).__name__}: {exc}"
        retried = self.client.retries[retries_before:]
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
        note = " (gateway: /v1/models is open upstream, not checked)" if self.client.router else ""
        return ProbeResult("auth", "pass", latency_s=latency,
                           detail=f"{len(statuses)} unauthenticated requests got 401{note}{note_retry}",
                           data=data)

    def probe_concurrency(self) -> ProbeResult:
        n = max(1, self.client.concurrency)

        def one(i: int):
            try:
                response, latency = self.client.chat(
                    "concurrency", messages=self._messages(f"Reply with the word ok{i}."),
                    extra_body=RECIPE_EXTRA_BODY, **RECIPE_SAMPLING,
                )
            except Exception as exc:
                return False, None, self.client.scrub(f"{type(exc).__name__}: {exc}"), 0
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
        if not self.client.bench_python:
            return ProbeResult("bench", "fail", detail="--bench needs --bench-python (an SGLang venv's python)")
        tokenizer = self.client.bench_tokenizer or (self.client.model_info or {}).get("tokenizer_path") or (
            self.client.model_info or {}).get("model_path")
        start = time.monotonic()
        ok, detail, data = run_bench(
            self.client.bench_python, self.client.base_url, self.client.model, self.client.api_key, self.client.bench_num_prompts,
            tokenizer, timeout=max(self.client.timeout * 5, 600),
        )
        latency = time.monotonic() - start
        self.client.record("bench", start, latency, ok)
        return ProbeResult("bench", "pass" if ok else "fail", latency_s=latency,
                           ttft_s=(data.get("median_ttft_ms") or 0) / 1000 or None,
                           tokens_per_s=data.get("output_throughput"), detail=self.client.scrub(detail), data=data)



# --------------------------------------------------------------------------- the runner


class ProbeRunner(ProbeClient):
    """The default suite's runner: a client composed with :class:`DefaultSuite` and
    :class:`~sgl_deploy.probe_m3.M3Suite` (``sgl-deploy probe --suite default``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.default = DefaultSuite(self)
        self.m3 = M3Suite(self)

    def probes(self) -> dict[str, Callable[[], ProbeResult]]:
        return {**self.default.probes(), **self.m3.probes()}


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

