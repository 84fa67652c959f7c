"""Probe reports: JSON, JUnit XML, a text table and a PNG latency plot.

The report is a plain dict (see ``build_report``) so it round-trips through JSON:

    {"base_url", "model", "started_at", "duration_s", "passed": bool,
     "probes": [{"name", "status": "pass|fail|skip|warn", "latency_s", "ttft_s",
                 "tokens_per_s", "detail", "data": {...}}],
     "requests": [{"probe", "start_s", "latency_s", "ok"}],   # one per HTTP request
     "error": "..."}                                           # only when no probe could run
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import datetime


def build_report(
    *,
    base_url: str,
    model: str | None,
    started_at: datetime,
    duration_s: float,
    probes: list[dict],
    requests: list[dict],
    error: str | None = None,
    retries: list[str] | None = None,
    unauthenticated: bool = False,
) -> dict:
    passed = error is None and bool(probes) and all(p["status"] != "fail" for p in probes)
    result = {
        "base_url": base_url,
        "model": model,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "passed": passed,
        "probes": probes,
        "requests": requests,
    }
    # requests retried once after a connection-level error (see ProbeRunner.request_safe)
    result["retries"] = list(retries or [])
    if error:
        result["error"] = error
    if unauthenticated:  # the endpoint answered requests that carried no API key
        result["unauthenticated"] = True
    return result


def failed_probes(report: dict) -> list[str]:
    return [p["name"] for p in report.get("probes", []) if p["status"] == "fail"]


def _ensure_dir(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)


def write_json(report: dict, path: str) -> None:
    _ensure_dir(path)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=str)
        fh.write("\n")


def _fmt_s(value) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _fmt_rate(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def accuracy_line(report: dict) -> str | None:
    """``accuracy 0.983 (118/120, threshold 0.90, p95 1.2s)`` when the run has an accuracy probe."""
    probe = next((p for p in report.get("probes", []) if p["name"] == "accuracy"), None)
    data = (probe or {}).get("data") or {}
    if "accuracy" not in data:
        return None
    p95 = data.get("p95_s")
    line = (f"accuracy {data['accuracy']:.3f} ({data.get('correct')}/{data.get('problems')}, "
            f"threshold {data.get('threshold', 0):.2f}, p95 {'-' if p95 is None else f'{p95:.2f}s'})")
    return line


def format_table(report: dict, detail_width: int = 100) -> str:
    """The human table: probe, result, latency, TTFT, tokens/s, detail."""
    rows = [("probe", "result", "latency", "TTFT", "tok/s", "detail")]
    for p in report.get("probes", []):
        detail = " ".join(str(p.get("detail") or "").split())
        if len(detail) > detail_width:
            detail = detail[: detail_width - 1] + "…"
        rows.append((
            p["name"], p["status"].upper(), _fmt_s(p.get("latency_s")), _fmt_s(p.get("ttft_s")),
            _fmt_rate(p.get("tokens_per_s")), detail,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    accuracy = accuracy_line(report)
    if accuracy:
        lines.append(accuracy)
    summary = "PASSED" if report.get("passed") else "FAILED"
    failed = failed_probes(report)
    if failed:
        summary += f" (failed: {', '.join(failed)})"
    if report.get("error"):
        summary += f" ({report['error']})"
    lines.append(
        f"{summary}: {report.get('base_url')} model={report.get('model')} "
        f"in {report.get('duration_s', 0):.1f}s"
    )
    if report.get("unauthenticated"):
        lines.append(f"UNAUTHENTICATED: {report.get('base_url')} answered without an API key: it serves anyone who "
                     "reaches it (sglang_service_allow_unauthenticated / sglang_router_allow_unauthenticated)")
    return "\n".join(lines)


def junit_xml(report: dict) -> str:
    probes = report.get("probes", [])
    suite = ET.Element(
        "testsuite",
        name=f"sgl-deploy probe {report.get('base_url')}",
        tests=str(len(probes) or 1),
        failures=str(sum(p["status"] == "fail" for p in probes) + (1 if report.get("error") else 0)),
        skipped=str(sum(p["status"] == "skip" for p in probes)),
        errors="0",
        time=f"{report.get('duration_s', 0):.3f}",
        timestamp=str(report.get("started_at", "")),
    )
    props = ET.SubElement(suite, "properties")
    for key in ("base_url", "model"):
        ET.SubElement(props, "property", name=key, value=str(report.get(key)))
    classname = "sgl_deploy.probe"
    if report.get("error"):
        case = ET.SubElement(suite, "testcase", classname=classname, name="contact", time="0")
        ET.SubElement(case, "failure", message=report["error"]).text = report["error"]
    for p in probes:
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=p["name"],
            time=f"{p.get('latency_s') or 0:.3f}",
        )
        if p["status"] == "fail":
            ET.SubElement(case, "failure", message=p.get("detail") or "failed").text = p.get("detail")
        elif p["status"] == "skip":
            ET.SubElement(case, "skipped", message=p.get("detail") or "skipped")
        elif p["status"] == "warn":  # passes, with a known upstream problem named
            ET.SubElement(case, "system-out").text = "WARN: " + (p.get("detail") or "")
        else:
            ET.SubElement(case, "system-out").text = p.get("detail") or ""
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: dict, path: str) -> None:
    _ensure_dir(path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(junit_xml(report))


def write_plot(report: dict, path: str) -> bool:
    """Latency of every request of the run against its start time, one colour per probe.
    Returns False (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    requests = report.get("requests") or []
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    probes = list(dict.fromkeys(r["probe"] for r in requests))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(probes):
        pts = [r for r in requests if r["probe"] == name]
        ok = [r for r in pts if r["ok"]]
        bad = [r for r in pts if not r["ok"]]
        if ok:
            ax.scatter([r["start_s"] for r in ok], [r["latency_s"] for r in ok],
                       color=cmap(i % 10), label=name, s=28)
        if bad:
            ax.scatter([r["start_s"] for r in bad], [r["latency_s"] for r in bad],
                       color=cmap(i % 10), marker="x", s=40,
                       label=f"{name} (failed)")
    ax.set_xlabel("request start (s since probe start)")
    ax.set_ylabel("latency (s)")
    status = "PASSED" if report.get("passed") else "FAILED"
    ax.set_title(f"sgl-deploy probe {status}: {report.get('model')} @ {report.get('base_url')}",
                 fontsize=10)
    if probes:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no requests", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- `sgl-deploy report`


def latest_run_dir(root: str) -> str | None:
    """The newest run folder (<root>/<UTC stamp>/) holding at least one <target>/report.json."""
    if not os.path.isdir(root):
        return None
    runs = sorted(
        (d for d in os.listdir(root)
         if os.path.isdir(os.path.join(root, d))
         and any(os.path.isfile(os.path.join(root, d, t, "report.json"))
                 for t in os.listdir(os.path.join(root, d)))),
        reverse=True,
    )
    return os.path.join(root, runs[0]) if runs else None


def summarize_run(run_dir: str, max_duration_s: float | None = None) -> tuple[str, bool]:
    """Text of every target's table in a run folder, and whether all of them passed (and, with
    ``max_duration_s``, ran within that many seconds)."""
    parts, ok = [], True
    targets = sorted(t for t in os.listdir(run_dir) if os.path.isfile(os.path.join(run_dir, t, "report.json")))
    for target in targets:
        with open(os.path.join(run_dir, target, "report.json"), encoding="utf-8") as fh:
            report = json.load(fh)
        ok = ok and bool(report.get("passed"))
        text = format_table(report)
        plot = os.path.join(run_dir, target, "plot.png")
        if os.path.isfile(plot):
            text += f"\nplot: {plot}"
        if max_duration_s is not None:
            took = float(report.get("duration_s") or 0)
            within = took < max_duration_s
            ok = ok and within
            text += (f"\nprobe set runtime: {took:.1f}s for {len(report.get('probes') or [])} probes "
                     f"({'within' if within else 'OVER'} the {max_duration_s:g}s budget)")
        parts.append(f"== {target} ==\n{text}")
    if not targets:
        return f"no report.json under {run_dir}", False
    verdict = "ALL PASSED" if ok else "SOME FAILED"
    parts.append(f"{verdict}: {len(targets)} endpoint(s), reports in {run_dir}")
    return "\n\n".join(parts), ok


def _cmd_report(args) -> int:
    run_dir = args.run_dir or latest_run_dir(args.reports)
    if not run_dir or not os.path.isdir(run_dir):
        print(f"sgl-deploy report: no probe run under {args.reports} (run site.yml or playbooks/probe.yml first)")
        return 2
    text, ok = summarize_run(run_dir, args.max_duration)
    print(text)
    return 0 if ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="print the probe tables of a run (default: the newest under reports/)",
        description="Print every endpoint's probe table from a probes run folder; exit 0 only if all passed.",
    )
    p.add_argument("run_dir", nargs="?", help="a run folder (reports/<UTC stamp>); default: the newest")
    p.add_argument("--reports", default="reports", help="root of the probe reports (default: reports)")
    p.add_argument("--max-duration", type=float, metavar="S",
                   help="also print each probe run's runtime and exit 1 when one took S seconds or more")
    p.set_defaults(func=_cmd_report)
