"""Fleet validation: the semantic rules every inventory value must pass before any host changes.

Pure functions over one host's variables (role defaults merged under the inventory, templated
where they can be) and the fleet (inventory groups, hosts in the run). Each problem is a dict
``{host, variable, value, problem, fix}``; ``value`` is already display text, with secrets
masked. The action plugin ``plugins/action/sgl_validate_fleet.py`` runs the roles' argument
specs and then :func:`fleet_problems` on the controller, and fails with :func:`format_problems`
(all problems of all hosts at once). ``docs/validation.md`` lists every rule and its message.

Knowledge that lives elsewhere is imported, never copied: the planned flags
(:data:`sgl_deploy.argv.MANAGED_FLAGS` via :func:`sgl_deploy.argv.extra_arg_problems`), the
probe names (:data:`sgl_deploy.probe.PROBES`), the profiles (:mod:`sgl_deploy.profiles`) and the
replica-group membership rule (:func:`sgl_deploy.preflight.group_membership_problems`).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import posixpath
import re
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

from sgl_deploy import argv as _argv
from sgl_deploy import firewall as _firewall
from sgl_deploy import plan_rules as _plan_rules
from sgl_deploy import preflight as _preflight
from sgl_deploy import probe as _probe
from sgl_deploy import profiles as _profiles
from sgl_deploy import tls as _tls

Problem = dict[str, str]

# Which roles run on which inventory group (site.yml and the phase playbooks).
ROLE_GROUPS: dict[str, str] = {
    "gpu_preflight": "sglang_servers",
    "sglang_plan": "sglang_servers",
    "sglang_install": "sglang_servers",
    "model_weights": "sglang_servers",
    "sglang_service": "sglang_servers",
    "probes": "sglang_servers",
    "sglang_watchdog": "sglang_servers",
    "sglang_firewall": "sglang_servers",
    "sglang_router": "sglang_routers",
    "monitoring": "monitoring",
}

# Variable prefix of each role (role-prefixed variables, docs/architecture.md).
ROLE_PREFIXES: dict[str, str] = {
    "gpu_preflight": "gpu_preflight",
    "sglang_plan": "sglang_plan",
    "sglang_install": "sglang_install",
    "model_weights": "model_weights",
    "sglang_service": "sglang_service",
    "probes": "probes",
    "sglang_router": "sglang_router",
    "sglang_watchdog": "sglang_watchdog",
    "sglang_firewall": "sglang_firewall",
    "monitoring": "monitoring",
}

# Every name the toolkit reads from the inventory carries one of these prefixes: the roles' (above),
# the playbooks' (sglang_replicas, redeploy_*) and the validation's own settings (sgl_validate_*). A
# variable with one of them that no role and no playbook knows is refused (a misspelt name would be
# ignored: the role would use its default). Other names (vault_*, your own helpers) are not looked at.
TOOLKIT_PREFIXES: tuple[str, ...] = tuple(sorted(
    {f"{p}_" for p in ROLE_PREFIXES.values()} | {"sglang_", "redeploy_", "sgl_validate_"}))
# The variables that playbooks (not roles) read: the one list beside the roles' argument specs.
PLAYBOOK_VARIABLES_FILE = Path(__file__).resolve().parent / "playbook_variables.yml"
ALLOW_UNKNOWN_VARIABLE = "sgl_validate_allow_unknown"
_SECRETISH = re.compile(r"(api_?key|token|passw|secret|(^|_)key$|tls_key)", re.I)

SECRET_VARIABLES = frozenset({
    "sglang_service_api_key", "probes_api_key", "sglang_router_api_key", "model_weights_token",
})
API_KEY_VARIABLES = ("sglang_service_api_key", "probes_api_key", "sglang_router_api_key", "model_weights_token")

# Host paths the toolkit creates, owns (chown/chmod) or removes.
PATH_VARIABLES = (
    "sglang_plan_weights_root", "model_weights_dir", "model_weights_tool_path",
    "sglang_install_root", "sglang_install_venv_path", "sglang_install_uv_cache_dir",
    "sglang_service_root", "sglang_service_venv_path", "sglang_service_backup_dir",
    "sglang_router_root", "sglang_router_venv_path", "sglang_router_uv_cache_dir",
)
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev", "/etc", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib64")

MODEL_ID_VARIABLES = ("sglang_plan_model_id", "model_weights_model_id")
REVISION_VARIABLES = ("sglang_plan_model_revision", "model_weights_revision")
_HUB_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_MODEL_ID_RE = re.compile(rf"^{_HUB_NAME}/{_HUB_NAME}$")
_REVISION_RE = re.compile(rf"^{_HUB_NAME}$")

ENVIRONMENT_VARIABLES = (
    "sglang_service_environment", "sglang_service_nccl_environment",
    "sglang_install_environment", "sglang_router_environment",
)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PORT_VARIABLES = (
    "sglang_plan_port", "sglang_plan_dist_init_port", "sglang_router_port",
    "sglang_router_prometheus_port", "model_weights_fanout_port", "probes_port",
    "sglang_firewall_metrics_port",
)

# Lists of IP addresses or CIDRs (nftables set elements of the gateway-only firewall).
CIDR_LIST_VARIABLES = ("sglang_firewall_controller_addresses", "sglang_firewall_allowed_cidrs")

URL_VARIABLES = (
    "model_weights_endpoint", "model_weights_hf_endpoint", "sglang_plan_hub_endpoint",
    "sglang_install_index_url", "sglang_router_index_url", "probes_image_url", "probes_base_url",
    "probes_router_url",
)
URL_LIST_VARIABLES = ("sglang_install_extra_index_urls", "sglang_router_worker_urls")
FIND_LINKS_VARIABLES = (("sglang_install_offline", "sglang_install_find_links"),
                        ("sglang_router_offline", "sglang_router_find_links"))

VERSION_VARIABLES = (
    "sglang_plan_sglang_version", "sglang_install_version", "sglang_router_version",
    "sglang_install_uv_version", "sglang_router_uv_version",
)
_VERSION_RE = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
_VERSION_EXAMPLES = {"sglang_router_version": "1.13.0", "sglang_install_uv_version": "0.13.9",
                     "sglang_router_uv_version": "0.13.9", "gpu_preflight_min_cuda": "13.0",
                     "gpu_preflight_min_python": "3.10"}
MIN_VERSION_VARIABLES = ("gpu_preflight_min_driver", "gpu_preflight_min_cuda", "gpu_preflight_min_python")
_NUMERIC_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")

FRACTION_VARIABLES = ("sglang_plan_mem_fraction_static",)
# (variable, smallest accepted value); None values mean "not set" and pass.
NUMBER_FLOORS: tuple[tuple[str, float, bool], ...] = (
    # variable, bound, strict (value must be > bound) or not (>= bound)
    ("sglang_plan_weights_gb", 0, True),
    ("sglang_plan_kv_gb_per_mtok", 0, True),
    ("sglang_plan_disk_margin_gb", 0, False),
    ("model_weights_disk_margin_gb", 0, False),
    ("sglang_plan_tp_size", 1, False),
    ("sglang_plan_ep_size", 1, False),
    ("sglang_plan_dp_size", 1, False),
    ("sglang_plan_pp_size", 1, False),
    ("sglang_plan_context_length", 1, False),
    ("sglang_plan_max_clock_skew_s", 0, True),
    ("sglang_plan_rendezvous_timeout_s", 1, False),
    ("model_weights_max_workers", 1, False),
    ("model_weights_parallel_workers", 1, False),
    ("model_weights_file_timeout_s", 1, False),
    ("model_weights_download_timeout_s", 1, False),
    ("model_weights_poll_interval_s", 1, False),
    ("model_weights_fanout_limit", 1, False),
    ("model_weights_fanout_seed_workers", 1, False),
    ("model_weights_fanout_max_upload_mb_s", 0, False),  # 0: no cap
    ("model_weights_fanout_max_download_mb_s", 0, False),
    ("probes_timeout_s", 1, False),
    ("probes_concurrency", 1, False),
    ("probes_max_tokens", 1, False),
    ("sglang_service_readiness_interval_s", 1, False),
    ("sglang_install_keep_venvs", 1, False),
    ("sglang_router_keep_venvs", 1, False),
)

UNIT_NAME_VARIABLES = ("sglang_service_name", "sglang_router_service_name")
USER_VARIABLES = ("sglang_service_user", "sglang_service_group", "sglang_router_user", "sglang_router_group",
                  "model_weights_owner", "model_weights_group")
_UNIT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")

PROBE_NAME_VARIABLES = ("probes_only", "probes_skip")
# Flags the router role sets itself (sgl_router_launch.py and the unit); never in sglang_router_extra_args.
ROUTER_MANAGED_FLAGS = ("--api-key", "--worker-urls", "--host", "--port", "--policy",
                        "--tls-cert-path", "--tls-key-path", "--control-plane-api-keys", "--tenant-api-key")
# TLS of the gateway: (PEM text, host path) of the certificate, then of its key.
ROUTER_TLS_PAIRS = (("sglang_router_tls_cert", "sglang_router_tls_cert_path"),
                    ("sglang_router_tls_key", "sglang_router_tls_key_path"))


def _shown(variable: str, value: Any) -> str:
    """Display text of a value; secrets masked (their length and what is wrong stays visible)."""
    if isinstance(value, str) and value.startswith("<") and value.endswith(">") and " " in value:
        return value  # already display text (<vaulted value>, <PEM certificate>, ...)
    if variable in SECRET_VARIABLES or _SECRETISH.search(variable.rsplit(".", 1)[-1]):
        text = str(value)
        return "<empty>" if text == "" else f"<secret, {len(text)} chars>"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def problem(host: str, variable: str, value: Any, what: str, fix: str) -> Problem:
    """One refusal: host, variable, the value found (masked for secrets), what is wrong, the fix."""
    return {"host": str(host), "variable": variable, "value": _shown(variable, value), "problem": what, "fix": fix}


def _is_set(value: Any) -> bool:
    return value is not None and value != ""


# --------------------------------------------------------------------------- single values

def path_problem(host: str, variable: str, value: Any) -> Problem | None:
    """An absolute path, not ``/`` and not under a system tree."""
    if not _is_set(value):
        return None
    text = str(value)
    fix = f"set {variable} to an absolute path of its own, e.g. under /opt, /srv or /var"
    if not text.startswith("/"):
        return problem(host, variable, value, "is not an absolute path", fix)
    norm = posixpath.normpath(text)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        return problem(host, variable, value, "is the root directory /", fix)
    for root in FORBIDDEN_ROOTS:
        if norm == root or norm.startswith(root + "/"):
            return problem(host, variable, value, f"is under the system directory {root}", fix)
    return None


def model_id_problem(host: str, variable: str, value: Any) -> Problem | None:
    """``owner/name`` with the hub's characters (letters, digits, ``_ . -``), no ``..``."""
    if not _is_set(value):
        return None
    text = str(value)
    if ".." in text or not _MODEL_ID_RE.fullmatch(text):
        return problem(
            host, variable, value,
            "is not a hub model id: owner/name with letters, digits, '_', '.', '-' only, one '/', no '..'",
            f"set {variable} to the repo id as the hub shows it, e.g. MiniMax/MiniMax-M3",
        )
    return None


