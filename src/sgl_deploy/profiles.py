"""Model profiles: one YAML file per model in ``sgl_deploy/profiles/``.

A profile file keeps every number next to its ``source:``: either as a leaf mapping
``{value: 220, source: "...", confirmed: false}`` or as a mapping of several numbers
with one ``source`` (``{gpus: 8, tp: 8, ep: 8, source: "..."}``). :func:`load_profile`
checks that rule and the required keys, then returns a :class:`Profile` whose ``data``
has the leaf mappings collapsed to their values and whose ``sources`` maps dotted keys
to their source text (``confirmed`` flags in ``unconfirmed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sgl_deploy.errors import SglDeployError

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = "minimax-m3"

_LEAF_KEYS = {"value", "source", "confirmed", "note"}

REQUIRED_KEYS: tuple[str, ...] = (
    "name",
    "display_name",
    "served_model_name",
    "architectures",
    "vision",
    "default_variant",
    "variants",
    "kv_gb_per_mtok",
    "max_context",
    "min_kv_tokens",
    "min_sglang_version",
    "parsers.tool_call",
    "parsers.reasoning",
    "sampling",
    "model_config.num_layers",
    "model_config.num_experts",
    "model_config.num_attention_heads",
    "model_config.num_key_value_heads",
    "recipe_layouts",
    "mem_fraction_static",
    "runtime_reserve_gb_per_gpu",
    "load_time.base_s",
    "load_time.s_per_gb",
    "load_time.min_s",
)
REQUIRED_VARIANT_KEYS: tuple[str, ...] = ("model_id", "revision", "gpu_architectures", "weights_gb")


class ProfileError(SglDeployError, ValueError):
    """A profile is missing, unreadable or malformed."""


@dataclass
class Profile:
    """A loaded model profile: collapsed values, their sources, and where it came from."""

    name: str
    data: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    unconfirmed: list[str] = field(default_factory=list)
    path: str = ""

    def get(self, dotted: str, default: Any = None) -> Any:
        """Value at a dotted key (``"model_config.num_experts"``), or ``default``."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def source(self, dotted: str) -> str:
        """Source text for a dotted key (nearest enclosing source), ``""`` if none."""
        parts = dotted.split(".")
        while parts:
            key = ".".join(parts)
            if key in self.sources:
                return self.sources[key]
            parts.pop()
        return ""

    def variant(self, name: str | None = None) -> dict[str, Any]:
        """The named (or default) variant, with its name under ``"name"``."""
        variants = self.data["variants"]
        chosen = name or self.data["default_variant"]
        if chosen not in variants:
            raise ProfileError(
                f"profile {self.name!r} has no variant {chosen!r}; variants: {', '.join(sorted(variants))}"
            )
        return {"name": chosen, **variants[chosen]}


def available_profiles() -> list[str]:
    """Names of the profiles shipped in the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yml"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_sources(node: Any, path: str, errors: list[str], covered: bool = False) -> None:
    """Every mapping holding a number must hold a ``source`` too.

    ``covered`` is true for the direct children of a mapping that has a ``source``.
    """
    if isinstance(node, dict):
        has_source = bool(str(node.get("source") or "").strip())
        has_number = any(_is_number(v) for v in node.values()) or (
            "value" in node and not isinstance(node.get("value"), (dict, list))
        )
        if has_number and not has_source:
            errors.append(f"{path or '<root>'}: numbers without a `source:`")
        for key, value in node.items():
            _check_sources(value, f"{path}.{key}" if path else str(key), errors, has_source)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_sources(item, f"{path}[{i}]", errors, covered)
    elif _is_number(node) and not covered:
        errors.append(f"{path}: bare number {node!r} (wrap it as {{value: ..., source: ...}})")


def _collapse(node: Any, path: str, sources: dict[str, str], unconfirmed: list[str]) -> Any:
    """Replace ``{value, source, ...}`` leaves by their value; record sources."""
    if isinstance(node, dict):
        if "value" in node and set(node) <= _LEAF_KEYS:
            if node.get("source"):
                sources[path] = str(node["source"])
            if node.get("confirmed") is False:
                unconfirmed.append(path)
            return node["value"]
        if node.get("source") and path:
            sources[path] = str(node["source"])
        if node.get("confirmed") is False and path:
            unconfirmed.append(path)
        return {
            k: _collapse(v, f"{path}.{k}" if path else str(k), sources, unconfirmed)
            for k, v in node.items()
            if not (path and k in ("source", "confirmed"))
        }
    if isinstance(node, list):
        return [_collapse(v, f"{path}[{i}]", sources, unconfirmed) for i, v in enumerate(node)]
    return node


def _has(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def validate_profile(raw: dict[str, Any], origin: str) -> list[str]:
    """Problems with a raw (uncollapsed) profile mapping; empty list = valid."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        return [f"{origin}: top level must be a mapping"]
    errors += [f"missing key `{key}`" for key in REQUIRED_KEYS if not _has(raw, key)]
    variants = raw.get("variants") or {}
    if not isinstance(variants, dict) or not variants:
        errors.append("`variants` must be a non-empty mapping")
        variants = {}
    for vname, variant in variants.items():
        for key in REQUIRED_VARIANT_KEYS:
            if not isinstance(variant, dict) or key not in variant:
                errors.append(f"variant `{vname}` is missing `{key}`")
    if raw.get("default_variant") not in variants:
        errors.append(f"default_variant {raw.get('default_variant')!r} is not one of the variants")
    for i, layout in enumerate(raw.get("recipe_layouts") or []):
        if not isinstance(layout, dict) or not {"gpus", "tp", "ep"} <= set(layout):
            errors.append(f"recipe_layouts[{i}] needs gpus, tp, ep")
    served = str(raw.get("served_model_name", ""))
    if ":" in served:
        errors.append("served_model_name must not contain ':' (SGLang reserves it for LoRA adapters)")
    _check_sources(raw, "", errors)
    return errors


def _resolve_path(name_or_path: str) -> Path:
    """A profile name (``minimax-m3``) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yml", ".yaml") or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        raise ProfileError(f"profile file {name_or_path} not found")
    shipped = PROFILE_DIR / f"{name_or_path}.yml"
    if shipped.is_file():
        return shipped
    raise ProfileError(
        f"unknown model profile {name_or_path!r}; available: {', '.join(available_profiles())} "
        "(or give a path to a profile YAML file)"
    )


def load_profile(name_or_path: str | None = None) -> Profile:
    """Load, validate and collapse a profile by name or path (default ``minimax-m3``)."""
    path = _resolve_path(name_or_path or DEFAULT_PROFILE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path}: invalid YAML: {exc}") from exc
    errors = validate_profile(raw, str(path))
    if errors:
        raise ProfileError(f"profile {path} is invalid:\n  - " + "\n  - ".join(errors))
    sources: dict[str, str] = {}
    unconfirmed: list[str] = []
    data = _collapse(raw, "", sources, unconfirmed)
    return Profile(name=str(data["name"]), data=data, sources=sources, unconfirmed=unconfirmed, path=str(path))
