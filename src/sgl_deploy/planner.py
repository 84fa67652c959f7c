"""The planner: GPU facts + model profile -> the plan fact ``sglang_plan_result``.

The plan fixes the parallel layout (tp/ep/dp/pp, nnodes), the memory split (weights vs.
KV cache), the context length, the parsers' preference lists and the readiness deadline.
Every later role reads the plan; nothing recomputes it (docs/architecture.md).

Memory model (all GB decimal, per replica of ``tp * pp`` GPUs)::

    usable      = gpus * gpu_memory_gb * mem_fraction_static
    kv_budget   = usable - weights_gb - runtime_reserve_gb_per_gpu * gpus
    max_tokens  = kv_budget / (kv_gb_per_mtok * kv_replication) * 1e6

``kv_replication`` is ``tp / num_key_value_heads`` when tp exceeds the KV heads (SGLang
then replicates KV heads on several ranks), else 1. The SGLang recipe figures reproduce
(4 x 96 GB, 0.85, 220 GB, 240 GB/Mtok -> ~427K tokens; 8 x 144 GB -> ~3.13M tokens).

Layout rules the planner owns because SGLang only fails late (reference/sglang.md §1):
tp divides the attention heads; tp divides or is a multiple of the KV heads; ep divides
tp and the expert count (``--tp 8 --ep 3`` passes SGLang's checks and dies at launch);
``(tp * pp) % nnodes == 0``; ``dp > 1`` with ``nnodes > 1`` is refused. The rules that need no GPU
facts live in :mod:`sgl_deploy.plan_rules`, which the inventory validation calls too (same words,
same fix).

The plan says what it chose (``value_origins``), quotes the active recipe's mem fraction, and a
refusal offers only what the inventory could take (``same_gpu_hosts``) and the smaller models that fit.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from sgl_deploy.errors import SglDeployError
from sgl_deploy.plan_rules import (  # noqa: F401  (ROLE_VARIABLES, role_message: planner.* for callers)
    ROLE_VARIABLES,
    ModelShape,
    Refusal,
    context_refusal,
    layout_refusals,
    profile_shape,
    role_message,
    served_name_refusal,
    version_key,
    version_refusal,
)
from sgl_deploy.ports import ENGINE_PORT
from sgl_deploy.profiles import DEFAULT_PROFILE, Profile, ProfileError, available_profiles, load_profile

DEFAULT_SGLANG_VERSION = "0.5.23"
DEFAULT_WEIGHTS_ROOT = "/srv/models"
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = ENGINE_PORT
NODE_SIZES = (1, 2, 4, 8)  # GPU counts of common single hosts, for suggestions
MAX_SUGGESTED_NODES = 8


class PlanError(SglDeployError, ValueError):
    """No valid plan: ``message`` says why; ``alternatives`` lists what would work."""

    def __init__(self, message: str, alternatives: list[dict[str, Any]] | None = None, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.alternatives = alternatives or []
        self.fix = fix  # the fix in inventory words when the rule knows it (else refusal_message picks one)
        self.no_fit = False  # True: the model does not fit the hardware (memory or no valid split)

    @classmethod
    def of(cls, refusal: Refusal, alternatives: list[dict[str, Any]] | None = None) -> "PlanError":
        """The refusal of a rule of :mod:`sgl_deploy.plan_rules`, with its fix."""
        return cls(refusal.message, alternatives, fix=refusal.fix)

    def to_dict(self) -> dict[str, Any]:
        """JSON form printed by ``sgl-deploy plan --json`` on failure."""
        return {"error": self.message, "alternatives": self.alternatives}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Layout:
    """A parallel layout. ``source``: recipe | derived | override | cookbook cell | recipe cell."""

    tp: int
    ep: int = 1
    dp: int = 1
    pp: int = 1
    source: str = "derived"

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def describe(self) -> str:
        parts = [f"tp {self.tp}"]
        if self.pp > 1:
            parts.append(f"pp {self.pp}")
        parts.append(f"ep {self.ep}")
        if self.dp > 1:
            parts.append(f"dp {self.dp}")
        return " ".join(parts)


@dataclass(frozen=True)
class Memory:
    """The memory split for one replica (GB decimal)."""

    usable_gb: float
    reserve_gb: float
    kv_budget_gb: float
    kv_replication: int
    kv_gb_per_mtok_effective: float
    max_total_tokens: int


@dataclass
class Plan:
    """The plan fact; :func:`plan_to_dict` gives the ``sglang_plan_result`` mapping."""

    model_profile: str
    model_id: str
    model_revision: str
    model_path: str
    served_model_name: str
    sglang_version: str
    gpus_per_node: int
    gpu_memory_gb: float
    nnodes: int
    node_rank: int
    dist_init_addr: str | None
    tp_size: int
    ep_size: int
    dp_size: int
    pp_size: int
    mem_fraction_static: float
    context_length: int
    max_total_tokens: int
    weights_gb: float
    weights_source: str
    parsers: dict[str, list[str]]
    readiness_timeout_s: int
    host: str
    port: int
    extra_args: list[str]
    reasoning: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # additions beyond the architecture contract
    architectures: list[str] = field(default_factory=list)
    model_variant: str = ""
    model_dtype: str | None = None
    gpu_name: str | None = None
    gpu_architecture: str | None = None
    total_gpus: int = 0
    layout_source: str = "derived"
    kv_gb_per_mtok: float = 0.0
    kv_source: str = "profile"
    kv_replication: int = 1
    usable_gb: float = 0.0
    kv_budget_gb: float = 0.0
    max_context: int = 0
    max_output: int | None = None
    min_sglang_version: str = ""
    vision: bool = False
    sampling: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = True
    enable_metrics: bool = True
    unconfirmed: list[str] = field(default_factory=list)
    # the recipe matrix (profile recipe_matrix): which matrix, which cell, its flags and sources
    recipe: str = "cookbook"
    recipe_cell: str | None = None
    recipe_args: list[str] = field(default_factory=list)
    recipe_sources: dict[str, str] = field(default_factory=dict)
    # M3 on Blackwell: the MSA kernel JIT-compiles on first use; the install role warms its cache
    msa_jit_warm: bool = False
    # multi-node safeguards (None / {} on a single node): see MULTINODE_SAFEGUARDS
    watchdog_timeout_s: int | None = None
    dist_timeout_s: int | None = None
    nccl_environment: dict[str, str] = field(default_factory=dict)
    # which values the caller set and which the planner chose, and from what (recipe cell, profile, rule)
    value_origins: dict[str, dict[str, Any]] = field(default_factory=dict)


# One line per Plan field: docs/architecture.md's plan-fact table is generated from it
# (`sgl-deploy docs plan-fields`; tests/unit/test_docs_match_tool.py fails when they differ).
PLAN_FIELD_DOCS: dict[str, str] = {
    "model_profile": "profile name (`sglang_plan_model_profile`)",
    "model_id": "hub id of the checkpoint (the variant's, or `sglang_plan_model_id`)",
    "model_revision": "hub revision (branch, tag or commit)",
    "model_path": "weights directory `<weights_root>/<owner>--<name>/<revision>`: the weights role's target, `--model-path`",
    "served_model_name": "`--served-model-name` (no `:`)",
    "sglang_version": "the SGLang pin the install role builds a venv for",
    "gpus_per_node": "GPUs per host (GPU facts, or `--gpus`)",
    "gpu_memory_gb": "decimal GB per GPU (the smallest GPU of the host)",
    "nnodes": "hosts of the replica group (1: single node)",
    "node_rank": "this host's rank in its group (`--node-rank`)",
    "dist_init_addr": "`host:port` of rank 0 for a multi-node group, else null",
    "tp_size": "`--tp-size` (global across the group's nodes)",
    "ep_size": "`--ep-size`",
    "dp_size": "`--dp-size`",
    "pp_size": "`--pp-size`",
    "mem_fraction_static": "`--mem-fraction-static`: the inventory's, the recipe cell's, the active recipe's for the build, else the profile's",
    "context_length": "`--context-length`: the model maximum capped by the KV capacity, or the inventory's",
    "max_total_tokens": "KV cache capacity in tokens (memory model, module docstring)",
    "weights_gb": "weights size in GB used for memory and disk (hub listing, inventory, else profile)",
    "weights_source": "where `weights_gb` came from: `profile`, `hub`, `inventory` or `override`",
    "parsers": "preference lists `{tool_call: [...], reasoning: [...]}`: the install role takes the first the installed SGLang accepts",
    "readiness_timeout_s": "deadline of the service role's readiness gate (load-time model of the profile)",
    "host": "`--host`",
    "port": "`--port` (`sglang_plan_port`)",
    "extra_args": "`sglang_plan_extra_args`, appended last (checked by the installed SGLang's parser)",
    "reasoning": "human-readable lines: every number with its source",
    "warnings": "human-readable warnings (capped context, GPUs left idle, planner-chosen values that differ from the cell, ...)",
    "architectures": "the model's Hugging Face `architectures` (profile)",
    "model_variant": "the profile variant planned (e.g. `hopper-bf16`, `blackwell-mxfp8`)",
    "model_dtype": "the variant's weights dtype",
    "gpu_name": "GPU product name from the facts (null without facts)",
    "gpu_architecture": "GPU architecture from the facts (`Hopper`, `Blackwell`, ...)",
    "total_gpus": "GPUs of the group: `gpus_per_node x nnodes`",
    "layout_source": "where the layout came from: `recipe`, `derived`, `override`, `<recipe> cell`",
    "kv_gb_per_mtok": "KV cache GB per 1M tokens (profile or `sglang_plan_kv_gb_per_mtok`)",
    "kv_source": "where `kv_gb_per_mtok` came from: `profile` or `override`",
    "kv_replication": "ranks holding each KV head (tp / KV heads when tp exceeds them, else 1)",
    "usable_gb": "GB per replica for weights + KV cache: GPUs x GB x mem fraction",
    "kv_budget_gb": "GB per replica left for the KV cache after weights and runtime reserve",
    "max_context": "the model's maximum context (profile, capped by config.json when given)",
    "max_output": "the model's maximum output tokens (profile; null when unknown)",
    "min_sglang_version": "first SGLang release that serves the model (profile)",
    "vision": "the model takes image input (the probes run the vision probe)",
    "sampling": "the model's generation defaults (profile; the sampling probe checks the server applies them)",
    "trust_remote_code": "`--trust-remote-code`",
    "enable_metrics": "`--enable-metrics` (Prometheus scrapes it through the metrics relay)",
    "unconfirmed": "profile numbers marked `confirmed: false` that this plan used",
    "recipe": "`sglang_plan_recipe`: `cookbook`, `recipe` or `none`",
    "recipe_cell": "the profile `recipe_matrix` cell applied (e.g. `h200-bf16`), or null",
    "recipe_args": "that cell's flags (argv after `--config`, before `extra_args`; an extra arg wins)",
    "recipe_sources": "flag -> its source in the profile",
    "msa_jit_warm": "M3 on Blackwell: the install role warms the MSA JIT cache first",
    "watchdog_timeout_s": "`--watchdog-timeout` on multi-node groups, else null",
    "dist_timeout_s": "`--dist-timeout` on multi-node groups, else null",
    "nccl_environment": "torch NCCL safeguards put in the unit's environment on multi-node groups, else `{}`",
    "value_origins": ("tp/ep/dp/pp, mem fraction, context length -> `{value, by: inventory, name}` when set, "
                      "or `{value, by: planner, from}` naming the recipe cell, profile entry or rule"),
}


def plan_fields_markdown() -> str:
    """The plan-fact table of docs/architecture.md, from :class:`Plan` and :data:`PLAN_FIELD_DOCS`."""
    from dataclasses import fields

    names = [f.name for f in fields(Plan)]
    missing = [n for n in names if n not in PLAN_FIELD_DOCS]
    stale = [n for n in PLAN_FIELD_DOCS if n not in names]
    if missing or stale:
        raise ValueError(f"PLAN_FIELD_DOCS out of date: missing {missing}, not Plan fields {stale}")
    rows = ["| field | type | meaning |", "| --- | --- | --- |"]
    for f in fields(Plan):
        kind = str(f.type).replace("|", "or")
        rows.append(f"| `{f.name}` | `{kind}` | {PLAN_FIELD_DOCS[f.name]} |")
    return "\n".join(rows) + "\n"


# SGLang's and torch's own safeguards for multi-node groups, made explicit in the argv and the unit
# (docs/multinode.md, "SGLang's own safeguards"). They turn some hangs into exits that systemd
# restarts; the group watchdog (roles/sglang_watchdog) covers what they do not (sglang#3099).
MULTINODE_SAFEGUARDS: dict[str, Any] = {
    # SGLang 0.5.23 --watchdog-timeout (default 300): "If a forward batch takes longer than this, the
    # server will crash to prevent hanging" (server_args help). Explicit so every rank carries it.
    "watchdog_timeout_s": 300,
    # SGLang --dist-timeout (default None = torch's): timeout of torch.distributed's process group,
    # i.e. of NCCL collectives; torch's NCCL default is 10 minutes (init_process_group docs).
    "dist_timeout_s": 600,
    "nccl_environment": {
        # torch ProcessGroupNCCL: "1: aborting NCCL communicator and tearing down process upon error"
        # (torch default 3 tears down without aborting the communicator); a timed-out collective
        # then ends the rank, and systemd's Restart=on-failure sees it.
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        # torch: the monitoring thread aborts the process when the NCCL watchdog thread is stuck
        # (e.g. in a hung CUDA/NCCL call) for TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC (torch default 480 s).
        "TORCH_NCCL_ENABLE_MONITORING": "1",
        # after the collective timeout had its chance: dist_timeout_s + 60
        "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "660",
    },
}


def plan_to_dict(plan_obj: Plan) -> dict[str, Any]:
    """The plan as a plain (JSON/YAML-safe) mapping: the fact ``sglang_plan_result``."""
    return asdict(plan_obj)


# --------------------------------------------------------------------------- helpers


def weights_dir(weights_root: str, model_id: str, revision: str) -> str:
    """Where the weights of ``model_id@revision`` live: ``<root>/<owner>--<name>/<revision>``."""
    return f"{str(weights_root).rstrip('/')}/{str(model_id).replace('/', '--')}/{revision}"


def kv_replication(tp: int, kv_heads: int) -> int:
    """How many ranks hold each KV head (SGLang replicates KV heads when tp > KV heads)."""
    return tp // kv_heads if kv_heads and tp > kv_heads else 1


def layout_problems(layout: Layout, shape: ModelShape, nnodes: int, total_gpus: int) -> list[str]:
    """Reasons this layout is invalid for the model and hardware; empty = valid. The model's rules
    are :func:`sgl_deploy.plan_rules.layout_refusals` (also run by the inventory validation)."""
    return [r.message for r in layout_refusal_list(layout, shape, nnodes, total_gpus)]


def layout_refusal_list(layout: Layout, shape: ModelShape, nnodes: int, total_gpus: int) -> list[Refusal]:
    """:func:`layout_problems` with each refusal's option and fix."""
    tp, ep, dp, pp = layout.tp, layout.ep, layout.dp, layout.pp
    if min(tp, ep, dp, pp) < 1:
        return [Refusal("tp_size", tp, f"tp/ep/dp/pp must be >= 1 (got tp {tp} ep {ep} dp {dp} pp {pp})",
                        "set each sglang_plan_*_size to 1 or more, or remove it so the planner decides")]
    out = layout_refusals(shape, tp, ep, dp, pp, nnodes)
    if layout.gpus > total_gpus:
        out.append(Refusal("tp_size", tp, f"tp x pp x dp = {layout.gpus} GPUs, but only {total_gpus} are available",
                           "set sglang_plan_tp_size (x pp x dp) to at most the host's GPU count, or remove it so "
                           "the planner decides"))
    return out