def revision_problem(host: str, variable: str, value: Any) -> Problem | None:
    """A branch, tag or commit with the hub's characters; no ``/`` and no ``..`` (it names a directory)."""
    if not _is_set(value):
        return None
    text = str(value)
    if ".." in text or not _REVISION_RE.fullmatch(text):
        return problem(
            host, variable, value,
            "is not a hub revision: letters, digits, '_', '.', '-' only, no '/' and no '..' (it names the weights directory)",
            f"set {variable} to a branch, tag or commit id, e.g. master",
        )
    return None


def api_key_problem(host: str, variable: str, value: Any) -> Problem | None:
    """Printable ASCII without whitespace: a client must be able to send it in an HTTP header."""
    if not _is_set(value):
        return None
    text = str(value)
    bad = [c for c in text if not ("\x21" <= c <= "\x7e")]
    if bad:
        kinds = sorted({"whitespace" if c.isspace() else "non-printable or non-ASCII" for c in bad})
        return problem(
            host, variable, value,
            f"contains {' and '.join(kinds)} characters (a newline or a space cannot be sent in the Authorization header)",
            f"set {variable} to printable ASCII without spaces or newlines (check how the vault value was pasted)",
        )
    return None


def environment_problems(host: str, variable: str, value: Any) -> list[Problem]:
    """A mapping of environment names to scalar values (no lists, mappings or newlines)."""
    if value is None:
        return []
    fix = f"set {variable} to a mapping NAME: value, each value a string or number"
    if not isinstance(value, Mapping):
        return [problem(host, variable, value, "is not a mapping", fix)]
    out = []
    for key, item in value.items():
        if not _ENV_NAME_RE.fullmatch(str(key)):
            out.append(problem(host, f"{variable}.{key}", item, "is not an environment variable name", fix))
        elif isinstance(item, (Mapping, list, tuple, set)) or item is None:
            out.append(problem(host, f"{variable}.{key}", item,
                               "is not a scalar (a mapping or list would reach the unit as Python text)", fix))
        elif "\n" in str(item) or "\r" in str(item):
            out.append(problem(host, f"{variable}.{key}", item, "contains a newline", fix))
    return out


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def port_problem(host: str, variable: str, value: Any) -> Problem | None:
    """A TCP port, 1..65535."""
    if not _is_set(value):
        return None
    port = _as_int(value)
    if port is None or not 1 <= port <= 65535:
        return problem(host, variable, value, "is not a TCP port (1..65535)", f"set {variable} to a free port between 1024 and 65535")
    return None


