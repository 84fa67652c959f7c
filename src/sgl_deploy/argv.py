"""SGLang server argv from the plan, and systemd ``ExecStart=`` quoting.

The unit template, the install role's argv check (``prepare_server_args``) and the
service role all use :func:`server_argv`, so the argv SGLang validates is the argv that
runs. Full flag names only (``--tp-size``, never the ``--tp`` prefix abbreviation). The
API key never appears here: it goes in the 0600 ``--config`` YAML.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Iterable, Mapping

from sgl_deploy.errors import SglDeployError
from sgl_deploy.ports import ENGINE_PORT

# Flags server_argv owns, with their aliases (reference/sglang.md §1 "Key flags").
MANAGED_FLAGS: dict[str, tuple[str, ...]] = {
    "--model-path": ("--model",),
    "--served-model-name": (),
    "--host": (),
    "--port": (),
    "--tp-size": ("--tensor-parallel-size",),
    "--ep-size": ("--expert-parallel-size", "--ep"),
    "--dp-size": ("--data-parallel-size",),
    "--pp-size": ("--pipeline-parallel-size",),
    "--nnodes": (),
    "--node-rank": (),
    "--dist-init-addr": ("--nccl-init-addr",),
    "--tool-call-parser": (),
    "--reasoning-parser": (),
    "--trust-remote-code": (),
    "--mem-fraction-static": (),
    "--context-length": (),
    "--enable-metrics": (),
    "--config": (),
}
SECRET_FLAGS = ("--api-key", "--admin-api-key")


class ArgvError(SglDeployError, ValueError):
    """The plan or extra args would produce an unsafe or conflicting argv."""


def _flag_name(arg: str) -> str | None:
    """``--flag`` of ``--flag`` / ``--flag=value``; ``None`` for values."""
    if not arg.startswith("--") or arg == "--":
        return None
    return arg.split("=", 1)[0]


def extra_arg_problems(extra: Iterable[str]) -> list[str]:
    """Why ``extra`` cannot be appended to the planned argv: secrets, flags the plan sets and
    abbreviations of them (one line each; empty = fine). The fleet validation and
    :func:`server_argv` both use it."""
    problems: list[str] = []
    all_managed = [f for main, aliases in MANAGED_FLAGS.items() for f in (main, *aliases)]
    for raw in extra:
        flag = _flag_name(str(raw))
        if not flag:
            continue
        if any(s == flag or s.startswith(flag) for s in SECRET_FLAGS) and len(flag) > 2:
            problems.append(f"extra arg {flag} would put a secret on the command line: use the --config file")
        elif flag in all_managed:
            problems.append(f"extra arg {flag} conflicts with a flag the plan sets; change the plan instead")
        else:
            prefixed = [m for m in all_managed if m.startswith(flag)]
            if prefixed:
                problems.append(
                    f"extra arg {flag} is an abbreviation of {', '.join(prefixed)} (set by the plan); "
                    "use full flag names and change the plan instead"
                )
    return problems


def _check_extra_args(extra: Iterable[str]) -> list[str]:
    """Refuse secrets, managed flags and abbreviations of managed flags in ``extra``."""
    out = [str(a) for a in extra]
    problems = extra_arg_problems(out)
    if problems:
        raise ArgvError(problems[0])
    return out


def _fmt_float(value: float) -> str:
    """Shortest exact-looking decimal: 0.85 -> '0.85', 1.0 -> '1.0'."""
    return repr(float(value))


def server_argv(
    plan: Mapping[str, Any],
    tool_call_parser: str | None,
    reasoning_parser: str | None,
    config_file: str | None = None,
) -> list[str]:
    """SGLang server arguments (without the ``python -m sglang.launch_server`` prefix).

    Order: model, name, host/port, parallel layout, multi-node, parsers, flags, memory,
    context, metrics, ``--config FILE``, the recipe cell's ``plan["recipe_args"]`` (less any flag
    the extra args set: inventory overrides win), then ``plan["extra_args"]``. ``--ep-size``,
    ``--dp-size``, ``--pp-size`` only when > 1; ``--nnodes/--node-rank/--dist-init-addr``
    only when ``nnodes > 1`` (then ``dist_init_addr`` is required); ``--watchdog-timeout`` and
    ``--dist-timeout`` when the plan sets them (multi-node plans do) unless extra_args has them.
    """
    argv = [
        "--model-path", str(plan["model_path"]),
        "--served-model-name", str(plan["served_model_name"]),
        "--host", str(plan.get("host") or "0.0.0.0"),
        "--port", str(int(plan.get("port") or ENGINE_PORT)),
        "--tp-size", str(int(plan["tp_size"])),
    ]
    for key, flag in (("ep_size", "--ep-size"), ("dp_size", "--dp-size"), ("pp_size", "--pp-size")):
        if int(plan.get(key) or 1) > 1:
            argv += [flag, str(int(plan[key]))]
    nnodes = int(plan.get("nnodes") or 1)
    if nnodes > 1:
        addr = plan.get("dist_init_addr")
        if not addr or not re.match(r"^\S+:\d+$", str(addr)):
            raise ArgvError(f"nnodes {nnodes} needs dist_init_addr as host:port (got {addr!r})")
        argv += ["--nnodes", str(nnodes), "--node-rank", str(int(plan.get("node_rank") or 0)),
                 "--dist-init-addr", str(addr)]
    # SGLang's own hang safeguards (planner.MULTINODE_SAFEGUARDS), on multi-node plans; the same flag in
    # extra_args wins (a tuning knob, not a layout rule), so the argv never carries it twice
    extra_flags = {_flag_name(str(a)) for a in plan.get("extra_args") or []}
    for key, flag in (("watchdog_timeout_s", "--watchdog-timeout"), ("dist_timeout_s", "--dist-timeout")):
        if plan.get(key) and flag not in extra_flags:
            argv += [flag, str(int(plan[key]))]
    if tool_call_parser:
        argv += ["--tool-call-parser", str(tool_call_parser)]
    if reasoning_parser:
        argv += ["--reasoning-parser", str(reasoning_parser)]
    if plan.get("trust_remote_code", True):
        argv.append("--trust-remote-code")
    if plan.get("mem_fraction_static") is not None:
        argv += ["--mem-fraction-static", _fmt_float(plan["mem_fraction_static"])]
    if plan.get("context_length"):
        argv += ["--context-length", str(int(plan["context_length"]))]
    if plan.get("enable_metrics", True):
        argv.append("--enable-metrics")
    if config_file:
        argv += ["--config", str(config_file)]
    extra = _check_extra_args(plan.get("extra_args") or [])
    # the recipe cell's flags (plan["recipe_args"]); a flag the extra args set too is left out
    extra_flags = {_flag_name(a) for a in extra if _flag_name(a)}
    recipe = _check_extra_args(plan.get("recipe_args") or [])
    i = 0
    while i < len(recipe):
        flag = _flag_name(recipe[i])
        takes_value = flag and "=" not in recipe[i] and i + 1 < len(recipe) and not _flag_name(recipe[i + 1])
        chunk = recipe[i:i + 2] if takes_value else recipe[i:i + 1]
        if flag not in extra_flags:
            argv += chunk
        i += len(chunk)
    argv += extra
    return argv


_SYSTEMD_SPECIAL = re.compile(r"[\s\"'\\]")


def systemd_quote(arg: str) -> str:
    """Quote one argument for a systemd ``ExecStart=`` line.

    ``%`` -> ``%%`` (specifiers) and ``$`` -> ``$$`` (environment expansion) always;
    arguments that are empty, contain whitespace, quotes or backslashes, or are a lone
    ``;`` (command separator) go in double quotes with ``\\`` and ``"`` backslash-escaped
    and control characters as C escapes.
    """
    text = str(arg).replace("%", "%%").replace("$", "$$")
    if text and text != ";" and not _SYSTEMD_SPECIAL.search(text):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'


def quote_argv(argv: Iterable[str]) -> str:
    """A whole command line for ``ExecStart=`` (each argument via :func:`systemd_quote`)."""
    return " ".join(systemd_quote(a) for a in argv)


def split_exec_start(line: str) -> list[str]:
    """The argv of an ``ExecStart=`` line written with :func:`quote_argv` (its inverse).

    Accepts the line with or without the ``ExecStart=`` prefix; ``%%`` -> ``%`` and ``$$`` -> ``$``;
    a lone ``%d``-style specifier (the credentials directory) is kept as written.
    """
    text = line.strip()
    if text.startswith("ExecStart="):
        text = text[len("ExecStart="):]
    out: list[str] = []
    for token in shlex.split(text, posix=True):
        out.append(token.replace("%%", "\0").replace("$$", "$").replace("\0", "%"))
    return out
