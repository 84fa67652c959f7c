"""`sgl-deploy status -i INVENTORY`: one row per engine and gateway: what runs where, is it healthy, did it drift.

Per row: host, role (engine rank or gateway), SGLang (or sglang-router) version, model@revision, tp/ep/dp,
health and uptime, running/queued requests, token usage, the last probe result and its age (``reports/``),
and drift: whether a ``site.yml`` run would change the host's server command.

Drift compares the deploy state on the host (the serve role's local fact ``/etc/ansible/facts.d/sglang.fact``,
read with :func:`sgl_deploy.deploy_state.read`: for a host deployed before the fact existed, the unit's
``ExecStart=`` line; and the active venv) with what the current inventory plans: the same planner
(:func:`sgl_deploy.planner.plan`, fed the host's ``nvidia-smi -q -x`` and the hub's listing size, as the
``sglang_plan`` role does) and the same argv builder (:func:`sgl_deploy.argv.server_argv`). The parsers are
the install role's choice among the plan's preferences: the deployed one is kept when the plan still allows it.

Hosts are contacted in parallel (one SSH session per host with the inventory's connection settings, HTTP
to ``/health`` and ``/metrics``, which SGLang exempts from the API key); a progress line goes to stderr.
Exit 0 when every row is healthy without drift, 1 otherwise, 2 when the inventory cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from sgl_deploy import deploy_state, monitoring

REPO = Path(__file__).resolve().parents[2]
ROLE_DEFAULTS = ("sglang_plan", "sglang_service", "sglang_router", "sglang_install")

# Collected on an engine host by `python3 -` (stdlib only): unit state, the deploy-state fact (and the
# ExecStart line, the fallback for hosts deployed before the fact), active venv, GPUs (for the plan) and
# the weights manifest of the deployed --model-path.
ENGINE_SCRIPT = r'''
import json, os, shlex, subprocess, sys, time
service, root, fact_path = sys.argv[1], sys.argv[2], sys.argv[4]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
out = {"show": {}, "fact": None, "exec_start": None, "current": None, "smi_xml": "", "smi_topo": "", "manifest": None}
for line in run("systemctl", "show", service + ".service", "-p", "ActiveState", "-p", "SubState", "-p", "NRestarts",
                "-p", "ExecMainStartTimestampMonotonic", "-p", "LoadState").splitlines():
    key, _, value = line.partition("=")
    out["show"][key] = value
out["monotonic_now_us"] = int(time.monotonic() * 1e6)
try:
    with open("/etc/systemd/system/%s.service" % service) as fh:
        out["exec_start"] = next((l.rstrip("\n") for l in fh if l.startswith("ExecStart=")), None)
except OSError:
    pass
try:
    with open(fact_path) as fh:
        out["fact"] = fh.read()
except OSError:
    pass
try:
    out["current"] = os.readlink(os.path.join(root, "current"))
except OSError:
    pass
if sys.argv[3] == "1":
    out["smi_xml"] = run("nvidia-smi", "-q", "-x")
    out["smi_topo"] = run("nvidia-smi", "topo", "-m")
path = None
try:
    path = json.loads(out["fact"] or "{}")["model"]["path"]
except (ValueError, KeyError, TypeError):
    pass
if not path and out["exec_start"]:
    try:
        argv = shlex.split(out["exec_start"][len("ExecStart="):])
        path = argv[argv.index("--model-path") + 1]
    except (ValueError, IndexError):
        pass
if path:
    try:
        with open(os.path.join(path, "MANIFEST.json")) as fh:
            manifest = json.load(fh)
        out["manifest"] = {k: manifest.get(k) for k in ("model_id", "revision")}
    except (ValueError, OSError):
        pass
print(json.dumps(out))
'''


# --------------------------------------------------------------------------- inventory


def load_inventory(inventory: str, ansible_inventory: str | None = None) -> dict[str, Any]:
    """``ansible-inventory --list`` of the inventory: {"hostvars": {...}, "groups": {group: [hosts]}}."""
    if not os.path.exists(inventory):
        raise RuntimeError(f"no inventory at {inventory}")
    exe = ansible_inventory or str(Path(sys.executable).with_name("ansible-inventory"))
    if not os.path.exists(exe):
        exe = "ansible-inventory"
    proc = subprocess.run([exe, "-i", inventory, "--list"], capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"ansible-inventory -i {inventory}: {proc.stderr.strip()[-500:]}")
    data = json.loads(proc.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})

    def members(group: str, seen: set[str]) -> list[str]:
        if group in seen:
            return []
        seen.add(group)
        entry = data.get(group, {})
        hosts = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            hosts += [h for h in members(child, seen) if h not in hosts]
        return hosts

    groups = {g: members(g, set()) for g in data if g != "_meta"}
    for host in hostvars:
        hostvars[host].setdefault("inventory_hostname", host)
    for host in groups.get("all", []):
        hostvars.setdefault(host, {"inventory_hostname": host})
    return {"hostvars": hostvars, "groups": groups}


def role_defaults(roles_dir: Path = REPO / "roles") -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for role in ROLE_DEFAULTS:
        path = roles_dir / role / "defaults" / "main.yml"
        if path.is_file():
            out.update(yaml.safe_load(path.read_text()) or {})
    return out


def resolve_vars(hostvars: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Role defaults under the inventory's host vars, with simple ``{{ }}`` defaults rendered (jinja2)."""
    import jinja2

    merged = {**defaults, **hostvars}
    env = jinja2.Environment(undefined=jinja2.ChainableUndefined)

    def render(value: Any, depth: int = 0) -> Any:
        if isinstance(value, str) and "{{" in value and depth < 5:
            try:
                text = env.from_string(value).render(**merged).strip()
            except jinja2.TemplateError:
                return None
            try:
                import ast
                return render(ast.literal_eval(text), depth + 1) if text[:1] in "[{" else render(text, depth + 1)
            except (ValueError, SyntaxError):
                return text
        if isinstance(value, list):
            return [render(v, depth) for v in value]
        return value

    return {k: render(v) for k, v in merged.items()}