def url_problem(host: str, variable: str, value: Any, schemes: tuple[str, ...] = ("http", "https")) -> Problem | None:
    """A URL with a scheme and a host."""
    if not _is_set(value):
        return None
    text = str(value)
    parsed = urlparse(text)
    if parsed.scheme not in schemes or not parsed.netloc or any(c.isspace() for c in text):
        return problem(
            host, variable, value, f"is not a URL with a scheme ({'/'.join(schemes)}) and a host",
            f"set {variable} to a full URL such as https://mirror.example.com/simple, or empty for the default",
        )
    return None


def find_links_problem(host: str, variable: str, value: Any) -> Problem | None:
    """A wheelhouse: an absolute directory or an http(s) URL."""
    if not _is_set(value):
        return None
    text = str(value)
    if text.startswith("/"):
        return None
    if urlparse(text).scheme in ("http", "https", "file") and (urlparse(text).netloc or text.startswith("file:")):
        return None
    return problem(host, variable, value, "is neither an absolute directory nor a URL",
                   f"set {variable} to the wheelhouse directory on the host (absolute) or its http(s) URL")


def version_problem(host: str, variable: str, value: Any, pattern: re.Pattern[str] = _VERSION_RE) -> Problem | None:
    """A release version (``0.5.23``, ``0.5.4.post1``, ``0.5.16rc1``), not a range or a name."""
    if not _is_set(value):
        return None
    if not pattern.fullmatch(str(value).strip()):
        example = _VERSION_EXAMPLES.get(variable, "0.5.23" if pattern is _VERSION_RE else "580")
        return problem(host, variable, value, "is not a version number",
                       f"set {variable} to an exact version such as {example} (no ranges, names or 'v' prefix)")
    return None


def fraction_problem(host: str, variable: str, value: Any) -> Problem | None:
    """A fraction strictly between 0 and 1."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not 0 < number < 1:
        return problem(host, variable, value, "is not a fraction between 0 and 1 (exclusive)",
                       f"set {variable} to a value such as 0.85, or remove it to use the profile's")
    return None


def number_problem(host: str, variable: str, value: Any, floor: float, strict: bool) -> Problem | None:
    """A number above (``strict``) or at least ``floor``."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # the argument spec reports the type
    if isinstance(value, bool) or (number <= floor if strict else number < floor):
        need = f"greater than {floor:g}" if strict else f"at least {floor:g}"
        return problem(host, variable, value, f"must be {need}",
                       f"set {variable} to a value {need}, or remove it to use the default")
    return None


def name_problem(host: str, variable: str, value: Any, pattern: re.Pattern[str], what: str) -> Problem | None:
    if not _is_set(value) or pattern.fullmatch(str(value)):
        return None
    return problem(host, variable, value, f"is not a valid {what}", f"set {variable} to a plain {what} ({pattern.pattern})")


def extra_args_problems(host: str, variable: str, value: Any) -> list[Problem]:
    """SGLang extra args: a list of strings, none of them a planned flag, a secret or an abbreviation."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [problem(host, variable, value, "is not a list (a string would be split into characters or at commas)",
                        f"set {variable} to a YAML list, one argument per item, e.g. ['--chunked-prefill-size', '8192']")]
    out = []
    if any(isinstance(a, (Mapping, list, tuple)) or a is None for a in value):
        out.append(problem(host, variable, value, "has an item that is not a string",
                           f"quote every item of {variable} (JSON values as one string: '{{\"key\": 1}}')"))
    for why in _argv.extra_arg_problems([str(a) for a in value]):
        out.append(problem(host, variable, value, why,
                           f"remove that flag from {variable}: the plan sets it (sglang_plan_*), "
                           "the API key goes in sglang_service_api_key"))
    return out


def router_extra_args_problems(host: str, variable: str, value: Any) -> list[Problem]:
    """Router extra args: a list, never a flag the router role sets itself."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [problem(host, variable, value, "is not a list",
                        f"set {variable} to a YAML list, one argument per item")]
    out = []
    for arg in value:
        flag = str(arg).split("=", 1)[0]
        if flag in ROUTER_MANAGED_FLAGS:
            out.append(problem(host, variable, value, f"carries {flag}, which the router role sets itself",
                               f"remove {flag} from {variable}; use sglang_router_api_key, sglang_router_worker_urls, "
                               "sglang_router_host, sglang_router_port or sglang_router_policy"))
    return out


