"""`sgl-deploy probe`: post-deploy capability probes against an SGLang endpoint (the CLI).

Each probe makes real requests (OpenAI Python SDK for chat, plain httpx for ``/v1/models``,
``/model_info``, ``/health`` and the auth check) and passes its verdict through a small pure
check function (``check_*``, ``validate_schema``, ``reassemble_tool_call_stream``), so the
checking logic is unit-tested without a server.

The probe code is a one-way chain (issue 29): ``probe_checks`` (pure checks and constants) ->
``probe_client`` (the HTTP/OpenAI client, ``Unreachable``, scrubbing, the run loop) -> the suites
(``probe_m3``, ``probe_default``, ``recipe_suite``) -> this module (argument parsing, exit codes,
report writing). The names this module always had are re-exported from their new homes.

Rules: never call ``/server_info`` (SGLang echoes the API key there), never print the key.

Exit codes: 0 every selected probe passed (skips allowed), 1 some probe failed,
2 usage error, 3 endpoint unreachable on first contact.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

from sgl_deploy import recipe_suite, report
from sgl_deploy.probe_checks import (  # noqa: F401 (the names sgl_deploy.probe always had)
    ACCURACY_THRESHOLD,
    COLOUR_WORDS,
    COLOURS,
    IN_CONTENT_REASONING_PARSERS,
    RECIPE_EXTRA_BODY,
    RECIPE_SAMPLING,
    THINK_TAGS,
    TOOL_MARKUP,
    VISION_QUESTION,
    WEATHER_CITY,
    WEATHER_QUESTION,
    WEATHER_RESULT,
    WEATHER_TOOL,
    ProbeResult,
    RequestSample,
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
    make_png,
    normalize_base_url,
    percentile,
    png_data_url,
    reasoning_mode,
    reassemble_tool_call_stream,
    shorten,
    strip_think,
    think_tags_in,
    validate_schema,
)
from sgl_deploy.probe_client import (  # noqa: F401 (the names sgl_deploy.probe always had)
    Unreachable,
)
from sgl_deploy.probe_default import (  # noqa: F401 (the names sgl_deploy.probe always had)
    BENCH_FIELDS,
    BENCH_SHIM,
    OPTIONAL_PROBES,
    PROBES,
    ProbeRunner,
    bench_command,
    parse_bench_output,
    run_bench,
    select_probes,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


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
    try:
        if args.suite == "recipe":
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