# --------------------------------------------------------------------------- contacting hosts


def ssh_argv(hv: dict[str, Any], timeout: int) -> list[str]:
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}"]
    if hv.get("ansible_ssh_common_args"):
        cmd += shlex.split(str(hv["ansible_ssh_common_args"]))
    if hv.get("ansible_ssh_private_key_file"):
        cmd += ["-i", str(hv["ansible_ssh_private_key_file"])]
    if hv.get("ansible_port"):
        cmd += ["-p", str(hv["ansible_port"])]
    user = hv.get("ansible_user")
    host = str(hv.get("ansible_host") or hv["inventory_hostname"])
    return cmd + [f"{user}@{host}" if user else host]


def remote_facts(hv: dict[str, Any], service: str, root: str, gpus: bool, timeout: int,
                 fact_path: str = "") -> dict[str, Any]:
    cmd = ssh_argv(hv, timeout) + [f"python3 - {shlex.quote(service)} {shlex.quote(root)} {int(gpus)} "
                                   f"{shlex.quote(fact_path or '-')}"]
    try:
        proc = subprocess.run(cmd, input=ENGINE_SCRIPT, capture_output=True, text=True, timeout=timeout + 90)
    except subprocess.TimeoutExpired:
        return {"error": "ssh timed out"}
    if proc.returncode:
        return {"error": f"ssh rc {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-200:]}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "unreadable answer from the host"}


def http_get(url: str, timeout: float, ca_file: str | None = None) -> tuple[int | None, str]:
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=ca_file) if ca_file and url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310 - http(s) URLs we built
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (OSError, ValueError, http.client.HTTPException) as exc:  # e.g. plain HTTP to a TLS port
        return None, str(exc)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def metric_values(text: str) -> dict[str, list[tuple[str, float]]]:
    """name -> [(labels text, value)] of a Prometheus text exposition."""
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        try:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
        except ValueError:
            continue
    return out


# --------------------------------------------------------------------------- drift


def flag_groups(args: list[str]) -> dict[str, list[str]]:
    """``--flag v1 v2 --bool`` -> {"--flag": ["v1", "v2"], "--bool": []} (repeated flags: values appended)."""
    out: dict[str, list[str]] = {}
    current = None
    for arg in args:
        if arg.startswith("--") and arg != "--":
            name, eq, value = arg.partition("=")
            current = name
            out.setdefault(current, [])
            if eq:
                out[current].append(value)
        elif current is None:
            out.setdefault("", []).append(arg)
        else:
            out[current].append(arg)
    return out


