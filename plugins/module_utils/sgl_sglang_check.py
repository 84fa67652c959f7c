"""Verify an installed SGLang against what the deployment needs: the code of the module
``sgl_sglang_check`` (plugins/modules), shared between the module and the venv's python.

Stdlib only: the module (running under the host's python) imports the request helpers from here,
and runs this same file with the venv's python (``python -c <this source> <request JSON>``), where
:func:`main` imports the installed SGLang. The request:
  {"version": "0.5.23", "architectures": ["MiniMaxM3Sparse..."],
   "tool_call_parser": ["minimax-m3", "minimax-m2"], "reasoning_parser": [...],   # preference order
   "argv": ["--model-path", ..., "--tool-call-parser", "{tool_call_parser}", ...]}   # a JSON list
It prints one JSON object: ok, version, parsers chosen, the parser choices of the installed SGLang
(read from its real argument parser), errors. The argv (with the chosen parsers substituted) is
checked with the installed SGLang's own `prepare_server_args` (arguments exactly "{tool_call_parser}" /
"{reasoning_parser}" are replaced; every other argument passes unchanged, see resolve_argv), so unknown, removed or ambiguous
flags and bad choices fail here, not at service start.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import re
import sys
import tempfile


def arch_known(sglang_dir: str, arch: str) -> bool:
    """Whether the installed SGLang defines a model class for ``arch`` (no model imports needed)."""
    pattern = re.compile(r"^class\s+" + re.escape(arch) + r"\b", re.M)
    models = os.path.join(sglang_dir, "srt", "models")
    for root, _dirs, files in os.walk(models):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as fh:
                    if pattern.search(fh.read()):
                        return True
    return False


PLACEHOLDERS = {"{tool_call_parser}": "tool_call_parser", "{reasoning_parser}": "reasoning_parser"}


def resolve_argv(argv, chosen: dict) -> list:
    """The argv as a list (a JSON list, or its JSON text), with the chosen parsers put in place of
    the arguments that are exactly ``{tool_call_parser}`` / ``{reasoning_parser}``. Every other
    argument passes through unchanged: JSON values, braces, quotes and spaces included (no
    str.format)."""
    if isinstance(argv, str):
        argv = json.loads(argv)
    if not isinstance(argv, list):
        raise ValueError(f"argv must be a list, got {type(argv).__name__}")
    return [chosen.get(PLACEHOLDERS[a]) or "" if a in PLACEHOLDERS else str(a) for a in argv]


def first_choices(req: dict) -> dict:
    """The first preference of each parser kind: what check mode assumes before the venv exists."""
    return {kind: (list(req.get(kind) or []) or [None])[0] for kind in PLACEHOLDERS.values()}


def build_request(version: str, architectures, tool_call_parser, reasoning_parser, argv, config_keys,
                  source: str = "") -> dict:
    """The request the check answers (and the cache key): ``config_keys`` become placeholder values;
    ``check`` is the sha1 of the check code, so a new check invalidates the cache."""
    req = {"version": version or "", "architectures": list(architectures or []),
           "tool_call_parser": list(tool_call_parser or []), "reasoning_parser": list(reasoning_parser or []),
           "argv": [str(a) for a in (argv or [])]}
    if config_keys:
        req["config"] = {str(k): "placeholder" for k in config_keys}
    if source:
        req["check"] = hashlib.sha1(source.encode()).hexdigest()
    return req


def check(req: dict) -> dict:
    """Run with the venv's python: the answer to ``req`` (imports the installed SGLang)."""
    out = {"ok": False, "errors": []}
    try:
        version = importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        out["errors"].append("sglang is not installed in this venv")
        return out
    out["version"] = version
    if req.get("version") and version != req["version"]:
        out["errors"].append(f"installed sglang is {version}, the pin is {req['version']}")

    with contextlib.redirect_stderr(io.StringIO()):
        import sglang
        from sglang.srt.server_args import ServerArgs, prepare_server_args

    sglang_dir = os.path.dirname(sglang.__file__)
    missing = [a for a in req.get("architectures", []) if not arch_known(sglang_dir, a)]
    if missing:
        out["errors"].append(
            f"SGLang {version} does not know the model architecture {', '.join(missing)}: upgrade sglang "
            f"(raise sglang_plan_sglang_version)"
        )

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    choices = {}
    for action in parser._actions:
        for flag in ("--tool-call-parser", "--reasoning-parser"):
            if flag in action.option_strings:
                choices[flag[2:].replace("-", "_")] = list(action.choices or [])
    out["choices"] = choices
    chosen = {}
    for kind in ("tool_call_parser", "reasoning_parser"):
        prefs = req.get(kind) or []
        pick = next((p for p in prefs if p in choices.get(kind, [])), None)
        if prefs and pick is None:
            out["errors"].append(
                f"none of the {kind.replace('_', '-')}s {prefs} is accepted by SGLang {version} "
                f"(choices: {', '.join(choices.get(kind, []))}); set sglang_install_{kind} to one of them"
            )
        chosen[kind] = pick
    out["parsers"] = chosen

    argv = resolve_argv(req.get("argv", []), chosen)
    config = req.get("config")
    out["argv"] = argv  # what the service will run (its --config, if any, is added by the unit)
    if argv and not out["errors"]:
        with tempfile.TemporaryDirectory() as tmp:
            if config is not None:  # same keys as the real (secret) config, placeholder values
                path = os.path.join(tmp, "config.yaml")
                with open(path, "w") as fh:
                    fh.write("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
                argv = argv + ["--config", path]
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    prepare_server_args(argv)
            except SystemExit as exc:
                msg = err.getvalue().strip().splitlines()
                out["errors"].append(
                    f"SGLang {version} rejects the server argv (exit {exc.code}): {msg[-1] if msg else ''} "
                    "; check sglang_plan_extra_args and the sglang_plan_*/sglang_install_* overrides"
                )
            except Exception as exc:  # noqa: BLE001 - report whatever the parser raised
                out["errors"].append(f"SGLang {version} rejects the server argv: {type(exc).__name__}: {exc}")
    out["ok"] = not out["errors"]
    return out


def main(argv=None) -> int:
    """``python -c <source> '<request JSON>'`` (or the request on stdin): print the answer."""
    args = sys.argv[1:] if argv is None else argv
    req = json.loads(args[0]) if args else json.load(sys.stdin)
    out = check(req)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