def router_tls_problems(host: str, vars_: Mapping[str, Any]) -> list[Problem]:
    """Gateway TLS: a certificate and a key, each as PEM text or a host path (not both), or neither;
    PEM text must look like PEM. Expiry is the role's preflight (sgl_deploy.tls), on the real file."""
    if not any(v in vars_ for pair in ROUTER_TLS_PAIRS for v in pair):
        return []
    out: list[Problem] = []
    given = []
    for text_var, path_var in ROUTER_TLS_PAIRS:
        text, path = vars_.get(text_var), vars_.get(path_var)
        if _is_set(text) and _is_set(path):
            out.append(problem(host, path_var, path, f"is set together with {text_var}",
                               f"give the PEM text ({text_var}) or a path on the host ({path_var}), not both"))
        if _is_set(text) and "-----BEGIN " not in str(text):
            out.append(problem(host, text_var, "<not shown>", "is not PEM text (no -----BEGIN line)",
                               f"set {text_var} to the PEM file's content, e.g. "
                               f"\"{{{{ lookup('ansible.builtin.file', 'gateway.pem') }}}}\" (vault the key)"))
        if _is_set(path) and not str(path).startswith("/"):
            out.append(problem(host, path_var, path, "is not an absolute path", f"give {path_var} as /path/on/the/host"))
        given.append(_is_set(text) or _is_set(path))
    if given[0] != given[1]:
        missing = "key" if given[0] else "certificate"
        var = "sglang_router_tls_key" if given[0] else "sglang_router_tls_cert"
        out.append(problem(host, var, "", f"is missing: the gateway's TLS {missing} is not given while the other half is",
                           f"set {var} (or {var}_path), or neither to serve plain HTTP"))
    return out


def cidr_list_problems(host: str, variable: str, value: Any) -> list[Problem]:
    """A list of IP addresses or CIDRs (the firewall's sources)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [problem(host, variable, value, "is not a list of IP addresses or CIDRs",
                        f"set {variable} to a list, e.g. [10.0.0.5, 10.1.0.0/16]")]
    out = []
    for item in value:
        what = _firewall.cidr_problem(item)
        if what:
            out.append(problem(host, variable, item, what, f"list addresses or CIDRs in {variable}, e.g. 10.1.0.0/16"))
    return out


def firewall_enabled_problem(host: str, variable: str, value: Any) -> Problem | None:
    """``sglang_firewall_enabled``: auto, true or false."""
    what = _firewall.enabled_value_problem(value)
    if what:
        return problem(host, variable, value, what,
                       f"set {variable} to auto (on when the inventory has gateways), true or false")
    return None


def probe_names_problem(host: str, variable: str, value: Any) -> Problem | None:
    """Known probe names only (sgl_deploy.probe.PROBES and the optional ones)."""
    if value is None:
        return None
    known = _probe.PROBES + _probe.OPTIONAL_PROBES
    names = value if isinstance(value, (list, tuple)) else [value]
    unknown = [str(n) for n in names if str(n) not in known]
    if unknown:
        return problem(host, variable, value, f"names unknown probe(s) {', '.join(unknown)}",
                       f"use names from {', '.join(known)} in {variable}")
    return None


@functools.lru_cache(maxsize=32)
def _load_profile(name: str) -> Any:
    """The profile, or the error text (loaded once per name for the whole fleet)."""
    try:
        return _profiles.load_profile(name)
    except (_profiles.ProfileError, OSError, ValueError) as exc:
        return str(exc)


def profile_problems(host: str, vars_: Mapping[str, Any]) -> list[Problem]:
    """The model profile exists (a shipped name or a readable file) and has the variant asked for."""
    name = vars_.get("sglang_plan_model_profile")
    if not _is_set(name):
        return []
    prof = _load_profile(str(name))
    if isinstance(prof, str):
        return [problem(host, "sglang_plan_model_profile", name, f"cannot be loaded ({prof})",
                        f"set sglang_plan_model_profile to one of {', '.join(_profiles.available_profiles())} "
                        "or to the path of a profile YAML file on the controller")]
    variant = vars_.get("sglang_plan_variant")
    if _is_set(variant):
        try:
            prof.variant(str(variant))
        except _profiles.ProfileError:
            variants = ", ".join(sorted(prof.data.get("variants", {})))
            return [problem(host, "sglang_plan_variant", variant, f"is not a variant of profile {prof.name}",
                            f"set sglang_plan_variant to one of {variants}, or empty to pick from the GPUs")]
    return []


def offline_problem(host: str, offline_var: str, links_var: str, vars_: Mapping[str, Any]) -> Problem | None:
    """Offline installs need a wheelhouse."""
    offline = vars_.get(offline_var)
    if str(offline).lower() in ("true", "yes", "1", "on") and not _is_set(vars_.get(links_var)):
        return problem(host, offline_var, offline, f"is on but {links_var} is empty (no wheelhouse to install from)",
                       f"set {links_var} to the wheelhouse directory or URL, or set {offline_var}: false")
    return None


# The oldest gateway the router role drives: smg 1.x (its launcher, worker API and flags; checked against
# 1.13.0). smg has no 0.x gateway of sglang-router's line: sglang-router, its predecessor, stopped at 0.3.2.
ROUTER_MIN_VERSION = "1.0.0"


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(text).split("rc")[0].split("a")[0].split("b")[0])[:4])


def pin_floor_problems(host: str, vars_: Mapping[str, Any], groups_of_host: Iterable[str]) -> list[Problem]:
    """Pins older than what the roles use: the gateway below smg 1.0 (0.3.x is sglang-router's line: the
    migration playbook moves a fleet off it) and SGLang below the model profile's ``min_sglang_version``."""
    groups = set(groups_of_host)
    out = []
    pin = vars_.get("sglang_router_version")
    if "sglang_routers" in groups and _is_set(pin) and _VERSION_RE.fullmatch(str(pin).strip()) \
            and _version_key(pin) < _version_key(ROUTER_MIN_VERSION):
        old = str(pin).startswith("0.3")
        out.append(problem(
            host, "sglang_router_version", pin,
            f"predates the gateway the router role drives (smg >= {ROUTER_MIN_VERSION})"
            + (": 0.3.x is sglang-router's line (it stopped at 0.3.2) and smg never had it" if old else ""),
            "set sglang_router_version to an smg 1.x release such as 1.13.0 (the role default); a fleet that runs "
            "sglang-router 0.3.x moves to smg with playbooks/migrate-gateway.yml (docs/lifecycle.md)"))
    # SGLang below the profile's min_sglang_version: the planner's rule (sgl_deploy.plan_rules), which
    # fleet_problems applies to sglang_plan_sglang_version; here only for an sglang_install_version that
    # the inventory sets on its own (its default follows the plan).
    pin = vars_.get("sglang_install_version")
    name = vars_.get("sglang_plan_model_profile")
    if "sglang_servers" in groups and _is_set(pin) and _is_set(name) and _VERSION_RE.fullmatch(str(pin).strip()):
        prof = _load_profile(str(name))
        refusal = _plan_rules.version_refusal(prof, str(pin).strip()) if prof is not None and not isinstance(prof, str) else None
        if refusal is not None:
            out.append(problem(host, "sglang_install_version", pin, _plan_rules.role_message(refusal.message), refusal.fix))
    return out


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "yes", "1", "on")