def deployed_state(remote: dict[str, Any]) -> dict[str, Any]:
    """The engine's deploy state: its sglang.fact, else (deployed before the fact) its ExecStart line."""
    return deploy_state.read(remote.get("fact"), remote.get("exec_start"))


def split_deployed(exec_line: str) -> tuple[list[str], list[str]]:
    """(launcher, server args without ``--config FILE``) of a deployed ``ExecStart=`` line."""
    from sgl_deploy.argv import split_exec_start

    argv = split_exec_start(exec_line)
    idx = argv.index("--model-path") if "--model-path" in argv else len(argv)
    launcher, args = argv[:idx], argv[idx:]
    if "--config" in args:
        i = args.index("--config")
        args = args[:i] + args[i + 2:]
    return launcher, args


def argv_drift(deployed: list[str], planned: list[str]) -> list[str]:
    """Readable differences between two server argvs (flag order ignored)."""
    dep, plan = flag_groups(deployed), flag_groups(planned)
    out = []
    for flag in list(plan) + [f for f in dep if f not in plan]:
        if flag not in dep:
            out.append(f"add {flag} {' '.join(plan[flag])}".rstrip())
        elif flag not in plan:
            out.append(f"drop {flag} {' '.join(dep[flag])}".rstrip())
        elif dep[flag] != plan[flag]:
            out.append(f"{flag} {' '.join(dep[flag])} -> {' '.join(plan[flag])}")
    return out


def pick_parser(deployed: list[str], flag: str, preferences: list[str] | None) -> str | None:
    prefs = list(preferences or [])
    current = flag_groups(deployed).get(flag)
    if current and current[0] in prefs:
        return current[0]
    return prefs[0] if prefs else None


class HubSizes:
    """Hub listing sizes, asked once per (endpoint, model, revision) like the sglang_plan role does."""

    def __init__(self, timeout: float):
        self.timeout, self.cache, self.lock = timeout, {}, threading.Lock()

    def gb(self, endpoint: str, model_id: str, revision: str) -> float | None:
        from urllib.parse import quote

        from sgl_deploy import hub

        key = (endpoint, model_id, revision)
        with self.lock:
            if key in self.cache:
                return self.cache[key]
        url = f"{endpoint.rstrip('/')}/api/v1/models/{model_id}/repo/files?Revision={quote(revision)}&Recursive=True"
        code, body = http_get(url, self.timeout)
        size = None
        if code == 200:
            try:
                size = hub.listing_total_gb(json.loads(body))
            except (ValueError, KeyError, TypeError):
                size = None
        with self.lock:
            self.cache[key] = size
        return size


def planned_engine(v: dict[str, Any], ep: monitoring.Endpoint, facts: dict[str, Any], rank0_addr: str,
                   hub_sizes: HubSizes) -> dict[str, Any]:
    """The plan the sglang_plan role would compute for this host now (same inputs, same planner)."""
    from sgl_deploy import planner

    profile = v.get("sglang_plan_model_profile") or "minimax-m3"
    variant = v.get("sglang_plan_variant") or None
    model_id = v.get("sglang_plan_model_id") or planner.profile_model_id(profile, variant, facts)
    revision = v.get("sglang_plan_model_revision") or "master"
    weights_gb, source = v.get("sglang_plan_weights_gb"), None
    if weights_gb is not None:
        source = "inventory"
    elif str(v.get("sglang_plan_weights_size_from_hub", True)).lower() not in ("false", "no", "0"):
        endpoint = v.get("sglang_plan_hub_endpoint") or v.get("model_weights_endpoint") or "https://modelscope.cn"
        weights_gb = hub_sizes.gb(str(endpoint), model_id, revision)
        source = "hub" if weights_gb is not None else None
    rank0 = f"[{rank0_addr}]" if ":" in rank0_addr else rank0_addr
    return planner.plan(
        gpu_facts=facts, profile=profile, variant=variant, nodes=len(ep.group), node_rank=ep.node_rank,
        dist_init_addr=f"{rank0}:{v.get('sglang_plan_dist_init_port', 20000)}" if len(ep.group) > 1 else None,
        model_id=v.get("sglang_plan_model_id") or None, revision=revision,
        weights_root=v.get("sglang_plan_weights_root") or "/srv/models",
        served_model_name=v.get("sglang_plan_served_model_name") or None,
        sglang_version=str(v.get("sglang_plan_sglang_version") or "0.5.23"),
        host=v.get("sglang_plan_host") or "0.0.0.0", port=int(v.get("sglang_plan_port") or planner.DEFAULT_PORT),
        tp_size=v.get("sglang_plan_tp_size"), ep_size=v.get("sglang_plan_ep_size"),
        dp_size=v.get("sglang_plan_dp_size"), pp_size=v.get("sglang_plan_pp_size"),
        mem_fraction_static=v.get("sglang_plan_mem_fraction_static"),
        context_length=v.get("sglang_plan_context_length"), kv_gb_per_mtok=v.get("sglang_plan_kv_gb_per_mtok"),
        weights_gb=weights_gb, weights_source=source, extra_args=v.get("sglang_plan_extra_args") or [],
    )


