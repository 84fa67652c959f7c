"""Look-ups of the fleet validation that need the network, made from the controller before any host
changes: the SGLang pin and the gateway (smg) pin in the package index the roles install from, and the
model id and revision on the hub the weights come from.

Each distinct question (package on one index, or model@revision on one hub) is asked once per run, all
of them in parallel, with a short timeout (:data:`TIMEOUT_S`). The answers become problems in the
format of :mod:`sgl_deploy.validate`:

* the index answers and lacks the pin, or the hub answers that it does not know the model or the
  revision: an error (nothing changes on any host);
* the index or hub does not answer from the controller (firewalled, air-gapped controller): a
  warning (the install and plan phases check on the host), or an error with
  ``sgl_validate_unreachable: fail``;
* ``sgl_validate_remote_checks: false`` skips the look-ups of that host.

A positive answer (the index has the pin; the hub lists model@revision) is remembered on the controller for
:data:`CACHE_TTL_S` (``$SGL_DEPLOY_CACHE_DIR/remote-checks.json``, default ``~/.cache/sgl-deploy``), so the
re-run after an inventory edit and the nightly run do not ask again; a negative or missing answer is never
remembered, and a changed pin, model, revision or endpoint is a new question.

The hub request is the plan role's listing (:func:`sgl_deploy.weights.listing_url`, parsed with
:func:`sgl_deploy.weights.listing_entries`); the index request is the simple repository API (PEP 691
JSON, PEP 503 HTML), as uv and pip read it; a wheelhouse (``*_find_links``) is read when it is a URL or a
directory the controller has too. ``docs/validation.md`` lists the messages.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping

from sgl_deploy import validate as _validate
from sgl_deploy.errors import SglDeployError

PYPI_SIMPLE = "https://pypi.org/simple"
MODELSCOPE = "https://modelscope.cn"
HUGGINGFACE = "https://huggingface.co"
TIMEOUT_S = 5.0
MAX_PARALLEL = 8
CACHE_TTL_S = 24 * 3600

Problem = dict[str, str]


class Unreachable(SglDeployError):
    """The index or hub gave no usable answer (network, DNS, timeout, 5xx)."""


# --------------------------------------------------------------------------- package index

_FILE_RE = re.compile(r"""href=["']?([^"' >]+)""", re.I)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def version_of_file(filename: str, package: str) -> str | None:
    """The version in a wheel or sdist file name of ``package`` (``smg-1.13.0-cp38-abi3-....whl``,
    ``sglang-0.5.23.tar.gz``), else None."""
    name = urllib.parse.unquote(filename.rsplit("/", 1)[-1].split("#", 1)[0].split("?", 1)[0])
    if name.endswith(".whl"):
        parts = name[:-4].split("-")
        return parts[1] if len(parts) >= 5 and _norm(parts[0]) == _norm(package) else None
    for ext in (".tar.gz", ".zip", ".tar.bz2"):
        if name.endswith(ext):
            stem = name[: -len(ext)]
            if "-" in stem and _norm(stem.rsplit("-", 1)[0]) == _norm(package):
                return stem.rsplit("-", 1)[1]
    return None


def _get(url: str, timeout: float, headers: Mapping[str, str] | None = None) -> tuple[int, bytes, str]:
    """(status, body, content type); 4xx come back as a status, no answer raises Unreachable."""
    req = urllib.request.Request(url, headers={"User-Agent": "sgl-deploy-validate", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise Unreachable(f"HTTP {exc.code}") from None
        try:
            body = exc.read()
        except OSError:
            body = b""
        return exc.code, body, exc.headers.get("Content-Type", "") if exc.headers else ""
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused, DNS
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{type(reason).__name__}: {reason}") from None


def index_versions(index_url: str, package: str, timeout: float = TIMEOUT_S) -> set[str]:
    """Versions of ``package`` on a simple index (``https://pypi.org/simple``) or a find-links page, or
    (a local directory) in a wheelhouse on the controller. An index without the package: an empty set."""
    if index_url.startswith("/") or index_url.startswith("file:"):
        path = urllib.parse.urlparse(index_url).path if index_url.startswith("file:") else index_url
        if not os.path.isdir(path):
            raise Unreachable(f"{path} is not a directory on the controller")
        return {v for f in os.listdir(path) if (v := version_of_file(f, package))}
    base = index_url.rstrip("/")
    find_links_page = not base.endswith("/simple") and "/simple/" not in base + "/"
    url = index_url if find_links_page else f"{base}/{_norm(package)}/"
    status, body, ctype = _get(url, timeout, {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    if status == 404:
        return set()
    if status >= 400:
        raise Unreachable(f"HTTP {status}")
    if "json" in ctype:
        data = json.loads(body or b"{}")
        found = {str(v) for v in data.get("versions") or []}
        return found | {v for f in data.get("files") or [] if (v := version_of_file(str(f.get("filename", "")), package))}
    text = body.decode("utf-8", "replace")
    return {v for href in _FILE_RE.findall(text) if (v := version_of_file(href, package))}


def _vkey(version: str):
    try:
        from packaging.version import Version

        return (0, Version(version))
    except Exception:  # noqa: BLE001 - not PEP 440, or no packaging: compare the digits
        return (1, tuple(int(x) for x in re.findall(r"\d+", version)))


def has_version(available: Iterable[str], pin: str) -> bool:
    key = _vkey(pin)
    return any(_vkey(v) == key for v in available)


def newest(available: Iterable[str], count: int = 3) -> list[str]:
    ordered = sorted(set(available), key=_vkey)
    final = [v for v in ordered if re.fullmatch(r"[\d.]+(\.post\d+)?", v)] or ordered
    return final[-count:]


# --------------------------------------------------------------------------- hub

def hub_answer(hub: str, endpoint: str, model_id: str, revision: str, token: str | None = None,
               timeout: float = TIMEOUT_S) -> tuple[str, str]:
    """What the hub says about ``model_id@revision``: ``(ok|missing|denied, detail)``; raises
    Unreachable when it does not answer. ModelScope: the plan role's listing request; Hugging Face:
    the model-info API of that revision."""
    from sgl_deploy import weights as _weights  # the hub request and its parser (imported when a hub is asked)

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if hub == "huggingface":
        url = f"{endpoint.rstrip('/')}/api/models/{model_id}/revision/{urllib.parse.quote(revision, safe='')}"
    else:
        url = _weights.listing_url(endpoint, model_id, revision)
    status, body, _ctype = _get(url, timeout, headers)
    if status in (401, 403):
        return "denied", f"HTTP {status}: private or gated (or unknown; the hub does not say which)"
    if status == 404 or status >= 400:
        message = ""
        try:
            message = str(json.loads(body or b"{}").get("Message") or "")
        except ValueError:
            pass
        return "missing", f"HTTP {status}{': ' + message if message else ''}"
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        raise Unreachable("the answer is not JSON") from None
    if hub != "huggingface":
        if isinstance(answer, dict) and answer.get("Success") is False:
            return "missing", str(answer.get("Message") or "Success: false")
        if not _weights.listing_entries(answer):
            return "missing", "the listing has no files"
    return "ok", ""


# --------------------------------------------------------------------------- the fleet

def _on(vars_: Mapping[str, Any], name: str, default: bool = True) -> bool:
    value = vars_.get(name, default)
    return str(value).strip().lower() in ("true", "yes", "1", "on")


def _set(value: Any) -> bool:
    return value is not None and value != ""


def _pin_questions(host: str, vars_: Mapping[str, Any], groups: set[str]) -> list[dict]:
    """The pins this host installs, each with the sources the role would install it from."""
    out = []
    if "sglang_servers" in groups:
        var = "sglang_install_version" if _set(vars_.get("sglang_install_version")) else "sglang_plan_sglang_version"
        out.append({"var": var, "package": "sglang", "pin": vars_.get(var), "index_var": "sglang_install_index_url",
                    "index": vars_.get("sglang_install_index_url"), "extra": vars_.get("sglang_install_extra_index_urls"),
                    "links": vars_.get("sglang_install_find_links"), "offline": vars_.get("sglang_install_offline")})
    if "sglang_routers" in groups:
        out.append({"var": "sglang_router_version", "package": "smg", "pin": vars_.get("sglang_router_version"),
                    "index_var": "sglang_router_index_url", "index": vars_.get("sglang_router_index_url"), "extra": [],
                    "links": vars_.get("sglang_router_find_links"), "offline": vars_.get("sglang_router_offline")})
    for q in out:
        offline = str(q["offline"]).strip().lower() in ("true", "yes", "1", "on")
        sources = [] if offline else [str(q["index"]) if _set(q["index"]) else PYPI_SIMPLE]
        if not offline and isinstance(q["extra"], (list, tuple)):
            sources += [str(u) for u in q["extra"] if _set(u)]
        if _set(q["links"]):
            sources.append(str(q["links"]))
        q["sources"] = sources
    return [q for q in out if _set(q["pin"]) and _validate._VERSION_RE.fullmatch(str(q["pin"]).strip()) and q["sources"]]


def _hub_question(host: str, vars_: Mapping[str, Any], groups: set[str]) -> dict | None:
    """The model@revision this host downloads, from which hub (None: shared storage, or nothing to ask)."""
    if "sglang_servers" not in groups or str(vars_.get("model_weights_source", "hub")) not in ("hub", "fanout"):
        return None
    if _set(vars_.get("model_weights_model_id")):
        id_var, model_id = "model_weights_model_id", str(vars_["model_weights_model_id"])
    elif _set(vars_.get("sglang_plan_model_id")):
        id_var, model_id = "sglang_plan_model_id", str(vars_["sglang_plan_model_id"])
    else:
        try:
            from sgl_deploy import planner

            model_id = planner.profile_model_id(vars_.get("sglang_plan_model_profile") or None,
                                                vars_.get("sglang_plan_variant") or None)
        except (ValueError, OSError):
            return None  # the profile rule reports it
        id_var = "sglang_plan_model_profile"
    if _set(vars_.get("model_weights_revision")):
        rev_var, revision = "model_weights_revision", str(vars_["model_weights_revision"])
    else:
        rev_var, revision = "sglang_plan_model_revision", str(vars_.get("sglang_plan_model_revision") or "master")
    if _validate.model_id_problem(host, id_var, model_id) or _validate.revision_problem(host, rev_var, revision):
        return None  # malformed: the offline rule says so
    hub = str(vars_.get("model_weights_hub") or "modelscope")
    if hub == "huggingface":
        endpoint = str(vars_.get("model_weights_hf_endpoint") or HUGGINGFACE)
    else:
        endpoint = str(vars_.get("model_weights_endpoint") or vars_.get("sglang_plan_hub_endpoint") or MODELSCOPE)
    token = vars_.get("model_weights_token")
    shown = model_id if id_var != "sglang_plan_model_profile" else vars_.get("sglang_plan_model_profile") or "minimax-m3"
    return {"hub": hub, "endpoint": endpoint.rstrip("/"), "model_id": model_id, "revision": revision,
            "token": str(token) if _set(token) else None, "id_var": id_var, "id_value": shown, "rev_var": rev_var}


def _unreachable(host: str, var: str, value: Any, what: str, reason: str, strict: bool, later: str) -> Problem:
    p = _validate.problem(
        host, var, value, f"could not be checked: {what} does not answer the controller ({reason}); {later}",
        "make it reachable from the controller, or set sgl_validate_remote_checks: false for this host to skip the "
        "look-up" + ("" if strict else " (sgl_validate_unreachable: fail makes this an error)"))
    if not strict:
        p["level"] = "warning"
    return p


def _cache_file() -> str:
    base = os.environ.get("SGL_DEPLOY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sgl-deploy")
    return os.path.join(base, "remote-checks.json")


def cache_load(now: float | None = None) -> dict[str, float]:
    """Remembered positive answers (key -> time of the answer), expired ones dropped."""
    now = time.time() if now is None else now
    try:
        with open(_cache_file(), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {k: t for k, t in data.items() if isinstance(t, (int, float)) and now - t < CACHE_TTL_S} \
        if isinstance(data, dict) else {}


def cache_save(entries: Mapping[str, float]) -> None:
    path = _cache_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(dict(entries), fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next run a look-up


def _index_key(source: str, package: str, pin: str) -> str:
    return f"index|{source}|{_norm(package)}|{pin}"


def _hub_key(key: tuple) -> str:
    hub, endpoint, model_id, revision, _token = key
    return f"hub|{hub}|{endpoint}|{model_id}|{revision}"


def fleet_remote_problems(hostvars: Mapping[str, Mapping[str, Any]], groups: Mapping[str, Iterable[str]],
                          in_run: Iterable[str], timeout: float = TIMEOUT_S,
                          index_lookup: Callable[[str, str, float], set[str]] = index_versions,
                          hub_lookup: Callable[..., tuple[str, str]] = hub_answer) -> list[Problem]:
    """The pins and the model of every host of the run, asked once per distinct question, in parallel."""
    member_of: dict[str, set[str]] = {}
    for group, members in groups.items():
        for h in members:
            member_of.setdefault(str(h), set()).add(str(group))
    plans = []
    index_keys: set[tuple[str, str]] = set()
    hub_keys: set[tuple] = set()
    for host in in_run:
        vars_ = hostvars.get(host, {})
        if not _on(vars_, "sgl_validate_remote_checks"):
            continue
        pins = _pin_questions(host, vars_, member_of.get(host, set()))
        model = _hub_question(host, vars_, member_of.get(host, set()))
        for q in pins:
            index_keys.update((q["package"], s) for s in q["sources"])
        if model:
            hub_keys.add((model["hub"], model["endpoint"], model["model_id"], model["revision"], model["token"]))
        strict = str(vars_.get("sgl_validate_unreachable", "warn")).strip().lower() == "fail"
        plans.append((host, pins, model, strict))
    if not plans:
        return []

    def ask(fn, *args):
        try:
            return ("answer", fn(*args))
        except Unreachable as exc:
            return ("unreachable", str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken answer is no answer
            return ("unreachable", f"{type(exc).__name__}: {exc}")

    # answers remembered from an earlier run (positive only): no look-up for those
    cache = cache_load()
    pins_of: dict[tuple[str, str], set[str]] = {}
    for _host, pins, _model, _strict in plans:
        for q in pins:
            for src in q["sources"]:
                pins_of.setdefault((q["package"], src), set()).add(str(q["pin"]).strip())
    index: dict[tuple[str, str], tuple[str, Any]] = {
        k: ("answer", set(pins_of[k])) for k in index_keys
        if pins_of.get(k) and all(_index_key(k[1], k[0], pin) in cache for pin in pins_of[k])}
    hubs: dict[tuple, tuple[str, Any]] = {k: ("answer", ("ok", "")) for k in hub_keys if _hub_key(k) in cache}
    ask_index = index_keys - set(index)
    ask_hub = hub_keys - set(hubs)
    if ask_index or ask_hub:
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(ask_index) + len(ask_hub)))) as pool:
            index_futures = {k: pool.submit(ask, index_lookup, k[1], k[0], timeout) for k in ask_index}
            hub_futures = {k: pool.submit(ask, hub_lookup, k[0], k[1], k[2], k[3], k[4], timeout) for k in ask_hub}
            index.update({k: f.result() for k, f in index_futures.items()})
            hubs.update({k: f.result() for k, f in hub_futures.items()})
        now = time.time()
        learned = {_index_key(k[1], k[0], pin): now for k in ask_index if index[k][0] == "answer"
                   for pin in pins_of.get(k, ()) if has_version(index[k][1], pin)}
        learned.update({_hub_key(k): now for k in ask_hub if hubs[k][0] == "answer" and hubs[k][1][0] == "ok"})
        if learned:
            cache_save({**cache, **learned})

    out: list[Problem] = []
    for host, pins, model, strict in plans:
        for q in pins:
            pin = str(q["pin"]).strip()
            answers = [(s, index[(q["package"], s)]) for s in q["sources"]]
            if any(kind == "answer" and has_version(found, pin) for _s, (kind, found) in answers):
                continue
            down = [(s, why) for s, (kind, why) in answers if kind == "unreachable"]
            seen = set().union(*[found for _s, (kind, found) in answers if kind == "answer"]) if any(
                kind == "answer" for _s, (kind, _f) in answers) else set()
            where = ", ".join(s for s, _a in answers)
            if down and len(down) == len(answers):
                out.append(_unreachable(host, q["var"], pin, f"the package index {where}", "; ".join(w for _s, w in down),
                                        strict, f"{q['package']}=={pin} is checked when the host installs it"))
                continue
            have = (f"{q['package']} there has {', '.join(newest(seen, 5))} (newest last)" if seen
                    else f"it has no {q['package']} at all")
            also = f"; {', '.join(s for s, _w in down)} did not answer" if down else ""
            fix = (f"set {q['var']} to a version the index has (newest: {newest(seen, 1)[0]})" if seen
                   else f"point {q['index_var']} (or the find-links wheelhouse) at an index that has {q['package']}")
            if q["package"] == "smg" and _vkey(pin) < _vkey("1.0"):
                fix += "; a fleet still on sglang-router 0.3.x moves to smg with playbooks/migrate-gateway.yml"
            out.append(_validate.problem(host, q["var"], pin,
                                         f"is not on the package index {where} ({have}{also}): installing "
                                         f"{q['package']}=={pin} would fail on the host", fix))
        if model:
            key = (model["hub"], model["endpoint"], model["model_id"], model["revision"], model["token"])
            kind, answer = hubs[key]
            what = f"{model['model_id']}@{model['revision']}"
            if kind == "unreachable":
                out.append(_unreachable(host, model["id_var"], model["id_value"], f"the hub {model['endpoint']}", answer,
                                        strict, f"{what} is checked by the plan phase on the host"))
                continue
            status, detail = answer
            if status == "missing":
                var, value = model["id_var"], model["id_value"]
                if model["revision"] not in ("master", "main") and _model_exists(model, hub_lookup, timeout):
                    var, value = model["rev_var"], model["revision"]
                    what_bad = f"is not a revision of {model['model_id']} on the hub {model['endpoint']} ({detail})"
                    fix = f"set {var} to a branch, tag or commit the hub lists for {model['model_id']} (e.g. master)"
                else:
                    what_bad = f"names {what}, which the hub {model['endpoint']} does not know ({detail})"
                    fix = (f"set {var if var != 'sglang_plan_model_profile' else 'sglang_plan_model_id'} to the repo id as the "
                           "hub shows it (e.g. MiniMax/MiniMax-M3), or point model_weights_endpoint at the hub that has it")
                out.append(_validate.problem(host, var, value, what_bad, fix))
            elif status == "denied":
                p = _validate.problem(host, model["id_var"], model["id_value"],
                                      f"could not be checked: the hub {model['endpoint']} refuses to list {what} ({detail})",
                                      "set model_weights_token if the model is private or gated; the plan phase checks again")
                p["level"] = "warning"
                out.append(p)
    return out


def _model_exists(model: Mapping[str, Any], hub_lookup: Callable[..., tuple[str, str]], timeout: float) -> bool:
    """Whether the model is on the hub at its default branch (tells a bad revision from a bad id)."""
    default = "main" if model["hub"] == "huggingface" else "master"
    try:
        return hub_lookup(model["hub"], model["endpoint"], model["model_id"], default, model["token"], timeout)[0] != "missing"
    except Exception:  # noqa: BLE001
        return False
