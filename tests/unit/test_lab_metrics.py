"""The lab engine's /metrics text: SGLang's real names, types and labels, and the dashboard and alert
rules only use names the lab engine really exports.

Expected names/types/labels are SGLang 0.5.23's (sglang/srt/observability/metrics_collector.py):
scheduler gauges carry model_name, engine_type, tp_rank, pp_rank, moe_ep_rank; tokenizer counters
and histograms carry model_name, engine_type (+ is_streaming where SGLang adds it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab" / "engine"))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
import sgl_lab_engine  # noqa: E402
from monitoring_rules import render_rules  # noqa: E402

SCHED = {"model_name", "engine_type", "tp_rank", "pp_rank", "moe_ep_rank"}
TOK = {"model_name", "engine_type"}
STREAM = TOK | {"is_streaming"}
UPSTREAM = {
    "sglang:num_running_reqs": ("gauge", SCHED),
    "sglang:num_queue_reqs": ("gauge", SCHED),
    "sglang:token_usage": ("gauge", SCHED),
    "sglang:gen_throughput": ("gauge", SCHED),
    "sglang:num_used_tokens": ("gauge", SCHED),
    "sglang:cache_hit_rate": ("gauge", SCHED),
    "sglang:max_total_num_tokens": ("gauge", SCHED),
    "sglang:prompt_tokens_total": ("counter", STREAM),
    "sglang:generation_tokens_total": ("counter", STREAM),
    "sglang:num_requests_total": ("counter", STREAM),
    "sglang:num_aborted_requests_total": ("counter", TOK),
    "sglang:time_to_first_token_seconds": ("histogram", STREAM),
    "sglang:e2e_request_latency_seconds": ("histogram", STREAM),
}
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(family -> type, samples) of a Prometheus text exposition."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE_RE.match(line)
            assert m, f"unparsable sample line {line!r}"
            samples.append((m.group(1), dict(LABEL_RE.findall(m.group(2))), float(m.group(3))))
    return types, samples


def family(sample_name: str, types: dict[str, str]) -> str:
    for suffix in ("_bucket", "_count", "_sum", ""):
        base = sample_name[: -len(suffix)] if suffix and sample_name.endswith(suffix) else sample_name
        if base in types:
            return base
    raise AssertionError(f"sample {sample_name} has no # TYPE")


def rendered(requests: int = 1) -> str:
    metrics = sgl_lab_engine.Metrics()
    for i in range(requests):
        metrics.begin()
        metrics.end(12, 7, 0.3, 1.5, streaming=bool(i % 2))
    metrics.begin()  # one still running
    return metrics.render("MiniMax-M3", 1000)


def exported_names() -> set[str]:
    """Every sample name the lab engine exports (histograms: _bucket/_count/_sum)."""
    return {name for name, _, _ in parse(rendered(2))[1]}


def test_names_types_and_labels_are_sglangs():
    types, samples = parse(rendered(2))
    assert {n: t for n, t in types.items()} == {n: t for n, (t, _) in UPSTREAM.items()}
    for name, labels, _ in samples:
        fam = family(name, types)
        expected = UPSTREAM[fam][1] | ({"le"} if name.endswith("_bucket") else set())
        assert set(labels) == expected, (name, labels)
        assert labels["model_name"] == "MiniMax-M3" and labels["engine_type"] == "unified"


def test_values_follow_the_requests():
    _, samples = parse(rendered(3))
    value = {(n, labels.get("is_streaming"), labels.get("le")): v for n, labels, v in samples}
    assert value[("sglang:num_running_reqs", None, None)] == 1.0
    assert value[("sglang:num_requests_total", "false", None)] == 2.0
    assert value[("sglang:num_requests_total", "true", None)] == 1.0
    assert value[("sglang:time_to_first_token_seconds_bucket", "false", "0.2")] == 0.0
    assert value[("sglang:time_to_first_token_seconds_bucket", "false", "0.4")] == 2.0
    assert value[("sglang:time_to_first_token_seconds_bucket", "false", "+Inf")] == 2.0
    assert value[("sglang:e2e_request_latency_seconds_count", "true", None)] == 1.0
    assert 0 < value[("sglang:token_usage", None, None)] <= 1


def test_buckets_are_sglangs_defaults():
    assert sgl_lab_engine.TTFT_BUCKETS[:3] == (0.1, 0.2, 0.4) and sgl_lab_engine.TTFT_BUCKETS[-1] == 400
    assert sgl_lab_engine.E2E_BUCKETS[-1] == 2400 and len(sgl_lab_engine.E2E_BUCKETS) == 22


# ---- the dashboard and the alert rules use only names the lab engine exports

DASHBOARD = REPO / "templates" / "grafana" / "sglang-fleet.json"
METRIC_RE = re.compile(r"\bsglang:[a-zA-Z0-9_:]+")
# The gateway's metrics come from sgl-router/smg, not the lab engine.
NON_ENGINE = ("sgl_router_", "smg_")


def expressions(node) -> list[str]:
    if isinstance(node, dict):
        out = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return out + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def test_dashboard_metric_names_are_exported_by_the_lab_engine():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard)
    assert len(exprs) >= 8, "the dashboard lost its panels"
    used = {m for e in exprs for m in METRIC_RE.findall(e)}
    assert {"sglang:time_to_first_token_seconds_bucket", "sglang:num_queue_reqs", "sglang:token_usage",
            "sglang:e2e_request_latency_seconds_bucket", "sglang:generation_tokens_total"} <= used
    missing = used - exported_names()
    assert not missing, f"dashboard queries metrics the engine does not export: {sorted(missing)}"
    titles = " ".join(p.get("title", "") for p in dashboard["panels"]).lower()
    for word in ("throughput", "ttft", "latency", "queue", "token usage", "restarts", "gateway"):
        assert word in titles, f"no dashboard panel about {word}"


def test_alert_rules_metric_names_are_exported_by_the_lab_engine():
    rules = yaml.safe_load(render_rules())
    used = {m for e in expressions(rules) for m in METRIC_RE.findall(e)}
    assert used and not used - exported_names(), sorted(used - exported_names())


@pytest.mark.parametrize("bad", ["sglang:num_waiting_reqs", "sglang:ttft_seconds_bucket"])
def test_the_name_check_can_fail(bad):
    assert bad not in exported_names()