def engine_drift(v: dict[str, Any], ep: monitoring.Endpoint, remote: dict[str, Any], rank0_addr: str,
                 hub_sizes: HubSizes) -> list[str]:
    """What a site.yml run would change in the engine's command (empty: nothing)."""
    from sgl_deploy import gpu_facts
    from sgl_deploy.argv import server_argv

    state = deployed_state(remote)
    if not state.get("exec_start"):
        return ["not deployed (no unit)"]
    try:
        facts = gpu_facts.gpu_facts(remote.get("smi_xml") or "", remote.get("smi_topo") or "")
    except Exception as exc:  # noqa: BLE001 - any parse failure is reported in the row
        return [f"cannot read the GPUs: {exc}"]
    try:
        plan = planned_engine(v, ep, facts, rank0_addr, hub_sizes)
    except Exception as exc:  # noqa: BLE001 - the planner's refusal is the answer
        return [f"no plan: {exc}"]
    launcher, deployed = split_deployed(state["exec_start"])
    parsers = plan.get("parsers") or {}
    planned = server_argv(plan, pick_parser(deployed, "--tool-call-parser", parsers.get("tool_call")),
                          pick_parser(deployed, "--reasoning-parser", parsers.get("reasoning")))
    drift = argv_drift(deployed, planned)
    want_launcher = v.get("sglang_service_launcher")
    if isinstance(want_launcher, list) and all(isinstance(a, str) for a in want_launcher) and launcher != want_launcher:
        drift.append(f"launcher {' '.join(launcher)} -> {' '.join(want_launcher)}")
    venv = os.path.basename(str(remote.get("current") or ""))
    if venv != f"sglang-{plan['sglang_version']}":
        drift.append(f"venv {venv or '-'} -> sglang-{plan['sglang_version']}")
    return drift


# --------------------------------------------------------------------------- rows


def fmt_age(seconds: float | None) -> str:
    """42s, 3m05s, 2h07m, 1d03h."""
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def uptime_s(remote: dict[str, Any]) -> float | None:
    show = remote.get("show") or {}
    try:
        start = int(show.get("ExecMainStartTimestampMonotonic") or 0)
    except ValueError:
        return None
    if show.get("ActiveState") != "active" or not start:
        return None
    return (int(remote.get("monotonic_now_us", 0)) - start) / 1e6


def last_probe(reports: str, target: str, now: float) -> dict[str, Any] | None:
    """The newest probe report of ``target`` under ``reports`` (result, age)."""
    root = Path(reports)
    if not root.is_dir():
        return None
    for run in sorted((d for d in root.iterdir() if d.is_dir()), reverse=True):
        path = run / target / "report.json"
        if path.is_file():
            try:
                report = json.loads(path.read_text())
            except ValueError:
                return {"result": "unreadable", "age_s": now - path.stat().st_mtime, "path": str(path)}
            try:
                started = datetime.fromisoformat(report["started_at"]).timestamp()
            except (KeyError, ValueError):
                started = path.stat().st_mtime
            return {"result": "pass" if report.get("passed") else "FAIL", "age_s": now - started, "path": str(path)}
    return None


def unauthenticated(v: dict[str, Any], key: Any, opt_out: str) -> bool:
    """Serving without an API key on purpose: the inventory opted out (``opt_out`` true; the fleet
    validation refuses an empty key otherwise) and the key is empty. A key that could not be
    rendered here (None: a vault value) counts as set."""
    return str(v.get(opt_out, "")).strip().lower() in ("true", "yes", "1", "on") and key == ""


