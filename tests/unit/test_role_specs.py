"""Every role documents its inputs: meta/main.yml and meta/argument_specs.yml exist, the `main`
entry point lists exactly the keys of defaults/main.yml, every option has a description and a
valid type, every option is role-prefixed, and literal defaults in the spec equal defaults/main.yml.

Pure file checks (no ansible-playbook run); `check_role()` is also used on a temporary copy of a
role in `test_checker_catches_drift` to prove the checks fail on drift.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if p.is_dir() and not p.name.startswith("."))

# Types role argument specs accept that we allow (ansible-core's argspec types, minus the odd ones).
VALID_TYPES = {"str", "int", "bool", "list", "dict", "path", "float", "raw"}


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _is_template(value: Any) -> bool:
    """True when the value (or anything nested in it) is a Jinja expression."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_is_template(k) or _is_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_is_template(v) for v in value)
    return False


def _description_ok(desc: Any) -> bool:
    if isinstance(desc, str):
        return bool(desc.strip())
    if isinstance(desc, list):
        return bool(desc) and all(isinstance(d, str) and d.strip() for d in desc)
    return False


# Python types a literal value of each argspec type may have (bool is not an int here).
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "path": (str,), "int": (int,), "float": (int, float),
    "bool": (bool,), "list": (list,), "dict": (dict,),
}


def _type_problem(where: str, what: str, value: Any, spec_type: Any) -> str | None:
    """A line when a literal value does not fit the declared type (None and templates always fit)."""
    if value is None or _is_template(value) or spec_type not in _PY_TYPES:
        return None
    ok = isinstance(value, _PY_TYPES[spec_type]) and not (spec_type in ("int", "float") and isinstance(value, bool))
    return None if ok else f"{where}: {what} {value!r} is a {type(value).__name__}, not a {spec_type}"