# (key variable, opt-out variable, what serves, inventory group)
AUTH_VARIABLES = (
    ("sglang_service_api_key", "sglang_service_allow_unauthenticated", "the engine", "sglang_servers"),
    ("sglang_router_api_key", "sglang_router_allow_unauthenticated", "the gateway", "sglang_routers"),
)


def authentication_problems(host: str, vars_: Mapping[str, Any], groups_of_host: Iterable[str]) -> list[Problem]:
    """An engine or gateway without an API key serves anyone who reaches its port: refused unless the
    inventory opts out on purpose (``sglang_service_allow_unauthenticated`` /
    ``sglang_router_allow_unauthenticated``). A key that could not be resolved (absent from ``vars_``:
    a vault value without the password, reported on its own) is not called empty."""
    groups = set(groups_of_host)
    out = []
    for key_var, opt_out, what, group in AUTH_VARIABLES:
        if group not in groups or key_var not in vars_ or _is_set(vars_[key_var]) or _truthy(vars_.get(opt_out)):
            continue
        extra = (" (the gateway's key defaults to the workers' sglang_service_api_key)"
                 if key_var == "sglang_router_api_key" else "")
        out.append(problem(
            host, key_var, "",
            f"is empty: {what} would serve without authentication, to anyone who reaches its port{extra}",
            f"set {key_var} (keep it in ansible-vault: ansible-vault encrypt_string --name vault_{key_var} 'KEY', "
            f"then {key_var}: \"{{{{ vault_{key_var} }}}}\"), or set {opt_out}: true to serve without a key on purpose"))
    return out


def router_tls_material_problems(host: str, vars_: Mapping[str, Any], ca_reader=None) -> list[Problem]:
    """Gateway TLS given as PEM text (vault, inline or a controller file through a lookup), checked on the
    controller with the router preflight's own code (:func:`sgl_deploy.tls.pair_problems`): the key is the
    certificate's, the certificate is valid now (a warning under ``sglang_router_tls_expiry_warn_days``),
    its subjectAltName names the address clients use (``sglang_router_tls_server_names``, else the
    gateway's ``ansible_host`` or inventory name) and it chains to ``sglang_router_tls_ca_file``.
    Certificates given as host paths are checked by the router role's TLS tasks in the preflight phase."""
    cert, key = vars_.get("sglang_router_tls_cert"), vars_.get("sglang_router_tls_key")
    if not _is_set(cert) or "-----BEGIN " not in str(cert) or _is_set(vars_.get("sglang_router_tls_cert_path")):
        return []
    key_text = str(key) if _is_set(key) and "-----BEGIN " in str(key) and not _is_set(vars_.get("sglang_router_tls_key_path")) else None
    ca_file = vars_.get("sglang_router_tls_ca_file")
    ca_text = None
    out: list[Problem] = []
    if _is_set(ca_file):
        try:
            ca_text = (ca_reader or (lambda path: Path(path).read_text()))(str(ca_file))
        except OSError as exc:
            out.append(problem(host, "sglang_router_tls_ca_file", ca_file,
                               f"cannot be read on the controller ({exc.strerror or exc})",
                               "set sglang_router_tls_ca_file to the CA bundle's path on the controller"))
    names = vars_.get("sglang_router_tls_server_names")
    if not names:
        names = [vars_.get("ansible_host") or host]
    elif isinstance(names, str):
        names = [names]
    try:
        warn_days = int(vars_.get("sglang_router_tls_expiry_warn_days", _tls.DEFAULT_WARN_DAYS))
    except (TypeError, ValueError):
        warn_days = _tls.DEFAULT_WARN_DAYS
    try:
        found = _tls_checks(str(cert), key_text, ca_text, tuple(str(n) for n in names), warn_days)
    except ImportError:  # no cryptography on the controller: the router preflight still checks the expiry
        return out
    shown = {"sglang_router_tls_cert": "<PEM certificate>", "sglang_router_tls_key": "<secret PEM key>",
             "sglang_router_tls_ca_file": ca_file}
    where = {"certificate": "sglang_router_tls_cert", "key": "sglang_router_tls_key", "san": "sglang_router_tls_cert",
             "chain": "sglang_router_tls_ca_file"}
    for item in found:
        var = where[item["check"]]
        p = problem(host, var, shown[var], item["msg"], item["fix"])
        if item["level"] == "warning":
            p["level"] = "warning"
        out.append(p)
    return out