def engine_row(v: dict[str, Any], ep: monitoring.Endpoint, rank0_addr: str, args: argparse.Namespace,
               hub_sizes: HubSizes) -> dict[str, Any]:
    service = v.get("sglang_service_name") or "sglang"
    root = v.get("sglang_service_root") or "/opt/sglang"
    remote = remote_facts(v, service, str(root), True, args.timeout, deploy_state.fact_path(service))
    row: dict[str, Any] = {"host": ep.name, "role": f"engine r{ep.node_rank}" if len(ep.group) > 1 else "engine",
                           "address": ep.address, "url": ep.url(),
                           "unauthenticated": unauthenticated(v, v.get("sglang_service_api_key", ""),
                                                              "sglang_service_allow_unauthenticated")}
    if remote.get("error"):
        row.update(health="unreachable", error=remote["error"], drift=None)
        return row
    show = remote.get("show") or {}
    venv = os.path.basename(str(remote.get("current") or ""))
    state = deployed_state(remote)
    row["version"] = state.get("version") or (venv[len("sglang-"):] if venv.startswith("sglang-") else (venv or None))
    row["state_source"] = state["source"]
    row["unit"] = show.get("ActiveState")
    row["restarts"] = int(show["NRestarts"]) if str(show.get("NRestarts", "")).isdigit() else None
    row["uptime_s"] = uptime_s(remote)
    deployed: list[str] = []
    if state.get("exec_start"):
        deployed = split_deployed(state["exec_start"])[1]
    groups = flag_groups(deployed)

    def first(flag: str, default: str | None = None) -> str | None:
        return (groups.get(flag) or [default])[0]

    manifest = remote.get("manifest") or {}
    model = state.get("model") or {}
    model_path = first("--model-path")
    row["model"] = (f"{model['id']}@{model['revision']}" if model.get("id") and model.get("revision")
                    else f"{manifest.get('model_id')}@{manifest.get('revision')}" if manifest.get("model_id")
                    else model_path)
    row["layout"] = f"{first('--tp-size', '1')}/{first('--ep-size', '1')}/{first('--dp-size', '1')}" if deployed else None
    if ep.node_rank == 0:
        code, _ = http_get(ep.url() + "/health", args.timeout)
        row["http_health"] = code
        mcode, text = http_get(ep.url() + "/metrics", args.timeout)
        if mcode == 200:
            values = metric_values(text)
            for key, name in (("running", "sglang:num_running_reqs"), ("queued", "sglang:num_queue_reqs"),
                              ("token_usage", "sglang:token_usage")):
                samples = values.get(name) or []
                row[key] = (max(v for _, v in samples) if key == "token_usage" else sum(v for _, v in samples)) \
                    if samples else None
        healthy = row["unit"] == "active" and code == 200
        row["health"] = "healthy" if healthy else ("starting" if row["unit"] in ("active", "activating") else
                                                    (row["unit"] or "down"))
    else:  # ranks >= 1 serve no HTTP: their unit is their health
        row["health"] = "healthy" if row["unit"] == "active" else (row["unit"] or "down")
    row["drift"] = engine_drift(v, ep, remote, rank0_addr, hub_sizes)
    return row