def _walk_options(options: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(dotted name, spec) for every option, including nested `options:` of dict/list options."""
    out = []
    for name, spec in (options or {}).items():
        out.append((prefix + str(name), spec if isinstance(spec, dict) else {}))
        if isinstance(spec, dict) and isinstance(spec.get("options"), dict):
            out += _walk_options(spec["options"], f"{prefix}{name}.")
    return out


def check_role(role_dir: Path) -> list[str]:
    """All problems of one role directory, as readable lines (empty list = fine)."""
    role = role_dir.name
    problems: list[str] = []
    for rel in ("meta/main.yml", "meta/argument_specs.yml", "defaults/main.yml"):
        if not (role_dir / rel).is_file():
            problems.append(f"{role}: {rel} is missing")
    if problems:
        return problems

    meta = _load(role_dir / "meta/main.yml") or {}
    if not isinstance(meta.get("galaxy_info"), dict):
        problems.append(f"{role}: meta/main.yml has no galaxy_info mapping")
    if "dependencies" not in meta:
        problems.append(f"{role}: meta/main.yml has no dependencies key")

    defaults = _load(role_dir / "defaults/main.yml") or {}
    specs = (_load(role_dir / "meta/argument_specs.yml") or {}).get("argument_specs") or {}
    if "main" not in specs:
        return problems + [f"{role}: meta/argument_specs.yml has no entry point 'main'"]

    main_options = specs["main"].get("options") or {}
    missing = [k for k in defaults if k not in main_options]
    extra = [k for k in main_options if k not in defaults]
    if missing:
        problems.append(f"{role}: in defaults/main.yml but not in argument_specs main.options: {missing}")
    if extra:
        problems.append(f"{role}: in argument_specs main.options but not in defaults/main.yml: {extra}")

    for entry, spec in specs.items():
        if not isinstance(spec, dict) or not str(spec.get("short_description", "")).strip():
            problems.append(f"{role}: entry point {entry!r} has no short_description")
            continue
        for name, opt in _walk_options(spec.get("options") or {}):
            where = f"{role}: {entry}.options.{name}"
            if not _description_ok(opt.get("description")):
                problems.append(f"{where} has no (non-empty) description")
            if opt.get("type") not in VALID_TYPES:
                problems.append(f"{where} has type {opt.get('type')!r}, not one of {sorted(VALID_TYPES)}")
            if opt.get("type") == "list" and "elements" in opt and opt["elements"] not in VALID_TYPES:
                problems.append(f"{where} has elements {opt['elements']!r}, not one of {sorted(VALID_TYPES)}")
            if "." not in name and not name.startswith(role + "_"):
                problems.append(f"{where} does not start with the role prefix {role + '_'!r}")
            if opt.get("type") == "list" and "elements" not in opt:
                problems.append(f"{where} is a list without elements")
            if "default" in opt:
                if _is_template(opt["default"]):
                    problems.append(
                        f"{where} has a template default {opt['default']!r}: drop it, say in the description what it defaults to"
                    )
                problems.append(_type_problem(where, "default", opt["default"], opt.get("type")) or "")
                if "choices" in opt and opt["default"] not in opt["choices"]:
                    problems.append(f"{where} default {opt['default']!r} is not one of its choices {opt['choices']}")

    for name, opt in main_options.items():
        if name not in defaults or not isinstance(opt, dict):
            continue
        value = defaults[name]
        if _is_template(value):
            continue
        problems.append(_type_problem(f"{role}: defaults/main.yml {name}", "value", value, opt.get("type")) or "")
        if "choices" in opt and value not in opt["choices"]:
            problems.append(f"{role}: defaults/main.yml {name} {value!r} is not one of the spec's choices {opt['choices']}")
        if "default" not in opt:
            if value is not None:
                problems.append(f"{role}: main.options.{name} has no default; defaults/main.yml has {value!r}")
            continue
        if opt["default"] != value or isinstance(opt["default"], bool) != isinstance(value, bool):
            problems.append(
                f"{role}: main.options.{name} default {opt['default']!r} != defaults/main.yml {value!r}"
            )
    return [p for p in problems if p]


@pytest.mark.parametrize("role", ROLES)
def test_role_has_meta_files(role: str) -> None:
    for rel in ("meta/main.yml", "meta/argument_specs.yml"):
        assert (ROLES_DIR / role / rel).is_file(), f"roles/{role}/{rel} is missing"


@pytest.mark.parametrize("role", ROLES)
def test_main_options_equal_defaults(role: str) -> None:
    defaults = _load(ROLES_DIR / role / "defaults/main.yml") or {}
    specs = _load(ROLES_DIR / role / "meta/argument_specs.yml")["argument_specs"]
    options = specs["main"].get("options") or {}
    missing = sorted(set(defaults) - set(options))
    extra = sorted(set(options) - set(defaults))
    assert not missing and not extra, (
        f"roles/{role}: argument_specs main.options differ from defaults/main.yml; "
        f"missing in the spec: {missing}; extra in the spec: {extra}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_main_options_in_defaults_order(role: str) -> None:
    defaults = _load(ROLES_DIR / role / "defaults/main.yml") or {}
    options = _load(ROLES_DIR / role / "meta/argument_specs.yml")["argument_specs"]["main"].get("options") or {}
    common = [k for k in defaults if k in options]
    assert [k for k in options if k in defaults] == common, f"roles/{role}: options are not in defaults/main.yml order"


@pytest.mark.parametrize("role", ROLES)
def test_role_spec_is_complete(role: str) -> None:
    problems = check_role(ROLES_DIR / role)
    assert not problems, "\n".join(problems)


def test_roles_found() -> None:
    assert {"gpu_preflight", "sglang_plan", "sglang_install", "model_weights", "sglang_service"} <= set(ROLES)


def _copy_role(tmp_path: Path, role: str) -> Path:
    dst = tmp_path / role
    shutil.copytree(ROLES_DIR / role, dst, ignore=shutil.ignore_patterns("files", "templates"))
    return dst


def test_checker_catches_drift(tmp_path: Path) -> None:
    """The checks fail on a copy with a new default, a changed literal default, a bad type,
    an unprefixed option, an empty description and a missing meta/main.yml."""
    role = "sglang_service"
    assert check_role(_copy_role(tmp_path / "clean", role)) == []

    copy = _copy_role(tmp_path / "drift", role)
    with (copy / "defaults/main.yml").open("a", encoding="utf-8") as fh:
        fh.write("sglang_service_brand_new_knob: 1\nsglang_service_restart_sec_typo: 3\n")
    specs_path = copy / "meta/argument_specs.yml"
    specs = _load(specs_path)
    opts = specs["argument_specs"]["main"]["options"]
    opts["sglang_service_restart_sec"]["default"] = 11
    opts["sglang_service_user"]["type"] = "string"
    opts["sglang_service_group"]["description"] = "  "
    opts["unprefixed_knob"] = {"type": "str", "description": "x"}
    opts["sglang_service_stop_timeout_s"]["default"] = "{{ sglang_plan_result.stop_s }}"
    opts["sglang_service_limit_nofile"]["type"] = "bool"
    del opts["sglang_service_address_families"]["elements"]
    opts["sglang_service_name"]["choices"] = ["other"]
    specs_path.write_text(yaml.safe_dump(specs, sort_keys=False), encoding="utf-8")
    text = "\n".join(check_role(copy))
    assert "sglang_service_brand_new_knob" in text and "sglang_service_restart_sec_typo" in text
    assert "not in argument_specs main.options" in text
    assert "not in defaults/main.yml: ['unprefixed_knob']" in text
    assert "sglang_service_restart_sec default 11 != defaults/main.yml 10" in text
    assert "sglang_service_user has type 'string'" in text
    assert "sglang_service_group has no (non-empty) description" in text
    assert "unprefixed_knob does not start with the role prefix 'sglang_service_'" in text
    assert "sglang_service_stop_timeout_s has a template default" in text
    assert "defaults/main.yml sglang_service_limit_nofile: value 1048576 is a int, not a bool" in text
    assert "sglang_service_address_families is a list without elements" in text
    assert "sglang_service_name default 'sglang' is not one of its choices ['other']" in text

    (copy / "meta/main.yml").unlink()
    assert check_role(copy) == ["sglang_service: meta/main.yml is missing"]


def test_checker_compares_bools_strictly(tmp_path: Path) -> None:
    copy = _copy_role(tmp_path, "sglang_service")
    specs_path = copy / "meta/argument_specs.yml"
    specs = _load(specs_path)
    specs["argument_specs"]["main"]["options"]["sglang_service_require_complete_weights"]["default"] = 1
    specs_path.write_text(yaml.safe_dump(specs, sort_keys=False), encoding="utf-8")
    assert any("sglang_service_require_complete_weights default 1" in p for p in check_role(copy))