@functools.lru_cache(maxsize=64)
def _tls_checks(cert: str, key: str | None, ca: str | None, names: tuple[str, ...], warn_days: int) -> list[dict]:
    return _tls.pair_problems(cert, key, ca, names, warn_days, label="the gateway certificate")


def _yaml_load(text: str) -> Any:
    """YAML with libyaml's loader when PyYAML has it (the role specs are read on every run: 10x faster)."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


@functools.lru_cache(maxsize=4)
def playbook_variables() -> dict[str, Any]:
    """The variables playbooks read (``src/sgl_deploy/playbook_variables.yml``): name -> description."""
    data = _yaml_load(PLAYBOOK_VARIABLES_FILE.read_text()) or {}
    return dict(data.get("variables") or {})


@functools.lru_cache(maxsize=4)
def known_variable_names(roles_dir: str) -> frozenset[str]:
    """Every variable the toolkit reads from the inventory: the options of every entry point of every
    role's ``meta/argument_specs.yml``, every role default, and the playbook variables."""
    names: set[str] = set(playbook_variables())
    for role in sorted(Path(roles_dir).iterdir()):
        spec_file = role / "meta" / "argument_specs.yml"
        if spec_file.exists():
            specs = (_yaml_load(spec_file.read_text()) or {}).get("argument_specs") or {}
            for entry in specs.values():
                names.update((entry or {}).get("options") or {})
        defaults = role / "defaults" / "main.yml"
        if defaults.exists():
            names.update(_yaml_load(defaults.read_text()) or {})
    return frozenset(names)


# Settings of the validation itself, read per host (src/sgl_deploy/playbook_variables.yml).
VALIDATION_SETTINGS = (ALLOW_UNKNOWN_VARIABLE, "sgl_validate_remote_checks", "sgl_validate_unreachable")


def _walk_fact_names(node: Any, out: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk_fact_names(item, out)
    elif isinstance(node, dict):
        for key in ("ansible.builtin.set_fact", "set_fact"):
            if isinstance(node.get(key), dict):
                out.update(k for k in node[key] if k != "cacheable")
        if isinstance(node.get("register"), str):
            out.add(node["register"])
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            _walk_fact_names(node.get(key), out)


@functools.lru_cache(maxsize=4)
def runtime_fact_names(repo_root: str) -> frozenset[str]:
    """Names the roles and playbooks set while they run (set_fact, register): a role default that
    needs one (``sglang_plan_result``) cannot be evaluated before that phase and is left to the role."""
    import yaml

    root = Path(repo_root)
    out: set[str] = set()
    for path in [*root.glob("roles/*/tasks/*.yml"), *root.glob("roles/*/handlers/*.yml"),
                 *root.glob("playbooks/*.yml"), root / "site.yml"]:
        try:
            _walk_fact_names(_yaml_load(path.read_text()), out)
        except (OSError, yaml.YAMLError):
            continue
    return frozenset(out)


def unknown_variable_problems(host: str, inventory_vars: Mapping[str, Any], known: Iterable[str],
                              allow: Iterable[str] = ()) -> list[Problem]:
    """Inventory variables (inventory, group_vars, host_vars, -e) with a toolkit prefix that no role and
    no playbook knows: a misspelt name is otherwise ignored and the role quietly uses its default
    (``sglang_service_apikey`` leaves the engine without a key). ``allow``: names or fnmatch patterns
    of ``sgl_validate_allow_unknown`` (your own helper variables with a toolkit prefix)."""
    known = known if isinstance(known, (set, frozenset)) else set(known)
    patterns = [str(a) for a in (allow or [])]
    out = []
    for name in sorted(inventory_vars):
        if not name.startswith(TOOLKIT_PREFIXES) or name in known:
            continue
        if any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=2, cutoff=0.75)
        if close:
            # a second name only when it is about as close as the first (sglang_plan_xp_size: tp or ep?)
            near = [c for c in close[1:] if difflib.SequenceMatcher(None, name, c).ratio()
                    >= difflib.SequenceMatcher(None, name, close[0]).ratio() - 0.01]
            others = f" (or `{near[0]}`)" if near else ""
            hint = f"did you mean `{close[0]}`{others}? Rename it; or, "
        else:
            hint = "use a variable of the roles' READMEs (roles/*/meta/argument_specs.yml); or, "
        out.append(problem(
            host, name, inventory_vars[name],
            "is not a variable of any role or playbook of the toolkit (a misspelt name is ignored: the role would use its default)",
            hint + f"if it is a helper variable of your own, list it in {ALLOW_UNKNOWN_VARIABLE} (names or patterns) "
            "or give it a name without a toolkit prefix (e.g. vault_*)"))
    return out


# --------------------------------------------------------------------------- one host