def gateway_row(v: dict[str, Any], ep: monitoring.Endpoint, args: argparse.Namespace,
                api_key: Any = "") -> dict[str, Any]:
    """``api_key``: the key the gateway runs with (its own, else the workers' sglang_service_api_key)."""
    service = v.get("sglang_router_service_name") or "sglang-router"
    root = v.get("sglang_router_root") or "/opt/sglang-router"
    remote = remote_facts(v, service, str(root), False, args.timeout)
    # TLS at the gateway (any of the role's certificate variables): its API is https, verified against
    # sglang_router_tls_ca_file; its metrics port stays plain http
    # sglang_router_tls_cert / _cert_path set; None is a value resolve_vars could not render here (a lookup
    # or a vaulted PEM): set all the same (the role default is "")
    tls = any(v.get(k) or (k in v and v[k] is None) for k in ("sglang_router_tls_cert", "sglang_router_tls_cert_path"))
    api_url = ("https" + ep.url()[4:]) if tls else ep.url()
    ca_file = str(v.get("sglang_router_tls_ca_file") or "") or None
    row: dict[str, Any] = {"host": ep.name, "role": "gateway", "address": ep.address, "url": api_url,
                           "unauthenticated": unauthenticated(v, api_key, "sglang_router_allow_unauthenticated")}
    if remote.get("error"):
        row.update(health="unreachable", error=remote["error"], drift=None)
        return row
    show = remote.get("show") or {}
    venv = os.path.basename(str(remote.get("current") or ""))
    # venvs are smg-<version> (sglang-router-<version> before the move to smg)
    prefix = next((p for p in ("smg-", "sglang-router-") if venv.startswith(p)), "")
    row["version"] = venv[len(prefix):] if prefix else (venv or None)
    row["unit"] = show.get("ActiveState")
    row["restarts"] = int(show["NRestarts"]) if str(show.get("NRestarts", "")).isdigit() else None
    row["uptime_s"] = uptime_s(remote)
    code, _ = http_get(api_url + "/health", args.timeout, ca_file)
    row["http_health"] = code
    mcode, text = http_get(ep.url(ep.metrics_port) + "/metrics", args.timeout)
    values = metric_values(text) if mcode == 200 else {}
    workers = values.get("smg_worker_health") or values.get("sgl_router_worker_health") or []
    row["workers"] = f"{sum(1 for _, val in workers if val == 1)}/{len(workers)}" if workers else None
    unhealthy = any(val != 1 for _, val in workers)
    row["health"] = ("healthy" if row["unit"] == "active" and code == 200 and not unhealthy else
                     "degraded" if row["unit"] == "active" and code == 200 else (row["unit"] or "down"))
    want = str(v.get("sglang_router_version") or "")
    row["drift"] = [] if not want or row["version"] == want else [f"{'sglang-router' if prefix == 'sglang-router-' else 'smg'} {row['version']} -> {want}"]
    if not remote.get("exec_start"):
        row["drift"] = ["not deployed (no unit)"]
    return row


def collect(inv: dict[str, Any], args: argparse.Namespace, progress: Callable[[int, int, str], None]) -> list[dict]:
    defaults = role_defaults()
    groups, hostvars = inv["groups"], inv["hostvars"]
    engines = groups.get(args.engine_group, [])
    routers = groups.get(args.router_group, [])
    resolved = {h: resolve_vars(hostvars.get(h, {"inventory_hostname": h}), defaults) for h in engines + routers}
    eps = monitoring.endpoints(engines, routers, resolved)
    hub_sizes = HubSizes(args.timeout)
    now = time.time()
    rows: dict[str, dict] = {}

    def one(ep: monitoring.Endpoint) -> dict:
        v = resolved[ep.name]
        if ep.role == "engine":
            rank0 = ep.group[0]
            rank0_addr = str(resolved.get(rank0, hostvars.get(rank0, {})).get("ansible_host") or rank0)
            row = engine_row(v, ep, rank0_addr, args, hub_sizes)
            target = ep.name if ep.node_rank == 0 else None
        else:
            # the gateway's key: its own when the inventory sets one, else the role default, the workers' key
            if "sglang_router_api_key" in hostvars.get(ep.name, {}):
                key = v.get("sglang_router_api_key")
            else:
                first = (groups.get(str(v.get("sglang_router_worker_group") or args.engine_group)) or [None])[0]
                key = resolved.get(first, {}).get("sglang_service_api_key", "") if first else ""
            row = gateway_row(v, ep, args, key)
            target = "router" if ep.name == routers[0] else None
        probe = last_probe(args.reports, target, now) if target else None
        row["probe"] = probe
        return row

    with ThreadPoolExecutor(max_workers=max(1, min(args.parallel, len(eps) or 1))) as pool:
        futures = {pool.submit(one, ep): ep for ep in eps}
        done = 0
        for fut in as_completed(futures):
            ep = futures[fut]
            try:
                rows[ep.name] = fut.result()
            except Exception as exc:  # noqa: BLE001 - one bad host must not hide the others
                rows[ep.name] = {"host": ep.name, "role": ep.role, "health": "error", "error": str(exc), "drift": None}
            done += 1
            progress(done, len(eps), ep.name)
    return [rows[ep.name] for ep in eps]


