"""The planner's rules that need no GPU facts, in one place for the planner and the inventory check.

The planner (:mod:`sgl_deploy.planner`) refuses a layout, a context length, an SGLang pin or a
served name with these functions; the controller-side validation (:mod:`sgl_deploy.validate`,
``playbooks/validate.yml``) calls :func:`inventory_refusals` with a host's variables and so refuses
the same values with the same words and the same fix before any host is contacted. Rules that
need the GPUs (the GPU count, memory) stay in the planner.

A :class:`Refusal` carries the planner option (``tp_size``), the value, the message in the
planner's words (``tp_size 3 does not divide the 64 attention heads``) and the fix in inventory
words; :func:`role_message` turns planner words into inventory words
(``sglang_plan_tp_size 3 ...``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Mapping

from sgl_deploy.profiles import Profile, ProfileError, load_profile

# Planner options -> the sglang_plan role's inventory variables, so that a refusal shown by
# Ansible names what the user sets (the CLI keeps the option names and flags).
ROLE_VARIABLES = {
    "tp_size": "sglang_plan_tp_size",
    "ep_size": "sglang_plan_ep_size",
    "dp_size": "sglang_plan_dp_size",
    "pp_size": "sglang_plan_pp_size",
    "context_length": "sglang_plan_context_length",
    "mem_fraction_static": "sglang_plan_mem_fraction_static",
    "kv_gb_per_mtok": "sglang_plan_kv_gb_per_mtok",
    "weights_gb": "sglang_plan_weights_gb",
    "served_model_name": "sglang_plan_served_model_name",
    "sglang_version": "sglang_plan_sglang_version",
    "port": "sglang_plan_port",
    "recipe": "sglang_plan_recipe",
}
# CLI flags that name a value -> the inventory variable (in alternatives: ``--tp-size 2``)
FLAG_VARIABLES = {
    "--tp-size": "sglang_plan_tp_size",
    "--ep-size": "sglang_plan_ep_size",
    "--dp-size": "sglang_plan_dp_size",
    "--pp-size": "sglang_plan_pp_size",
    "--profile": "sglang_plan_model_profile",
    "--variant": "sglang_plan_variant",
    "--model-id": "sglang_plan_model_id",
}
_OPTION_RE = re.compile(r"(?<![\w:/.-])(" + "|".join(ROLE_VARIABLES) + r")(?= [\d'\"]| must)")
_FLAG_RE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(f) for f in FLAG_VARIABLES) + r") ([^\s,;()]+)")
_NODES_RE = re.compile(r"--nodes (\d+) \(")


def role_message(message: str) -> str:
    """A planner message in the sglang_plan role's words: ``tp_size 3`` -> ``sglang_plan_tp_size 3``,
    ``--tp-size 2`` -> ``sglang_plan_tp_size=2``, ``--profile minimax-m2.7`` ->
    ``sglang_plan_model_profile=minimax-m2.7``, ``--nodes 7 (`` -> ``7 hosts like this one in one
    sglang_replicas group (``."""
    text = _OPTION_RE.sub(lambda m: ROLE_VARIABLES[m.group(1)], str(message))
    text = _FLAG_RE.sub(lambda m: f"{FLAG_VARIABLES[m.group(1)]}={m.group(2)}", text)
    return _NODES_RE.sub(lambda m: f"{m.group(1)} hosts like this one in one sglang_replicas group (", text)


def version_key(version: str) -> tuple[Any, ...]:
    """Sortable key for versions like ``0.5.4.post1``, ``0.5.23``, ``0.5.16rc1``."""
    release: list[int] = []
    post = 0
    pre: tuple[int, int] = (1, 0)  # final release sorts after pre-releases
    for piece in str(version).strip().lstrip("v").split("."):
        match = re.match(r"^(\d+)(?:(a|b|rc)(\d+))?$", piece)
        if match:
            release.append(int(match.group(1)))
            if match.group(2):
                pre = (0, int(match.group(3)))
            continue
        post_match = re.match(r"^post(\d+)$", piece)
        if post_match:
            post = int(post_match.group(1))
            continue
        break
    while len(release) < 3:
        release.append(0)
    return (tuple(release), pre, post)


@dataclass(frozen=True)
class ModelShape:
    """The model numbers that constrain the parallel split."""

    num_layers: int
    num_experts: int
    num_attention_heads: int
    num_key_value_heads: int


def profile_shape(profile: Profile) -> ModelShape:
    """The profile's model shape (the planner may override it from a real config.json)."""
    mc = profile.get("model_config")
    return ModelShape(
        num_layers=int(mc["num_layers"]),
        num_experts=int(mc["num_experts"]),
        num_attention_heads=int(mc["num_attention_heads"]),
        num_key_value_heads=int(mc["num_key_value_heads"]),
    )


@dataclass(frozen=True)
class Refusal:
    """One refused value: the planner option, its value, what is wrong (planner words), the fix."""

    option: str
    value: Any
    message: str
    fix: str


def valid_tp_sizes(shape: ModelShape) -> list[int]:
    """tp sizes the model allows: divisors of the attention heads that divide or are a multiple of
    the KV heads (the GPUs narrow them further)."""
    heads, kvh = shape.num_attention_heads, shape.num_key_value_heads
    return [t for t in range(1, heads + 1) if heads % t == 0 and (kvh % t == 0 or t % kvh == 0)]


def _layout_fix(option: str, shape: ModelShape, nnodes: int) -> str:
    """The fix of a refused layout value, in inventory words."""
    tail = "or remove it so the planner decides (a refusal on the host lists the valid layouts of its GPUs)"
    if option == "tp_size":
        sizes = ", ".join(map(str, valid_tp_sizes(shape)))
        group = f" and, with pp, a multiple of the {nnodes} hosts of the replica group" if nnodes > 1 else ""
        return (f"set sglang_plan_tp_size to one the model allows ({sizes}) that the host's GPUs allow{group}, "
                + tail)
    if option == "ep_size":
        return (f"set sglang_plan_ep_size to a divisor of both the tp size and the {shape.num_experts} experts "
                "(1 or the tp size are the usual choices), " + tail)
    if option == "pp_size":
        return f"set sglang_plan_pp_size to at most {shape.num_layers}, " + tail
    return ("set sglang_plan_dp_size to 1 for a multi-node replica group (attention DP across nodes goes in "
            "sglang_plan_extra_args as --attn-dp-size N), " + tail)


def layout_refusals(
    shape: ModelShape,
    tp: int | None = None,
    ep: int | None = None,
    dp: int | None = None,
    pp: int | None = None,
    nnodes: int = 1,
) -> list[Refusal]:
    """The layout rules that need only the model and the node count (``None``: not known, its rules
    are skipped): tp divides the attention heads and divides or is a multiple of the KV heads; ep
    divides tp and the experts (SGLang's own checks pass ``--tp 8 --ep 3``, the launch dies);
    pp <= layers; ``(tp * pp) % nnodes == 0``; no dp across nodes (SGLang check_server_args)."""
    out: list[Refusal] = []

    def add(option: str, value: int, message: str) -> None:
        out.append(Refusal(option, value, message, _layout_fix(option, shape, nnodes)))

    if tp is not None:
        if shape.num_attention_heads % tp:
            add("tp_size", tp, f"tp_size {tp} does not divide the {shape.num_attention_heads} attention heads")
        kvh = shape.num_key_value_heads
        if kvh % tp and tp % kvh:
            add("tp_size", tp, f"tp_size {tp} neither divides nor is a multiple of the {kvh} KV heads")
    if ep is not None:
        if tp is not None and tp % ep:
            add("ep_size", ep, f"ep_size {ep} does not divide tp_size {tp} (SGLang needs tp = ep x moe_tp; "
                               "its argument checks pass this and the launch fails later)")
        if shape.num_experts % ep:
            add("ep_size", ep, f"ep_size {ep} does not divide the {shape.num_experts} experts")
    if pp is not None and pp > shape.num_layers:
        add("pp_size", pp, f"pp_size {pp} exceeds the {shape.num_layers} layers")
    if tp is not None and (tp * (pp or 1)) % nnodes:
        add("tp_size", tp, f"tp_size x pp_size = {tp * (pp or 1)} is not divisible by nnodes {nnodes} "
                           "(SGLang check_server_args)")
    if dp is not None and dp > 1 and nnodes > 1:
        add("dp_size", dp, f"dp_size {dp} with nnodes {nnodes}: SGLang refuses data parallelism across nodes "
                           "(use attention DP, --attn-dp-size, via extra_args instead)")
    return out


CONTEXT_FIX = "set sglang_plan_context_length to a value the model supports, or remove it"
VERSION_FIX = ("set sglang_plan_sglang_version to the version named above or newer "
               "(sglang_install_version follows it)")
SERVED_NAME_FIX = "set sglang_plan_served_model_name without ':'"


def context_refusal(requested: int, max_context: int) -> Refusal | None:
    """A context length beyond the model's maximum (the profile's, or config.json's when known)."""
    if requested > max_context:
        return Refusal("context_length", requested,
                       f"invalid override: context_length {requested} exceeds the model's maximum {max_context}",
                       CONTEXT_FIX)
    return None


def version_refusal(profile: Profile, version: str) -> Refusal | None:
    """An SGLang pin older than the first release that serves the model."""
    min_ver = str(profile.get("min_sglang_version"))
    if version_key(version) < version_key(min_ver):
        return Refusal("sglang_version", version,
                       f"{profile.get('display_name')} needs SGLang >= {min_ver} "
                       f"({profile.source('min_sglang_version')}); got {version}", VERSION_FIX)
    return None


def served_name_refusal(served: str) -> Refusal | None:
    """SGLang reserves ':' in --served-model-name for LoRA adapters."""
    if ":" in str(served):
        return Refusal("served_model_name", served,
                       f"served_model_name {served!r} contains ':' (SGLang reserves it for LoRA adapters)",
                       SERVED_NAME_FIX)
    return None


# --------------------------------------------------------------------------- inventory side


@functools.lru_cache(maxsize=32)
def _profile(name: str) -> Profile | None:
    try:
        return load_profile(name)
    except (ProfileError, OSError, ValueError):
        return None  # validate.profile_problems reports it


def _int(value: Any) -> int | None:
    """A whole number >= 1, else None (types and floors are the argument spec's and validate's)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number >= 1 else None


def group_size(host: str, replicas: Any) -> int:
    """How many hosts the replica group of ``host`` has (1 outside any group)."""
    if isinstance(replicas, Mapping):
        for members in replicas.values():
            if isinstance(members, (list, tuple)) and host in [str(m) for m in members]:
                return max(1, len(members))
    return 1


def inventory_refusals(host: str, vars_: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """The planner's GPU-free rules over one server's variables: ``(variable, value, problem, fix)``
    with the plan's words (:func:`role_message`) and fix. Unset or malformed values are skipped
    (the argument spec and the floors of :mod:`sgl_deploy.validate` report those)."""
    name = vars_.get("sglang_plan_model_profile")
    prof = _profile(str(name)) if name not in (None, "") else None
    if prof is None:
        return []
    refusals: list[Refusal] = []
    sizes = {o: _int(vars_.get(f"sglang_plan_{o}_size")) for o in ("tp", "ep", "dp", "pp")}
    nnodes = group_size(host, vars_.get("sglang_plan_replicas"))
    try:
        shape = profile_shape(prof)
    except (KeyError, TypeError, ValueError):
        return []
    refusals += layout_refusals(shape, sizes["tp"], sizes["ep"], sizes["dp"], sizes["pp"], nnodes)
    ctx_len = _int(vars_.get("sglang_plan_context_length"))
    if ctx_len is not None:
        refusals.append(context_refusal(ctx_len, int(prof.get("max_context"))))
    version = vars_.get("sglang_plan_sglang_version")
    if isinstance(version, str) and re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?", version.strip()):
        refusals.append(version_refusal(prof, version.strip()))
    served = vars_.get("sglang_plan_served_model_name")
    if served not in (None, ""):
        refusals.append(served_name_refusal(str(served)))
    by_option: dict[str, list[Refusal]] = {}
    for r in refusals:
        if r is not None:
            by_option.setdefault(r.option, []).append(r)
    # one line per variable, its causes joined as the plan joins them
    return [(ROLE_VARIABLES[option], rs[0].value, role_message("; ".join(r.message for r in rs)), rs[0].fix)
            for option, rs in by_option.items()]