def host_problems(host: str, vars_: Mapping[str, Any], groups_of_host: Iterable[str] = ()) -> list[Problem]:
    """Every single-host rule over ``vars_`` (variables absent from it were not resolvable: skipped)."""
    out: list[Problem] = []

    def add(p: Problem | None) -> None:
        if p:
            out.append(p)

    for var in PATH_VARIABLES:
        if var in vars_:
            add(path_problem(host, var, vars_[var]))
    for var in MODEL_ID_VARIABLES:
        if var in vars_:
            add(model_id_problem(host, var, vars_[var]))
    for var in REVISION_VARIABLES:
        if var in vars_:
            add(revision_problem(host, var, vars_[var]))
    for var in API_KEY_VARIABLES:
        if var in vars_:
            add(api_key_problem(host, var, vars_[var]))
    for var in ENVIRONMENT_VARIABLES:
        if var in vars_:
            out += environment_problems(host, var, vars_[var])
    for var in PORT_VARIABLES:
        if var in vars_:
            add(port_problem(host, var, vars_[var]))
    for var in URL_VARIABLES:
        if var in vars_:
            add(url_problem(host, var, vars_[var]))
    for var in URL_LIST_VARIABLES:
        value = vars_.get(var)
        if isinstance(value, (list, tuple)):
            for item in value:
                add(url_problem(host, var, item, ("http", "https", "file") if "index" in var else ("http", "https")))
    for offline_var, links_var in FIND_LINKS_VARIABLES:
        if links_var in vars_:
            add(find_links_problem(host, links_var, vars_[links_var]))
        add(offline_problem(host, offline_var, links_var, vars_))
    for var in VERSION_VARIABLES:
        if var in vars_:
            add(version_problem(host, var, vars_[var]))
    for var in MIN_VERSION_VARIABLES:
        if var in vars_:
            add(version_problem(host, var, vars_[var], _NUMERIC_VERSION_RE))
    for var in FRACTION_VARIABLES:
        if var in vars_:
            add(fraction_problem(host, var, vars_[var]))
    for var, floor, strict in NUMBER_FLOORS:
        if var in vars_:
            add(number_problem(host, var, vars_[var], floor, strict))
    for var in UNIT_NAME_VARIABLES:
        if var in vars_:
            add(name_problem(host, var, vars_[var], _UNIT_RE, "systemd unit name"))
    for var in USER_VARIABLES:
        if var in vars_:
            add(name_problem(host, var, vars_[var], _USER_RE, "user or group name"))
    for var in PROBE_NAME_VARIABLES:
        if var in vars_:
            add(probe_names_problem(host, var, vars_[var]))
    for var in CIDR_LIST_VARIABLES:
        if var in vars_:
            out += cidr_list_problems(host, var, vars_[var])
    if "sglang_firewall_enabled" in vars_:
        add(firewall_enabled_problem(host, "sglang_firewall_enabled", vars_["sglang_firewall_enabled"]))
    if "sglang_plan_extra_args" in vars_:
        out += extra_args_problems(host, "sglang_plan_extra_args", vars_["sglang_plan_extra_args"])
    if "sglang_router_extra_args" in vars_:
        out += router_extra_args_problems(host, "sglang_router_extra_args", vars_["sglang_router_extra_args"])
    out += router_tls_problems(host, vars_)
    if "sglang_routers" in set(groups_of_host):
        out += router_tls_material_problems(host, vars_)
    out += authentication_problems(host, vars_, groups_of_host)
    out += pin_floor_problems(host, vars_, groups_of_host)
    if "sglang_plan_model_profile" in vars_:
        out += profile_problems(host, vars_)
    out += port_clash_problems(host, vars_, groups_of_host)
    return out


def host_ports(vars_: Mapping[str, Any], groups_of_host: Iterable[str]) -> dict[str, int]:
    """The ports this host listens on, by variable: engine and rendezvous on servers, router and its
    metrics on routers, the weights mirror on fan-out hosts, the metrics relay unless the firewall is off."""
    groups = set(groups_of_host)
    wanted: list[str] = []
    if "sglang_servers" in groups:
        wanted += ["sglang_plan_port"]
        replicas = vars_.get("sglang_plan_replicas")
        if isinstance(replicas, Mapping) and any(isinstance(m, list) and len(m) > 1 for m in replicas.values()):
            wanted.append("sglang_plan_dist_init_port")
        if vars_.get("model_weights_source") == "fanout":
            wanted.append("model_weights_fanout_port")
        if str(vars_.get("sglang_firewall_enabled", _firewall.AUTO)).lower() not in ("false", "no", "off", "0"):
            wanted.append("sglang_firewall_metrics_port")
    if "sglang_routers" in groups:
        wanted += ["sglang_router_port", "sglang_router_prometheus_port"]
    ports = {}
    for var in wanted:
        port = _as_int(vars_.get(var))
        if port is not None and 1 <= port <= 65535:
            ports[var] = port
    return ports


def port_clash_problems(host: str, vars_: Mapping[str, Any], groups_of_host: Iterable[str]) -> list[Problem]:
    """Two services of one host never share a port."""
    out = []
    seen: dict[int, str] = {}
    for var, port in host_ports(vars_, groups_of_host).items():
        if port in seen:
            out.append(problem(host, var, port, f"is the same port as {seen[port]} on this host",
                               f"give {var} and {seen[port]} different ports"))
        else:
            seen[port] = var
    return out


# --------------------------------------------------------------------------- the fleet

def replica_group_problems(
    host: str, replicas: Any, all_hosts: Iterable[str], servers: Iterable[str], in_run: Iterable[str]
) -> list[Problem]:
    """``sglang_plan_replicas`` (as ``host`` sees it): a mapping name -> [hosts]; every host exists, is in
    sglang_servers, is in one group only, and a group is either wholly in the run or not at all."""
    var = "sglang_plan_replicas"
    if replicas is None or replicas == {}:
        return []
    if not isinstance(replicas, Mapping):
        return [problem(host, var, replicas, "is not a mapping of group name to a list of hosts",
                        "set sglang_replicas to {name: [rank0 host, rank1 host, ...]}")]
    known, serving, running = set(all_hosts), set(servers), set(in_run)
    out: list[Problem] = []
    owner: dict[str, str] = {}
    for name, members in replicas.items():
        if not isinstance(members, (list, tuple)) or not members:
            out.append(problem(host, f"{var}.{name}", members, "is not a non-empty list of hosts",
                               "list the group's hosts in rank order, rank 0 first"))
            continue
        for member in members:
            member = str(member)
            if member not in known:
                out.append(problem(host, f"{var}.{name}", list(members), f"names {member}, which is not in the inventory",
                                   f"fix the spelling of {member} or add it to sglang_servers"))
            elif member not in serving:
                out.append(problem(host, f"{var}.{name}", list(members), f"names {member}, which is not in sglang_servers",
                                   f"add {member} to sglang_servers or remove it from the group"))
            if member in owner:
                where = "twice in this group" if owner[member] == name else f"also in group {owner[member]}"
                out.append(problem(host, f"{var}.{name}", list(members), f"names {member}, which is {where}",
                                   f"put {member} in exactly one replica group, once"))
            else:
                owner[member] = str(name)
        in_group = [str(m) for m in members if str(m) in serving]  # unknown hosts are reported above
        if len(in_group) == len(members) and any(m in running for m in in_group):
            for p in _preflight.group_membership_problems(str(name), in_group, running):
                out.append(problem(host, f"{var}.{name}", in_group, p["found"], p["fix"]))
    return out