def prometheus_urls(inv: dict[str, Any], group: str = "monitoring") -> list[str]:
    """URLs of the Prometheus servers of the inventory (hosts of ``group``, roles/monitoring)."""
    out = []
    for host in inv["groups"].get(group, []):
        hv = inv["hostvars"].get(host, {})
        port = str(hv.get("monitoring_listen_address") or "0.0.0.0:9090").rsplit(":", 1)[-1]
        addr = str(hv.get("ansible_host") or host)
        out.append(f"http://{'[' + addr + ']' if ':' in addr else addr}:{port}")
    return out


def row_ok(row: dict[str, Any]) -> bool:
    return row.get("health") == "healthy" and row.get("drift") == []


def format_table(rows: list[dict[str, Any]], prometheus: list[str] | None = None) -> str:
    header = ["HOST", "ROLE", "VERSION", "MODEL@REV", "TP/EP/DP", "HEALTH", "UPTIME", "RUN/QUEUE", "TOKENS",
              "PROBE", "DRIFT"]
    table = [header]
    for r in rows:
        probe = r.get("probe")
        usage = r.get("token_usage")
        runq = (f"{int(r['running'])}/{int(r['queued'])}" if r.get("running") is not None and r.get("queued") is not None
                else (f"workers {r['workers']}" if r.get("workers") else "-"))
        drift = r.get("drift")
        table.append([
            r["host"], r.get("role", "-") + (" UNAUTHENTICATED" if r.get("unauthenticated") else ""),
            r.get("version") or "-", r.get("model") or "-", r.get("layout") or "-",
            r.get("health", "-") + (f" ({r['error']})" if r.get("error") else ""),
            fmt_age(r.get("uptime_s")), runq, f"{usage:.1%}" if usage is not None else "-",
            f"{probe['result']} {fmt_age(probe['age_s'])} ago" if probe else "-",
            "unknown" if drift is None else ("no" if not drift else "YES: " + "; ".join(drift)),
        ])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + str(row[-1]) for row in table]
    ok = sum(1 for r in rows if row_ok(r))
    lines.append(f"{ok}/{len(rows)} healthy without drift")
    open_rows = [r["host"] for r in rows if r.get("unauthenticated")]
    if open_rows:
        lines.append(f"UNAUTHENTICATED: {', '.join(open_rows)} serve(s) without an API key, to anyone who reaches the port "
                     "(sglang_service_allow_unauthenticated / sglang_router_allow_unauthenticated)")
    for url in prometheus or []:
        lines.append(f"Prometheus: {url} (alerts: {url}/alerts)")
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        inv = load_inventory(args.inventory)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"sgl-deploy status: {exc}", file=sys.stderr)
        return 2
    if not inv["groups"].get(args.engine_group) and not inv["groups"].get(args.router_group):
        print(f"sgl-deploy status: {args.inventory} has no host in {args.engine_group} or {args.router_group}",
              file=sys.stderr)
        return 2
    tty = sys.stderr.isatty()

    def progress(done: int, total: int, host: str) -> None:
        line = f"status: {done}/{total} hosts answered (last: {host})"
        if tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if done == total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    sys.stderr.write(f"status: contacting the hosts of {args.inventory}\n")
    rows = collect(inv, args, progress)
    if args.json:
        print(json.dumps({"inventory": args.inventory, "rows": rows, "prometheus": prometheus_urls(inv),
                          "ok": all(row_ok(r) for r in rows)}, indent=2, default=str))
    else:
        print(format_table(rows, prometheus_urls(inv)))
    return 0 if rows and all(row_ok(r) for r in rows) else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status", help="one row per engine and gateway: version, model, layout, health, load, probe, drift",
        description="Contact every engine and gateway of an inventory in parallel and show what runs, whether "
                    "it is healthy, and whether it drifted from what the inventory plans (exit 0: all healthy, "
                    "no drift).",
    )
    p.add_argument("-i", "--inventory", required=True, help="Ansible inventory (file or folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--reports", default="reports", help="root of the probe reports (default: reports)")
    p.add_argument("--timeout", type=int, default=10, help="seconds per SSH connect / HTTP request (default 10)")
    p.add_argument("--parallel", type=int, default=16, help="hosts contacted at once (default 16)")
    p.add_argument("--engine-group", default="sglang_servers", help="inventory group of the engines")
    p.add_argument("--router-group", default="sglang_routers", help="inventory group of the gateways")
    p.set_defaults(func=_cmd_status)