def memory_split(
    layout: Layout,
    gpu_memory_gb: float,
    mem_fraction: float,
    weights_gb: float,
    kv_gb_per_mtok: float,
    reserve_gb_per_gpu: float,
    shape: ModelShape,
) -> Memory:
    """Weights vs. KV cache for one replica of ``layout``."""
    gpus = layout.gpus_per_replica
    usable = gpus * gpu_memory_gb * mem_fraction
    reserve = reserve_gb_per_gpu * gpus
    budget = usable - weights_gb - reserve
    repl = kv_replication(layout.tp, shape.num_key_value_heads)
    eff = kv_gb_per_mtok * repl
    tokens = int(math.floor(budget / eff * 1e6)) if budget > 0 and eff > 0 else 0
    return Memory(usable, reserve, budget, repl, eff, tokens)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_layouts(
    profile: Profile, gpus_per_node: int, nnodes: int, dp: int = 1
) -> list[Layout]:
    """Layouts to try, in preference order.

    Single node: the recipe layout for this GPU count, tp = all GPUs, recipe layouts on a
    subset of the GPUs, then tp x pp splits. Several nodes: tp = all GPUs, tp = GPUs per
    node x pp = nodes, then the other tp x pp splits.
    """
    total = gpus_per_node * nnodes
    per_replica = total // dp if dp and total % dp == 0 else 0
    out: list[Layout] = []
    if per_replica <= 0:
        return out
    if nnodes == 1 and dp == 1:
        for rec in profile.get("recipe_layouts") or []:
            if int(rec["gpus"]) == total:
                out.append(Layout(tp=int(rec["tp"]), ep=int(rec["ep"]), source="recipe"))
    out.append(Layout(tp=per_replica, dp=dp))
    if nnodes > 1:
        out.append(Layout(tp=gpus_per_node, pp=nnodes, dp=dp))
    elif dp == 1:
        # a recipe layout on a subset of the GPUs beats an unverified pipeline split
        for rec in sorted(profile.get("recipe_layouts") or [], key=lambda r: -int(r["gpus"])):
            if int(rec["gpus"]) < total:
                out.append(Layout(tp=int(rec["tp"]), ep=int(rec["ep"]), source="recipe"))
    for pp in _divisors(per_replica)[1:]:
        out.append(Layout(tp=per_replica // pp, pp=pp, dp=dp))
    seen: set[tuple[int, int, int, int]] = set()
    unique = []
    for lay in out:
        key = (lay.tp, lay.ep, lay.dp, lay.pp)
        if key not in seen:
            seen.add(key)
            unique.append(lay)
    return unique


def _recipe_layout_index(profile: Profile, tp: int, total: int, nnodes: int) -> int | None:
    """Index in the profile's ``recipe_layouts`` of the layout for this tp on a single node with
    ``total`` GPUs, if any."""
    if nnodes != 1:
        return None
    for i, rec in enumerate(profile.get("recipe_layouts") or []):
        if int(rec["gpus"]) == total and int(rec["tp"]) == tp:
            return i
    return None


def _recipe_ep(profile: Profile, tp: int, total: int, nnodes: int) -> int | None:
    """The recipe's ep for this tp on a single node with ``total`` GPUs, if any."""
    i = _recipe_layout_index(profile, tp, total, nnodes)
    return None if i is None else int(profile.get("recipe_layouts")[i]["ep"])


# --------------------------------------------------------------------------- context object


@dataclass
class _Ctx:
    """Everything the layout search needs (resolved inputs)."""

    profile: Profile
    shape: ModelShape
    gpus_per_node: int
    nnodes: int
    gpu_memory_gb: float
    mem_fraction: float
    weights_gb: float
    kv_gb_per_mtok: float
    reserve_gb_per_gpu: float
    min_kv_tokens: int
    # hosts with these GPUs in the inventory's run (this one included); None: not known (the CLI),
    # alternatives may then name any hardware
    same_gpu_hosts: int | None = None

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nnodes

    def memory(self, layout: Layout) -> Memory:
        return memory_split(
            layout, self.gpu_memory_gb, self.mem_fraction, self.weights_gb,
            self.kv_gb_per_mtok, self.reserve_gb_per_gpu, self.shape,
        )

    def needed_gb(self, layout: Layout) -> float:
        """GB per replica needed for weights + minimum KV + reserve."""
        repl = kv_replication(layout.tp, self.shape.num_key_value_heads)
        min_kv = self.min_kv_tokens / 1e6 * self.kv_gb_per_mtok * repl
        return self.weights_gb + min_kv + self.reserve_gb_per_gpu * layout.gpus_per_replica

    def fits(self, layout: Layout) -> bool:
        return self.memory(layout).max_total_tokens >= self.min_kv_tokens

    def with_hw(self, gpus_per_node: int, nnodes: int, gpu_memory_gb: float | None = None) -> "_Ctx":
        return replace(
            self, gpus_per_node=gpus_per_node, nnodes=nnodes,
            gpu_memory_gb=self.gpu_memory_gb if gpu_memory_gb is None else gpu_memory_gb,
        )

    def best_layout(self) -> Layout | None:
        """First valid candidate layout that fits, or ``None``."""
        for lay in candidate_layouts(self.profile, self.gpus_per_node, self.nnodes):
            if not layout_problems(lay, self.shape, self.nnodes, self.total_gpus) and self.fits(lay):
                return lay
        return None


def _alt(hint: str, ctx: _Ctx, lay: Layout) -> dict[str, Any]:
    mem = ctx.memory(lay)
    return {
        "hint": hint,
        "nodes": ctx.nnodes,
        "gpus_per_node": ctx.gpus_per_node,
        "gpu_memory_gb": round(ctx.gpu_memory_gb, 3),
        "tp_size": lay.tp,
        "ep_size": lay.ep,
        "pp_size": lay.pp,
        "dp_size": lay.dp,
        "max_total_tokens": mem.max_total_tokens,
    }


def suggest_alternatives(ctx: _Ctx) -> list[dict[str, Any]]:
    """Hardware/layout changes under which the model fits (for PlanError messages)."""
    alts: list[dict[str, Any]] = []
    mem_label = f"{ctx.gpu_memory_gb:.0f} GB"
    inventory = ctx.same_gpu_hosts is not None  # offer only what this inventory's hosts could take
    max_nodes = min(MAX_SUGGESTED_NODES, ctx.same_gpu_hosts) if inventory else MAX_SUGGESTED_NODES
    if ctx.nnodes == 1 and not inventory:
        for g in NODE_SIZES:
            if g <= ctx.gpus_per_node:
                continue
            c = ctx.with_hw(g, 1)
            lay = c.best_layout()
            if lay:
                alts.append(_alt(f"at least {g} GPUs of {mem_label} on one node ({lay.describe()})", c, lay))
                break
    for k in range(ctx.nnodes + 1, max_nodes + 1):
        c = ctx.with_hw(ctx.gpus_per_node, k)
        lay = c.best_layout()
        if lay:
            alts.append(
                _alt(f"--nodes {k} ({k} x {ctx.gpus_per_node} GPUs of {mem_label}, {lay.describe()})", c, lay)
            )
            break
    # same GPU count, larger GPUs
    for lay in [] if inventory else candidate_layouts(ctx.profile, ctx.gpus_per_node, ctx.nnodes):
        if layout_problems(lay, ctx.shape, ctx.nnodes, ctx.total_gpus):
            continue
        need = ctx.needed_gb(lay) / (lay.gpus_per_replica * ctx.mem_fraction)
        need = math.ceil(need)
        if need > ctx.gpu_memory_gb:
            c = ctx.with_hw(ctx.gpus_per_node, ctx.nnodes, float(need))
            hint = f"{ctx.total_gpus} GPUs with at least {need} GB each ({lay.describe()})"
            alts.append(_alt(hint, c, lay))
        break
    return alts


# --------------------------------------------------------------------------- inputs


def _shape(profile: Profile, hf_config: dict[str, Any] | None, reasoning: list[str]) -> ModelShape:
    """Model shape from the profile, overridden by a real config.json subset if given."""
    values = asdict(profile_shape(profile))
    if hf_config:
        cfg = hf_config.get("text_config") or hf_config
        mapping = {
            "num_layers": ("num_hidden_layers",),
            "num_experts": ("num_local_experts", "n_routed_experts", "num_experts"),
            "num_attention_heads": ("num_attention_heads",),
            "num_key_value_heads": ("num_key_value_heads",),
        }
        for key, names in mapping.items():
            for name in names:
                if cfg.get(name):
                    if int(cfg[name]) != values[key]:
                        reasoning.append(f"{key} {cfg[name]} from config.json (profile said {values[key]})")
                    values[key] = int(cfg[name])
                    break
    return ModelShape(**values)


def _hardware(
    gpu_facts: dict[str, Any] | None,
    gpus_per_node: int | None,
    gpu_memory_gb: float | None,
    reasoning: list[str],
    warnings: list[str],
) -> tuple[int, float, str | None, str | None]:
    """(gpus per node, GB per GPU, GPU name, GPU architecture) from facts and/or arguments."""
    name = arch = None
    count = gpus_per_node
    mem = gpu_memory_gb
    if gpu_facts:
        facts_count = int(gpu_facts.get("gpu_count") or 0)
        gpus = gpu_facts.get("gpus") or []
        mibs = [g["memory_total_mib"] for g in gpus if g.get("memory_total_mib")]
        facts_mem = min(mibs) * 1048576 / 1e9 if mibs else gpu_facts.get("gpu_memory_gb")
        name = gpu_facts.get("gpu_name") or (gpus[0].get("name") if gpus else None)
        arch = gpu_facts.get("architecture") or (gpus[0].get("architecture") if gpus else None)
        if not gpu_facts.get("homogeneous", True):
            warnings.append("GPUs are not identical: planning with the smallest GPU memory")
        if count is None:
            count = facts_count
        elif count > facts_count:
            raise PlanError(f"--gpus {count} but the GPU facts show only {facts_count} GPUs")
        elif count < facts_count:
            warnings.append(f"using {count} of the {facts_count} GPUs on the host")
        if mem is None:
            mem = facts_mem
        if mibs:
            reasoning.append(
                f"GPU facts: {facts_count} x {name} ({min(mibs)} MiB = {facts_mem:.3f} GB decimal), "
                f"architecture {arch}, driver {gpu_facts.get('driver_version')}"
            )
    if not count or count < 1:
        raise PlanError("no GPUs: give GPU facts (nvidia-smi -q -x) or --gpus N --gpu-memory-gb M")
    if not mem or mem <= 0:
        raise PlanError("GPU memory unknown: give GPU facts or --gpu-memory-gb")
    return int(count), float(mem), name, arch


def _pick_variant(profile: Profile, variant: str | None, arch: str | None, warnings: list[str]) -> dict[str, Any]:
    """The explicit variant, else the first one built for the GPU architecture, else the default."""
    if variant:
        return profile.variant(variant)
    variants = profile.get("variants")
    if not arch:
        return profile.variant(None)
    order = [profile.get("default_variant")] + sorted(v for v in variants if v != profile.get("default_variant"))
    for name in order:
        if arch.lower() in [a.lower() for a in variants[name].get("gpu_architectures") or []]:
            return profile.variant(name)
    listing = "; ".join(
        f"{n}: {v['model_id']} on {', '.join(v.get('gpu_architectures') or [])}" for n, v in sorted(variants.items())
    )
    raise PlanError(f"{profile.get('display_name')} has no variant for {arch} GPUs ({listing})")


def _readiness_timeout(profile: Profile, weights_gb: float) -> int:
    lt = profile.get("load_time")
    seconds = max(float(lt["min_s"]), float(lt["base_s"]) + float(lt["s_per_gb"]) * weights_gb)
    return int(math.ceil(seconds / 60.0) * 60)


# --------------------------------------------------------------------------- plan


def _sizes(
    prof: Profile,
    var: dict[str, Any],
    weights_gb: float | None,
    weights_source: str | None,
    kv_gb_per_mtok: float | None,
    reasoning: list[str],
) -> tuple[float, str, float, str]:
    """(weights GB, its source, KV GB per 1M tokens, its source): overrides win over the profile."""
    if weights_gb is not None:
        w_gb, w_src = float(weights_gb), weights_source or "override"
        reasoning.append(f"weights {w_gb:.1f} GB from {w_src} (profile says {float(var['weights_gb']):.1f} GB)")
    else:
        w_gb, w_src = float(var["weights_gb"]), "profile"
        w_key = "variants.%s.weights_gb" % var["name"]
        reasoning.append(f"weights {w_gb:.1f} GB from the profile: {prof.source(w_key)}")
    if kv_gb_per_mtok is not None:
        kv, kv_src = float(kv_gb_per_mtok), "override"
        reasoning.append(f"KV cache {kv:.1f} GB per 1M tokens (override)")
    else:
        kv, kv_src = float(prof.get("kv_gb_per_mtok")), "profile"
        reasoning.append(f"KV cache {kv:.1f} GB per 1M tokens: {prof.source('kv_gb_per_mtok')}")
    if w_gb <= 0:
        raise PlanError(f"invalid override: weights_gb must be > 0 (got {w_gb})")
    if kv <= 0:
        raise PlanError(f"invalid override: kv_gb_per_mtok must be > 0 (got {kv})")
    return w_gb, w_src, kv, kv_src


RECIPE_CHOICES = ("cookbook", "recipe", "none")


def needs_msa_warm(gpu_architecture: str | None, architectures: list[str]) -> bool:
    """M3's MSA kernel (fmha_sm100) is Blackwell-only and JIT-compiled on first use; a multi-GPU
    start with a cold cache can crash a rank (sglang.md §6, production.md): warm it first."""
    return (gpu_architecture or "").lower() == "blackwell" and any("MiniMaxM3" in a for a in architectures)


def recipe_cell(
    prof: Profile, recipe: str, gpu_name: str | None, variant: str, total_gpus: int
) -> dict[str, Any] | None:
    """The profile's ``recipe_matrix.<recipe>`` cell for this variant, GPU name and GPU count.

    A cell matches when its ``variant`` (if any) is the plan's, one of its ``gpu_names`` is a
    substring of the GPU's product name (an empty list matches any GPU) and ``gpus`` equals
    the GPU count. ``none`` never matches."""
    if recipe not in RECIPE_CHOICES:
        raise PlanError(f"recipe must be one of {', '.join(RECIPE_CHOICES)} (got {recipe!r})")
    if recipe == "none":
        return None
    name = (gpu_name or "").upper()
    cells = (prof.get("recipe_matrix") or {}).get(recipe) or []
    for i, cell in enumerate(cells):
        if cell.get("variant") and cell["variant"] != variant:
            continue
        names = [str(n).upper() for n in cell.get("gpu_names") or []]
        if names and not any(n in name for n in names):
            continue
        if int(cell["gpus"]) != total_gpus:
            continue
        key = f"recipe_matrix.{recipe}[{i}]"
        return {**cell, "key": key, "source": prof.source(key)}
    return None


def recipe_args(
    prof: Profile, cell: dict[str, Any], extra_args: list[str] | None, vision: bool
) -> tuple[list[str], dict[str, str], list[str]]:
    """(argv, {flag: source}, flags dropped because the inventory's extra args set them)."""
    extra_flags = {str(a).split("=", 1)[0] for a in extra_args or [] if str(a).startswith("--")}
    argv: list[str] = []
    sources: dict[str, str] = {}
    dropped: list[str] = []
    flags = [(f"{cell['key']}.flags[{j}]", f) for j, f in enumerate(cell.get("flags") or [])]
    if vision:
        flags += [(f"{cell['key']}.vision_flags[{j}]", f) for j, f in enumerate(cell.get("vision_flags") or [])]
    for key, flag in flags:
        arg = str(flag["arg"])
        if arg in extra_flags:
            dropped.append(arg)
            continue
        argv += [arg, str(flag["value"])]
        sources[arg] = prof.source(key)
    return argv, sources, dropped


def recipe_fraction_cell(prof: Profile, recipe: str, variant: str, total_gpus: int) -> dict[str, Any] | None:
    """The active recipe's cell whose ``mem_fraction_static`` applies to this variant on hardware the
    recipe has no cell for: the variant's cell with the same GPU count, else its most careful
    (smallest) fraction; ``None`` when the recipe has no cell for the variant (or is ``none``)."""
    if recipe not in RECIPE_CHOICES or recipe == "none":
        return None
    cells = [(i, c) for i, c in enumerate((prof.get("recipe_matrix") or {}).get(recipe) or [])
             if not c.get("variant") or c["variant"] == variant]
    if not cells:
        return None
    same = [ic for ic in cells if int(ic[1]["gpus"]) == total_gpus]
    i, cell = same[0] if same else min(cells, key=lambda ic: float(ic[1]["mem_fraction_static"]))
    key = f"recipe_matrix.{recipe}[{i}]"
    return {**cell, "key": key, "source": prof.source(key)}


def _mem_fraction(prof: Profile, requested: float | None, reasoning: list[str], warnings: list[str]) -> float:
    """mem_fraction_static: a validated override, else the profile's."""
    if requested is not None:
        frac = float(requested)
        if not 0.0 < frac < 1.0:
            raise PlanError(f"mem_fraction_static must be between 0 and 1 (got {frac})")
        reasoning.append(f"mem_fraction_static {frac} (override)")
    else:
        frac = float(prof.get("mem_fraction_static"))
        reasoning.append(f"mem_fraction_static {frac}: {prof.source('mem_fraction_static')}")
    if frac > 0.92:
        warnings.append(f"mem_fraction_static {frac} leaves little room for activations and CUDA graphs")
    return frac


def _max_context(prof: Profile, hf_config: dict[str, Any] | None, reasoning: list[str]) -> int:
    """The profile's maximum context, capped by config.json's max_position_embeddings if given."""
    max_ctx = int(prof.get("max_context"))
    cfg = hf_config or {}
    cfg_ctx = cfg.get("max_position_embeddings") or (cfg.get("text_config") or {}).get("max_position_embeddings")
    if cfg_ctx and int(cfg_ctx) < max_ctx:
        reasoning.append(f"config.json max_position_embeddings {cfg_ctx} caps the profile's {max_ctx}")
        max_ctx = int(cfg_ctx)
    return max_ctx


def _explain_memory(
    layout: Layout, mem: Memory, mem_gb: float, frac: float, w_gb: float, shape: ModelShape, reasoning: list[str]
) -> None:
    """Reasoning lines for the memory split."""
    reasoning.append(
        f"memory per replica: {layout.gpus_per_replica} GPUs x {mem_gb:.2f} GB x {frac} = {mem.usable_gb:.1f} GB; "
        f"- {w_gb:.1f} GB weights - {mem.reserve_gb:.1f} GB runtime reserve = {mem.kv_budget_gb:.1f} GB KV cache"
    )
    if mem.kv_replication > 1:
        reasoning.append(
            f"tp {layout.tp} > {shape.num_key_value_heads} KV heads: each KV head lives on "
            f"{mem.kv_replication} ranks, KV costs {mem.kv_gb_per_mtok_effective:.0f} GB per 1M tokens"
        )
    reasoning.append(f"KV capacity {mem.max_total_tokens} tokens (max_total_tokens)")


def make_plan(
    *,
    profile: str | Profile | None = None,
    gpu_facts: dict[str, Any] | None = None,
    gpus_per_node: int | None = None,
    gpu_memory_gb: float | None = None,
    nodes: int = 1,
    variant: str | None = None,
    weights_gb: float | None = None,
    weights_source: str | None = None,
    kv_gb_per_mtok: float | None = None,
    mem_fraction_static: float | None = None,
    tp_size: int | None = None,
    ep_size: int | None = None,
    dp_size: int | None = None,
    pp_size: int | None = None,
    context_length: int | None = None,
    hf_config: dict[str, Any] | None = None,
    model_id: str | None = None,
    revision: str | None = None,
    weights_root: str = DEFAULT_WEIGHTS_ROOT,
    model_path: str | None = None,
    served_model_name: str | None = None,
    sglang_version: str = DEFAULT_SGLANG_VERSION,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    node_rank: int = 0,
    dist_init_addr: str | None = None,
    extra_args: list[str] | None = None,
    recipe: str = "cookbook",
    same_gpu_hosts: int | None = None,
    given_by: str = "command line",
    suggest_models: bool = True,
) -> Plan:
    """Compute a :class:`Plan`; raise :class:`PlanError` when no valid plan exists.

    ``gpu_facts`` is the dict from :func:`sgl_deploy.gpu_facts.gpu_facts`; explicit
    ``gpus_per_node`` / ``gpu_memory_gb`` win over it. ``weights_gb`` (e.g. the hub
    listing size) and ``kv_gb_per_mtok`` override the profile. ``hf_config`` (a
    config.json mapping) overrides the profile's model shape and caps the context.
    ``same_gpu_hosts``: hosts with these GPUs in the inventory's run (the role passes it), so a
    refusal offers only alternatives that inventory could take (``None``: any hardware).
    ``given_by``: who set the explicit values (``inventory``: the role, named by variable;
    ``command line``: the CLI, named by flag), for the plan's ``value_origins``.
    """
    given = {"tp_size": tp_size, "ep_size": ep_size, "dp_size": dp_size, "pp_size": pp_size,
             "mem_fraction_static": mem_fraction_static, "context_length": context_length}
    reasoning: list[str] = []
    warnings: list[str] = []
    prof = profile if isinstance(profile, Profile) else load_profile(profile or DEFAULT_PROFILE)
    nnodes = int(nodes or 1)
    if nnodes < 1:
        raise PlanError(f"nodes must be >= 1 (got {nnodes})")
    if not 0 <= int(node_rank) < nnodes:
        raise PlanError(f"node_rank {node_rank} is outside 0..{nnodes - 1}")
    if not 1 <= int(port) <= 65535:
        raise PlanError(f"invalid override: port {port} is outside 1..65535")

    # versions
    min_ver = str(prof.get("min_sglang_version"))
    refused = version_refusal(prof, str(sglang_version))
    if refused:
        raise PlanError.of(refused, [{"hint": f"sglang_version >= {min_ver} (toolkit default {DEFAULT_SGLANG_VERSION})"}])

    # hardware and model
    gpn, mem_gb, gpu_name, arch = _hardware(gpu_facts, gpus_per_node, gpu_memory_gb, reasoning, warnings)
    var = _pick_variant(prof, variant, arch, warnings)
    shape = _shape(prof, hf_config, reasoning)
    reasoning.append(
        f"profile {prof.name}, variant {var['name']}: {var['model_id']} ({var.get('dtype')}) "
        f"for {', '.join(var.get('gpu_architectures') or [])} GPUs"
    )
    if arch is None and gpu_facts is None and not variant:
        reasoning.append("no GPU facts: GPU architecture unknown, using the profile's default variant")

    w_gb, w_src, kv, kv_src = _sizes(prof, var, weights_gb, weights_source, kv_gb_per_mtok, reasoning)
    # recipe matrix: the cell's tp/ep and mem fraction unless the inventory overrides them
    cell = recipe_cell(prof, recipe, gpu_name, var["name"], gpn * nnodes) if nnodes == 1 else None
    layout_override = any(v is not None for v in (tp_size, dp_size, pp_size))
    frac_cell: dict[str, Any] | None = None
    if cell is not None:
        reasoning.append(f"{recipe} cell {cell['cell']}: {cell.get('source')}")
        if not layout_override:
            tp_size = int(cell["tp"])
            ep_size = int(cell["ep"]) if ep_size is None else ep_size
        if mem_fraction_static is None:
            frac = float(cell["mem_fraction_static"])
            reasoning.append(f"mem_fraction_static {frac}: {recipe} cell {cell['cell']}")
        else:
            frac = _mem_fraction(prof, mem_fraction_static, reasoning, warnings)
        r_args, r_sources, dropped = recipe_args(prof, cell, extra_args, bool(prof.get("vision")))
        if dropped:
            reasoning.append(f"{recipe} cell flags {', '.join(dropped)} left out: the inventory's extra args set them")
    else:
        if recipe != "none":
            reasoning.append(
                f"no {recipe} cell for {gpn * nnodes} x {gpu_name or 'unknown GPU'} ({var['name']}): planned flags only"
            )
        # the recipe's fraction for this build on GPUs it has no cell for; with no GPU name (the CLI's
        # --gpus/--gpu-memory-gb) no recipe applies, as no cell can match
        frac_cell = (recipe_fraction_cell(prof, recipe, var["name"], gpn * nnodes)
                     if mem_fraction_static is None and gpu_name else None)
        if frac_cell is not None:
            # the fraction the active recipe uses for this build (a refusal quotes it too)
            frac = float(frac_cell["mem_fraction_static"])
            reasoning.append(f"mem_fraction_static {frac}: the {recipe} recipe's for {var['name']} "
                             f"(cell {frac_cell['cell']}, {frac_cell['source']})")
        else:
            frac = _mem_fraction(prof, mem_fraction_static, reasoning, warnings)
        r_args, r_sources = [], {}

    ctx = _Ctx(
        profile=prof, shape=shape, gpus_per_node=gpn, nnodes=nnodes, gpu_memory_gb=mem_gb,
        mem_fraction=frac, weights_gb=w_gb, kv_gb_per_mtok=kv,
        reserve_gb_per_gpu=float(prof.get("runtime_reserve_gb_per_gpu")),
        min_kv_tokens=int(prof.get("min_kv_tokens")),
        same_gpu_hosts=None if same_gpu_hosts is None else max(1, int(same_gpu_hosts)),
    )
    try:
        layout = _choose_layout(ctx, tp_size, ep_size, dp_size, pp_size, reasoning, warnings,
                                source=f"{recipe} cell" if cell is not None and not layout_override else "override")
    except PlanError as exc:
        if exc.no_fit:
            _offer_smaller_models(exc, prof, var, w_gb, ctx, suggest_models, dict(
                gpu_facts=gpu_facts, gpus_per_node=gpn, gpu_memory_gb=mem_gb, nodes=nnodes, recipe=recipe,
                sglang_version=sglang_version, gpu_architecture=arch))
        raise
    mem = ctx.memory(layout)
    _explain_memory(layout, mem, mem_gb, frac, w_gb, shape, reasoning)

    max_ctx = _max_context(prof, hf_config, reasoning)
    ctx_len = _context_length(context_length, max_ctx, mem.max_total_tokens, reasoning, warnings)
    origins = _value_origins(
        given, given_by, prof, ctx, layout, cell, recipe, layout_override, frac_cell if cell is None else None,
        ctx_len, max_ctx, mem.max_total_tokens,
    )
    for name, origin in origins.items():
        if origin["by"] == "planner" and any(v is not None for v in given.values()):
            reasoning.append(f"{name} {origin['value']} chosen by the planner: {origin['from']}")
    picked = origins["ep_size"]
    if given["tp_size"] is not None and given["ep_size"] is None and cell is not None and int(cell["ep"]) != layout.ep:
        warnings.append(
            f"ep_size {layout.ep} chosen by the planner ({picked['from']}), not the {recipe} cell {cell['cell']}'s "
            f"ep {cell['ep']}: {_given_name('tp_size', given_by)} is set, so the cell's layout is not applied; set "
            f"{_given_name('ep_size', given_by)} to choose"
        )

    # multi-node
    if nnodes > 1:
        reasoning.append(
            f"{nnodes} nodes: the same global --tp-size {layout.tp} on every node, --node-rank 0..{nnodes - 1}; "
            "only rank 0 serves HTTP, probes target it"
        )
        if not dist_init_addr:
            warnings.append(
                "nnodes > 1 but dist_init_addr is not set: set it to <rank-0 address>:<port> on every node"
            )
        safe = MULTINODE_SAFEGUARDS
        reasoning.append(
            f"multi-node safeguards: --watchdog-timeout {safe['watchdog_timeout_s']} (SGLang crashes a rank whose "
            f"forward batch hangs that long), --dist-timeout {safe['dist_timeout_s']} (torch's NCCL collective "
            "timeout, made explicit), " + ", ".join(f"{k}={v}" for k, v in safe["nccl_environment"].items())
            + " (torch tears a rank down on an NCCL error or a stuck NCCL watchdog); a rank that hangs anyway "
            "is the group watchdog's (sglang#3099)"
        )

    served = served_model_name or prof.get("served_model_name")
    refused = served_name_refusal(str(served))
    if refused:
        raise PlanError.of(refused)
    mid = model_id or var["model_id"]
    rev = revision or var.get("revision") or "master"
    path = model_path or weights_dir(weights_root, mid, rev)
    timeout = _readiness_timeout(prof, w_gb)
    reasoning.append(f"readiness deadline {timeout} s from the load-time model: {prof.source('load_time')}")
    other_variants = tuple(f"variants.{v}." for v in prof.get("variants") if v != var["name"])
    unconfirmed = [u for u in prof.unconfirmed if not u.startswith(other_variants)]
    if unconfirmed:
        reasoning.append("profile numbers still unconfirmed: " + ", ".join(unconfirmed))

    return Plan(
        model_profile=prof.name,
        model_id=mid,
        model_revision=rev,
        model_path=path,
        served_model_name=str(served),
        sglang_version=str(sglang_version),
        gpus_per_node=gpn,
        gpu_memory_gb=mem_gb,
        nnodes=nnodes,
        node_rank=int(node_rank),
        dist_init_addr=dist_init_addr,
        tp_size=layout.tp,
        ep_size=layout.ep,
        dp_size=layout.dp,
        pp_size=layout.pp,
        mem_fraction_static=frac,
        context_length=ctx_len,
        max_total_tokens=mem.max_total_tokens,
        weights_gb=w_gb,
        weights_source=w_src,
        parsers={
            "tool_call": list(prof.get("parsers.tool_call")),
            "reasoning": list(prof.get("parsers.reasoning")),
        },
        readiness_timeout_s=timeout,
        watchdog_timeout_s=MULTINODE_SAFEGUARDS["watchdog_timeout_s"] if nnodes > 1 else None,
        dist_timeout_s=MULTINODE_SAFEGUARDS["dist_timeout_s"] if nnodes > 1 else None,
        nccl_environment=dict(MULTINODE_SAFEGUARDS["nccl_environment"]) if nnodes > 1 else {},
        host=host,
        port=int(port),
        extra_args=[str(a) for a in (extra_args or [])],
        reasoning=reasoning,
        warnings=warnings,
        architectures=list(prof.get("architectures") or []),
        model_variant=var["name"],
        model_dtype=var.get("dtype"),
        gpu_name=gpu_name,
        gpu_architecture=arch,
        total_gpus=ctx.total_gpus,
        layout_source=layout.source,
        kv_gb_per_mtok=kv,
        kv_source=kv_src,
        kv_replication=mem.kv_replication,
        usable_gb=round(mem.usable_gb, 3),
        kv_budget_gb=round(mem.kv_budget_gb, 3),
        max_context=max_ctx,
        max_output=prof.get("max_output"),
        min_sglang_version=min_ver,
        vision=bool(prof.get("vision")),
        sampling=dict(prof.get("sampling") or {}),
        unconfirmed=unconfirmed,
        recipe=recipe,
        recipe_cell=cell["cell"] if cell is not None else None,
        recipe_args=r_args,
        recipe_sources=r_sources,
        msa_jit_warm=needs_msa_warm(arch, list(prof.get("architectures") or [])),
        value_origins=origins,
    )


def _given_name(name: str, given_by: str) -> str:
    """How the caller names an explicit value: the role's variable or the CLI's flag."""
    return ROLE_VARIABLES[name] if given_by == "inventory" else "--" + name.replace("_", "-")


def _value_origins(
    given: dict[str, Any], given_by: str, prof: Profile, ctx: _Ctx, layout: Layout, cell: dict[str, Any] | None,
    recipe: str, layout_override: bool, frac_cell: dict[str, Any] | None, ctx_len: int, max_ctx: int, capacity: int,
) -> dict[str, dict[str, Any]]:
    """Where each planned value came from: ``{by: inventory|command line, name}`` when the caller set it,
    ``{by: planner, from: <recipe cell, profile entry or rule>}`` when the planner chose it."""
    values = {"tp_size": layout.tp, "ep_size": layout.ep, "dp_size": layout.dp, "pp_size": layout.pp,
              "mem_fraction_static": ctx.mem_fraction, "context_length": ctx_len}
    total = ctx.total_gpus
    cell_text = f"{recipe} cell {cell['cell']} ({cell['key']})" if cell is not None else ""
    rec_i = _recipe_layout_index(prof, layout.tp, total, ctx.nnodes)
    rec_text = (f"the profile's recipe layout for {total} GPUs ({prof.name} recipe_layouts[{rec_i}])"
                if rec_i is not None else "")

    def layout_from(name: str) -> str:
        if cell is not None and not layout_override and name in ("tp_size", "ep_size"):
            return cell_text
        if layout.source == "recipe" and name in ("tp_size", "ep_size"):
            return rec_text
        if name == "ep_size":
            if layout_override and rec_i is not None:
                return rec_text
            return f"1: no recipe layout for tp {layout.tp} on {total} GPUs"
        if name == "tp_size":
            if given["pp_size"] is not None or given["dp_size"] is not None:
                return f"the {total} GPUs / (pp {layout.pp} x dp {layout.dp})"
            return "the first valid layout that fits (" + (
                "all GPUs in one tensor-parallel group)" if layout.pp == 1 else "tensor parallel inside, pipeline across)")
        if name == "pp_size" and layout.pp > 1:
            return f"the first valid tp x pp split of the {total} GPUs that fits"
        return "1, the default"

    out: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if given[name] is not None:
            out[name] = {"value": value, "by": given_by, "name": _given_name(name, given_by)}
        elif name == "mem_fraction_static":
            if cell is not None:
                src = cell_text
            elif frac_cell is not None:
                src = f"the {recipe} recipe's fraction for this model build ({recipe} cell {frac_cell['cell']}, {frac_cell['key']})"
            else:
                src = f"the profile ({prof.name} mem_fraction_static)"
            out[name] = {"value": value, "by": "planner", "from": src}
        elif name == "context_length":
            src = "the model maximum" if ctx_len >= max_ctx else f"the KV capacity (below the model maximum {max_ctx})"
            out[name] = {"value": value, "by": "planner", "from": src}
        else:
            out[name] = {"value": value, "by": "planner", "from": layout_from(name)}
    return out


def _offer_smaller_models(
    exc: PlanError, prof: Profile, var: dict[str, Any], weights_gb: float, ctx: _Ctx, enabled: bool,
    hardware: dict[str, Any],
) -> None:
    """Add to a does-not-fit refusal the smaller models (other variants of the profile, other shipped
    profiles) that fit the same hardware, planned the same way; set the fix for this inventory."""
    offers: list[dict[str, Any]] = []
    # builds for these GPUs: the host's architecture, else the architectures of the variant asked for
    arch = hardware.pop("gpu_architecture", None)
    archs = {arch.lower()} if arch else {a.lower() for a in var.get("gpu_architectures") or []}
    if enabled:
        for name in [prof.name] + [n for n in available_profiles() if n != prof.name]:
            try:
                other = prof if name == prof.name else load_profile(name)
            except (ProfileError, OSError, ValueError):
                continue
            for vname, vdata in sorted((other.get("variants") or {}).items()):
                if name == prof.name and vname == var["name"]:
                    continue
                built_for = {a.lower() for a in vdata.get("gpu_architectures") or []}
                if archs and built_for and not archs & built_for:
                    continue
                try:
                    if float(other.variant(vname)["weights_gb"]) >= weights_gb:
                        continue
                    alt = make_plan(profile=other, variant=vname, suggest_models=False, **hardware)
                except (PlanError, ProfileError, KeyError, TypeError, ValueError):
                    continue
                offers.append({
                    "hint": f"--profile {other.name} --variant {vname} --model-id {alt.model_id} "
                            f"({other.get('display_name')}, {alt.weights_gb:.0f} GB weights: tp {alt.tp_size} "
                            f"ep {alt.ep_size}, {alt.max_total_tokens} tokens of KV cache)",
                    "profile": other.name, "variant": vname, "model_id": alt.model_id,
                    "tp_size": alt.tp_size, "ep_size": alt.ep_size, "max_total_tokens": alt.max_total_tokens,
                })
    if offers:
        exc.message = exc.message.rstrip(".") + ". A smaller model fits: " + "; ".join(o["hint"] for o in offers) + "."
        exc.alternatives = exc.alternatives + offers
        exc.args = (exc.message,)
    if ctx.same_gpu_hosts is not None:
        exc.fix = ("take one of the alternatives named above, or use hosts with more GPU memory"
                   if exc.alternatives else
                   "use hosts with more GPU memory, or add hosts with these GPUs to the inventory and put them in "
                   "one replica group (sglang_replicas)")


def _shortfall_error(ctx: _Ctx, layout: Layout, prefix: str = "") -> PlanError:
    """PlanError naming the GB shortfall of ``layout`` and the alternatives that fit."""
    mem = ctx.memory(layout)
    need = ctx.needed_gb(layout)
    short = need - mem.usable_gb
    min_kv_gb = need - ctx.weights_gb - mem.reserve_gb
    alts = suggest_alternatives(ctx)
    hw = f"{ctx.gpus_per_node} x {ctx.gpu_memory_gb:.1f} GB GPUs" + (f" x {ctx.nnodes} nodes" if ctx.nnodes > 1 else "")
    msg = (
        f"{prefix}{ctx.profile.get('display_name')} does not fit on {hw} ({layout.describe()}): "
        f"at mem_fraction_static {ctx.mem_fraction} they give {mem.usable_gb:.1f} GB for weights + KV cache, "
        f"it needs {need:.1f} GB ({ctx.weights_gb:.1f} GB weights + {min_kv_gb:.1f} GB KV for "
        f"{ctx.min_kv_tokens} tokens + {mem.reserve_gb:.1f} GB runtime reserve): short by {short:.1f} GB."
    )
    if alts:
        msg += " Would work: " + "; ".join(a["hint"] for a in alts) + "."
    err = PlanError(msg, alts)
    err.no_fit = True
    return err


def _valid_alternatives(ctx: _Ctx, limit: int = 4) -> list[dict[str, Any]]:
    """The first ``limit`` valid, fitting layouts on the given hardware (for refused overrides)."""
    out: list[dict[str, Any]] = []
    for lay in candidate_layouts(ctx.profile, ctx.gpus_per_node, ctx.nnodes):
        if not layout_problems(lay, ctx.shape, ctx.nnodes, ctx.total_gpus) and ctx.fits(lay):
            flags = f"--tp-size {lay.tp} --ep-size {lay.ep}" + (f" --pp-size {lay.pp}" if lay.pp > 1 else "")
            out.append(_alt(flags, ctx, lay))
        if len(out) >= limit:
            break
    return out


def _override_error(message: str, ctx: _Ctx, refusals: list[Refusal] | None = None) -> PlanError:
    """PlanError for a refused layout override, listing the layouts that are valid and fit here;
    the fix is the first broken rule's (the inventory validation gives the same one)."""
    alts = _valid_alternatives(ctx)
    if alts:
        message += ". Valid here: " + "; ".join(a["hint"] for a in alts) + "."
    return PlanError(message, alts, fix=refusals[0].fix if refusals else None)


def _choose_layout(
    ctx: _Ctx,
    tp: int | None,
    ep: int | None,
    dp: int | None,
    pp: int | None,
    reasoning: list[str],
    warnings: list[str],
    source: str = "override",
) -> Layout:
    """The layout: overrides (or a recipe cell's tp/ep, ``source``) validated, else the first
    valid candidate that fits."""
    total = ctx.total_gpus
    if any(v is not None for v in (tp, pp, dp)):
        dp_v = int(dp or 1)
        pp_v = int(pp or 1)
        if tp is None:
            # the model's rules first (the inventory validation gives the same refusal without GPUs)
            early = layout_refusals(ctx.shape, None, None if ep is None else int(ep), dp_v, pp_v, ctx.nnodes)
            if early:
                raise _override_error("invalid override: " + "; ".join(r.message for r in early), ctx, early)
            if total % (pp_v * dp_v):
                raise _override_error(
                    f"invalid override: pp_size {pp_v} x dp_size {dp_v} does not divide the {total} GPUs", ctx
                )
            tp_v = total // (pp_v * dp_v)
        else:
            tp_v = int(tp)
        ep_v = int(ep) if ep is not None else (_recipe_ep(ctx.profile, tp_v, total, ctx.nnodes) or 1)
        layout = Layout(tp=tp_v, ep=ep_v, dp=dp_v, pp=pp_v, source=source)
    else:
        layout = None
        first_valid = None
        for cand in candidate_layouts(ctx.profile, ctx.gpus_per_node, ctx.nnodes):
            if ep is not None:
                cand = replace(cand, ep=int(ep), source="override")
            if layout_problems(cand, ctx.shape, ctx.nnodes, total):
                continue
            first_valid = first_valid or cand
            if ctx.fits(cand):
                layout = cand
                break
        if layout is None and first_valid is not None:
            raise _shortfall_error(ctx, first_valid)
        if layout is None:
            base = candidate_layouts(ctx.profile, ctx.gpus_per_node, ctx.nnodes)
            if ep is not None and base:
                bad = replace(base[0], ep=int(ep))
                refusals = layout_refusal_list(bad, ctx.shape, ctx.nnodes, total)
                raise _override_error(
                    f"invalid override: ep_size {ep} with {bad.describe()}: " + "; ".join(r.message for r in refusals),
                    ctx, refusals,
                )
            err = PlanError(
                f"no valid tp/pp split of {total} GPUs for {ctx.profile.get('display_name')} "
                f"({ctx.shape.num_attention_heads} attention heads, {ctx.shape.num_key_value_heads} KV heads, "
                f"{ctx.shape.num_experts} experts)",
                suggest_alternatives(ctx),
            )
            err.no_fit = True
            raise err
    refusals = layout_refusal_list(layout, ctx.shape, ctx.nnodes, total)
    if refusals:
        raise _override_error(
            f"invalid override ({layout.describe()}, nnodes {ctx.nnodes}): " + "; ".join(r.message for r in refusals),
            ctx, refusals,
        )
    if not ctx.fits(layout):
        raise _shortfall_error(ctx, layout, prefix="override: " if layout.source == "override" else "")
    _explain_layout(ctx, layout, reasoning, warnings)
    return layout


def _explain_layout(ctx: _Ctx, layout: Layout, reasoning: list[str], warnings: list[str]) -> None:
    """Reasoning lines for the chosen layout."""
    total = ctx.total_gpus
    recipe_counts = sorted(int(r["gpus"]) for r in ctx.profile.get("recipe_layouts") or [])
    if layout.source == "recipe":
        recipes = ctx.profile.get("recipe_layouts") or []
        idx = next(i for i, r in enumerate(recipes) if int(r["gpus"]) == layout.gpus and int(r["tp"]) == layout.tp)
        reasoning.append(
            f"layout {layout.describe()}: recipe layout for {layout.gpus} GPUs "
            f"({ctx.profile.source(f'recipe_layouts[{idx}]')})"
        )
    elif layout.source == "override":
        reasoning.append(f"layout {layout.describe()}: override, validated against the model and SGLang rules")
    elif layout.source.endswith(" cell"):
        reasoning.append(f"layout {layout.describe()}: {layout.source}, validated against the model and SGLang rules")
    else:
        why = "all GPUs in one tensor-parallel group" if layout.pp == 1 else "tensor parallel inside, pipeline across"
        reasoning.append(
            f"layout {layout.describe()}: {why}; tp divides {ctx.shape.num_attention_heads} attention heads"
        )
        if ctx.nnodes == 1 and total not in recipe_counts:
            reasoning.append(
                f"{total} GPUs is not a recipe GPU count ({', '.join(map(str, recipe_counts))}): planned from the "
                "memory and split rules alone"
            )
    if layout.gpus < total:
        warnings.append(
            f"layout uses {layout.gpus} of {total} GPUs (SGLang takes GPUs 0..{layout.gpus - 1} on each node; "
            "set CUDA_VISIBLE_DEVICES to choose others)"
        )
    if layout.pp > 1:
        warnings.append(
            f"pipeline parallelism (pp {layout.pp}) for {ctx.profile.get('display_name')} is not verified in "
            "SGLang's docs or recipes: check the launch on real hardware"
        )
    if ctx.nnodes > 1 and layout.pp == 1:
        alt = Layout(tp=ctx.gpus_per_node, pp=ctx.nnodes)
        if not layout_problems(alt, ctx.shape, ctx.nnodes, total):
            alt_tokens = ctx.memory(alt).max_total_tokens
            reasoning.append(
                f"alternative: --tp-size {alt.tp} --pp-size {alt.pp} keeps tensor parallelism inside each node "
                f"(KV capacity {alt_tokens} tokens)"
            )


def _context_length(
    requested: int | None, max_ctx: int, capacity: int, reasoning: list[str], warnings: list[str]
) -> int:
    """context_length = min(model max, KV capacity), or a validated override."""
    if requested is not None:
        req = int(requested)
        if req < 1:
            raise PlanError(f"context_length must be >= 1 (got {req})")
        refused = context_refusal(req, max_ctx)
        if refused:
            raise PlanError.of(refused)
        if req > capacity:
            raise PlanError(
                f"invalid override: context_length {req} exceeds the KV cache capacity of {capacity} tokens "
                "(a single request that long could never be scheduled)"
            )
        reasoning.append(f"context_length {req} (override)")
        return req
    if capacity < max_ctx:
        warnings.append(
            f"context_length capped at the KV capacity {capacity} tokens (model maximum {max_ctx})"
        )
        reasoning.append(f"context_length {capacity}: KV capacity, below the model maximum {max_ctx}")
        return capacity
    reasoning.append(f"context_length {max_ctx}: the model maximum (KV capacity {capacity} tokens)")
    return max_ctx


def profile_model_id(profile: str | None, variant: str | None = None, gpu_facts: dict[str, Any] | None = None) -> str:
    """Hub id of the profile variant the planner would pick for these GPUs (before planning)."""
    prof = load_profile(profile)
    arch = (gpu_facts or {}).get("architecture") or next(
        (g.get("architecture") for g in (gpu_facts or {}).get("gpus", [])), None)
    return _pick_variant(prof, variant, arch, [])["model_id"]


def plan(**kwargs: Any) -> dict[str, Any]:
    """:func:`make_plan` as a plain dict (the ``sglang_plan_result`` fact)."""
    return plan_to_dict(make_plan(**kwargs))


# --------------------------------------------------------------------------- Ansible wording

# Why a plan was refused -> the fix that speaks to that cause (first match wins). Only a memory
# shortfall suggests other hosts; a bad value names its variable.
_REFUSAL_FIXES: tuple[tuple[str, str], ...] = (
    (r"does not fit|short by|no valid tp/pp split", "use hosts with more GPU memory, add hosts to a replica group "
                                                    "(sglang_replicas), or pick a smaller variant (sglang_plan_variant)"),
    (r"needs SGLang >=", "set sglang_plan_sglang_version to the version named above or newer "
                         "(sglang_install_version follows it)"),
    (r"has no variant for|has no variant ", "set sglang_plan_variant to a variant listed above, or use GPUs that "
                                           "variant is built for (sglang_plan_model_profile picks the model)"),
    (r"model profile|^profile |profile file|invalid YAML", "set sglang_plan_model_profile to a shipped profile (minimax-m3, "
                                              "minimax-m2.5, minimax-m2.7) or the path of a valid profile file"),
    (r"mem_fraction_static", "set sglang_plan_mem_fraction_static between 0 and 1 (e.g. 0.85), or remove it to use "
                             "the profile's"),
    (r"weights_gb", "set sglang_plan_weights_gb to the weights size in GB (> 0), or remove it to use the hub's size"),
    (r"kv_gb_per_mtok", "set sglang_plan_kv_gb_per_mtok to a value > 0, or remove it to use the profile's"),
    (r"served_model_name", "set sglang_plan_served_model_name without ':'"),
    (r"sglang_plan_port \d", "set sglang_plan_port between 1 and 65535"),
    (r"context_length", "set sglang_plan_context_length to a value the model supports, or remove it"),
    (r"no GPUs|GPU memory unknown|--gpus", "check the host's GPUs (the gpu_preflight role's facts): the plan needs "
                                           "the GPU count and memory"),
    (r"invalid override", "set the sglang_plan_* value named above to a valid one (the valid layouts are listed "
                          "where they apply) or remove it so the planner decides"),
)


def refusal_message(host: str, message: str, fix: str | None = None) -> str:
    """A planner refusal as the sglang_plan role prints it: host, the reason in inventory words and
    the fix that fits the cause (the rule's own ``fix`` when it has one; never "more GPU memory" for
    a bad value)."""
    text = role_message(str(message)).rstrip(".")
    fix = fix or next((f for pattern, f in _REFUSAL_FIXES if re.search(pattern, text)),
                      "change the sglang_plan_* value named above, or remove it so the planner decides")
    kind = "no deployment plan fits this host" if re.search(r"does not fit|short by|no valid tp/pp split", text) \
        else "the planner refuses an inventory value"
    return f"{host}: {kind} ({text}). Fix: {fix}."


def gpu_kind(gpu_facts: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What makes two hosts interchangeable for a plan: GPU name, count and (smallest) memory."""
    if not gpu_facts:
        return None
    gpus = gpu_facts.get("gpus") or []
    mibs = [g.get("memory_total_mib") for g in gpus if g.get("memory_total_mib")]
    name = gpu_facts.get("gpu_name") or (gpus[0].get("name") if gpus else None)
    return (name, int(gpu_facts.get("gpu_count") or len(gpus)), min(mibs) if mibs else gpu_facts.get("gpu_memory_gb"))


def same_gpu_hosts(gpu_facts: dict[str, Any] | None, fleet_facts: list[Any]) -> int:
    """How many of ``fleet_facts`` (the GPU facts of the run's hosts) have the GPUs of ``gpu_facts``
    (at least 1: this host): the replica groups a refusal may offer."""
    kind = gpu_kind(gpu_facts)
    return max(1, sum(1 for f in fleet_facts or [] if isinstance(f, Mapping) and kind and gpu_kind(dict(f)) == kind))


def plan_attempt(inventory_host: str, /, **kwargs: Any) -> dict[str, Any]:
    """``{"plan": <plan dict>, "error": None}`` or ``{"plan": None, "error": <refusal_message>}``: the
    role fails with the message in a task of its own, so no Ansible internals come before it. The
    values it is given come from the inventory (``given_by``)."""
    kwargs.setdefault("given_by", "inventory")
    try:
        return {"plan": plan(**kwargs), "error": None}
    except PlanError as exc:
        return {"plan": None, "error": refusal_message(inventory_host, exc.message, exc.fix)}
    except (ProfileError, TypeError, ValueError) as exc:
        return {"plan": None, "error": refusal_message(inventory_host, str(exc))}


# --------------------------------------------------------------------------- CLI


def format_plan(p: dict[str, Any]) -> str:
    """A readable table of the plan."""
    rows = [
        ("model", f"{p['model_id']}@{p['model_revision']} (profile {p['model_profile']}, {p['model_variant']})"),
        ("model path", p["model_path"]),
        ("served name", p["served_model_name"]),
        ("hardware", f"{p['nnodes']} node(s) x {p['gpus_per_node']} x {p['gpu_memory_gb']:.2f} GB"
         + (f" ({p['gpu_name']})" if p.get("gpu_name") else "")),
        ("layout", f"tp {p['tp_size']}  ep {p['ep_size']}  dp {p['dp_size']}  pp {p['pp_size']}  "
                   f"({p['layout_source']})"),
        ("memory", f"usable {p['usable_gb']:.1f} GB, weights {p['weights_gb']:.1f} GB ({p['weights_source']}), "
         f"KV {p['kv_budget_gb']:.1f} GB"),
        ("mem fraction", str(p["mem_fraction_static"])),
        ("KV capacity", f"{p['max_total_tokens']} tokens"),
        ("context length", str(p["context_length"])),
        ("parsers", f"tool {p['parsers']['tool_call']}, reasoning {p['parsers']['reasoning']}"),
        ("recipe", f"{p.get('recipe')} cell {p['recipe_cell']}: {' '.join(p.get('recipe_args') or []) or 'no extra flags'}"
         if p.get("recipe_cell") else f"{p.get('recipe')}: no cell, planned flags only"),
        ("readiness", f"{p['readiness_timeout_s']} s"),
        ("sglang", p["sglang_version"]),
    ]
    for i, (name, origin) in enumerate((p.get("value_origins") or {}).items()):
        rows.append(("values" if i == 0 else "", f"{name} {origin.get('value')}: " + (
            f"chosen by the planner: {origin.get('from')}" if origin.get("by") == "planner"
            else f"set {'in the' if origin.get('by') == 'inventory' else 'on the'} {origin.get('by')} "
                 f"({origin.get('name')})")))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if p.get("reasoning"):
        lines.append("reasoning:")
        lines += [f"  - {r}" for r in p["reasoning"]]
    if p.get("warnings"):
        lines.append("warnings:")
        lines += [f"  ! {w}" for w in p["warnings"]]
    return "\n".join(lines)


def _load_facts(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.gpu_facts:
        return json.loads(Path(args.gpu_facts).read_text(encoding="utf-8"))
    if args.nvidia_smi_xml:
        from sgl_deploy.gpu_facts import gpu_facts, load_text

        return gpu_facts(load_text(args.nvidia_smi_xml), load_text(args.topo) if args.topo else None)
    return None


def _cmd_plan(args: argparse.Namespace) -> int:
    try:
        facts = _load_facts(args)
        if facts is None and (args.gpus is None or args.gpu_memory_gb is None):
            raise PlanError("give --gpu-facts FILE, --nvidia-smi-xml FILE, or both --gpus N and --gpu-memory-gb M")
        result = plan(
            profile=args.profile,
            gpu_facts=facts,
            gpus_per_node=args.gpus,
            gpu_memory_gb=args.gpu_memory_gb,
            nodes=args.nodes,
            variant=args.variant,
            weights_gb=args.weights_gb,
            kv_gb_per_mtok=args.kv_gb_per_mtok,
            mem_fraction_static=args.mem_fraction_static,
            tp_size=args.tp_size,
            ep_size=args.ep_size,
            dp_size=args.dp_size,
            pp_size=args.pp_size,
            context_length=args.context_length,
            model_id=args.model_id,
            revision=args.revision,
            weights_root=args.weights_root,
            served_model_name=args.served_model_name,
            sglang_version=args.sglang_version,
            host=args.host,
            port=args.port,
            node_rank=args.node_rank,
            dist_init_addr=args.dist_init_addr,
            extra_args=args.extra_arg,
            recipe=args.recipe,
        )
    except PlanError as exc:
        print(f"sgl-deploy plan: {exc.message}", file=sys.stderr)
        if args.json:
            print(json.dumps(exc.to_dict(), indent=2))
        return 2
    except (ProfileError, OSError, ValueError) as exc:
        print(f"sgl-deploy plan: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(exc), "alternatives": []}, indent=2))
        return 2
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``plan`` verb."""
    p = subparsers.add_parser(
        "plan",
        help="plan tp/ep/dp/pp, memory, context and parsers for a model on given GPUs",
        description="Compute the deployment plan (the sglang_plan_result fact). Exit 2 when the "
        "model does not fit or an override is invalid; --json then prints {error, alternatives}.",
    )
    src = p.add_argument_group("GPUs (facts, or count and size)")
    src.add_argument("--gpu-facts", metavar="FILE.json", help="JSON from `sgl-deploy gpu-facts --json`")
    src.add_argument("--nvidia-smi-xml", metavar="FILE", help="nvidia-smi -q -x output (raw or capture)")
    src.add_argument("--topo", metavar="FILE", help="nvidia-smi topo -m output (with --nvidia-smi-xml)")
    src.add_argument("--gpus", type=int, metavar="N", help="GPUs per node (wins over the facts)")
    src.add_argument("--gpu-memory-gb", type=float, metavar="M", help="GB (decimal) per GPU")
    p.add_argument(
        "--profile", default=DEFAULT_PROFILE, help=f"model profile name or YAML path (default {DEFAULT_PROFILE})"
    )
    p.add_argument("--variant", help="profile variant (default: by GPU architecture)")
    p.add_argument("--weights-gb", type=float, help="weights size in GB (e.g. the hub listing); overrides the profile")
    p.add_argument("--kv-gb-per-mtok", type=float, help="KV cache GB per 1M tokens; overrides the profile")
    p.add_argument("--mem-fraction-static", type=float)
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--tp-size", type=int)
    p.add_argument("--ep-size", type=int)
    p.add_argument("--dp-size", type=int)
    p.add_argument("--pp-size", type=int)
    p.add_argument("--context-length", type=int)
    p.add_argument("--model-id")
    p.add_argument("--revision")
    p.add_argument("--weights-root", default=DEFAULT_WEIGHTS_ROOT)
    p.add_argument("--served-model-name")
    p.add_argument("--sglang-version", default=DEFAULT_SGLANG_VERSION)
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--dist-init-addr", help="host:port of node rank 0 (multi-node)")
    p.add_argument("--extra-arg", action="append", default=[], metavar="ARG", help="extra SGLang argument (repeatable)")
    p.add_argument("--recipe", choices=RECIPE_CHOICES, default="cookbook",
                   help="recipe matrix cells to follow: the cookbook's, the upstream recipe's, or none "
                        "(planned flags only); default cookbook")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_cmd_plan)