def colocation_problems(host: str, vars_: Mapping[str, Any], groups_of_host: Iterable[str]) -> list[Problem]:
    """A GPU server that is also the gateway shares its CPU, memory and restarts with the engine (a
    redeploy drains the gateway's own host): refused unless ``sglang_router_allow_colocation: true``."""
    groups = set(groups_of_host)
    if not {"sglang_servers", "sglang_routers"} <= groups or _truthy(vars_.get("sglang_router_allow_colocation")):
        return []
    return [problem(host, "group_names", sorted(g for g in groups if g.startswith("sglang_")),
                    "is both a GPU server (sglang_servers) and the gateway (sglang_routers)",
                    "give the gateway a host of its own (CPU only is enough) and remove this host from sglang_routers, "
                    "or set sglang_router_allow_colocation: true on this host to run both on purpose")]


def fleet_problems(
    hostvars: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, Iterable[str]],
    in_run: Iterable[str],
) -> list[Problem]:
    """Every rule for every host in the run. ``hostvars``: host -> resolved variables; ``groups``:
    the inventory groups (``all``, ``sglang_servers``, ...); ``in_run``: hosts of this run (after --limit)."""
    running = list(in_run)
    member_of: dict[str, list[str]] = {}
    for group, hosts in groups.items():
        for h in hosts:
            member_of.setdefault(str(h), []).append(str(group))
    all_hosts = list(groups.get("all", [])) or list(hostvars)
    servers = list(groups.get("sglang_servers", []))
    out: list[Problem] = []
    seen_replicas: set[str] = set()
    for host in running:
        vars_ = hostvars.get(host, {})
        out += host_problems(host, vars_, member_of.get(host, []))
        out += colocation_problems(host, vars_, member_of.get(host, []))
        # --- the planner's GPU-free rules (sgl_deploy.plan_rules): the plan's words and fix ---
        if host in servers:
            out += [problem(host, *refusal) for refusal in _plan_rules.inventory_refusals(host, vars_)]
        # ---
        if host in servers and "sglang_plan_replicas" in vars_:
            key = repr(vars_["sglang_plan_replicas"])
            if key not in seen_replicas:  # the same mapping (group_vars) is checked once
                seen_replicas.add(key)
                out += replica_group_problems(host, vars_["sglang_plan_replicas"], all_hosts, servers, running)
    return out


def merge_problems(spec: list[Problem], semantic: list[Problem], hosts_order: Iterable[str]) -> list[Problem]:
    """Argument-spec problems first; a semantic problem of a variable that already failed its spec is
    dropped (one cause, one line); sorted by host in inventory order."""
    failed = {(p["host"], p["variable"]) for p in spec}
    merged = spec + [p for p in semantic if (p["host"], p["variable"]) not in failed]
    order = {h: i for i, h in enumerate(hosts_order)}
    return sorted(merged, key=lambda p: order.get(p["host"], len(order)))


def split_warnings(problems: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings): a problem with ``level: warning`` does not stop the run."""
    return ([p for p in problems if p.get("level") != "warning"], [p for p in problems if p.get("level") == "warning"])


def format_line(p: Problem) -> str:
    return f"{p['host']}: {p['variable']} = {p['value']}: {p['problem']}. Fix: {p['fix']}"


def format_problems(problems: list[Problem]) -> str:
    """All problems, one per line: ``host: variable = value: problem. Fix: fix``."""
    hosts = sorted({p["host"] for p in problems})
    head = (f"The inventory has {len(problems)} bad value{'s' if len(problems) != 1 else ''} on "
            f"{len(hosts)} host{'s' if len(hosts) != 1 else ''}; nothing was changed on any host:")
    lines = [head] + [f"  {format_line(p)}" for p in problems]
    return "\n".join(lines)


# --------------------------------------------------------------------------- argument specs

_VALIDATORS: dict[tuple[str, int], Any] = {}


def _validator(role: str, options: Mapping[str, Any]) -> Any:
    """One ArgumentSpecValidator per role spec (building it is the slow part on big fleets)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # only with Ansible installed

    key = (role, id(options))
    if key not in _VALIDATORS:
        _VALIDATORS[key] = (options, ArgumentSpecValidator(dict(options)))
    return _VALIDATORS[key][1]


def argument_spec_problems(host: str, role: str, options: Mapping[str, Any], values: Mapping[str, Any]) -> list[Problem]:
    """The role's ``meta/argument_specs.yml`` options (entry point ``main``) checked against ``values``
    with Ansible's own ``ArgumentSpecValidator`` (the check the role runs when it starts), one problem
    per error, naming the variable."""
    provided = {k: v for k, v in values.items() if k in options}
    if not provided:
        return []
    result = _validator(role, options).validate(provided, validate_role_argument_spec=True)
    out = []
    for message in result.error_messages:
        text = str(message)
        var = next((k for k in sorted(options, key=len, reverse=True) if k in text), "")
        for secret in SECRET_VARIABLES:
            if secret in provided and _is_set(provided[secret]):
                text = text.replace(str(provided[secret]), "<secret>")
        spec = options.get(var) or {}
        if spec.get("choices"):
            fix = f"set {var} to one of {', '.join(str(c) for c in spec['choices'])}"
        elif var:
            kind = spec.get("type", "str")
            if spec.get("elements"):
                kind = f"{kind} of {spec['elements']}"
            article = "an" if kind[0] in "aeiou" else "a"
            fix = f"set {var} to {article} {kind} (roles/{role}/meta/argument_specs.yml)"
        else:
            fix = f"see roles/{role}/meta/argument_specs.yml"
        out.append(problem(host, var or f"({role})", provided.get(var, ""), f"fails the {role} argument spec: {text}", fix))
    return out
