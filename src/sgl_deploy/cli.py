"""`sgl-deploy <verb>`: command-line entry point.

Each verb lives in its own module exposing ``register(subparsers)``; the module sets
``func`` on its parser. Modules must keep heavy imports (openai, ansible_runner, ...)
inside functions so that ``sgl-deploy --help`` stays fast. A verb module that fails to
import (or has no ``register``) is an error that names it: a verb never disappears silently.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sgl_deploy.errors import SglDeployError

# verb modules, in the order they appear in --help
VERB_MODULES = (
    "sgl_deploy.gpu_facts",
    "sgl_deploy.planner",
    "sgl_deploy.weights",
    "sgl_deploy.probe",
    "sgl_deploy.report",
    "sgl_deploy.redeploy",
    "sgl_deploy.status",
    "sgl_deploy.docs_gen",
)


class VerbImportError(SglDeployError, RuntimeError):
    """A verb module in VERB_MODULES cannot be loaded."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgl-deploy",
        description="Plan, verify and probe SGLang deployments of MiniMax models.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise VerbImportError(f"sgl-deploy: verb module {name} failed to import: "
                                  f"{type(exc).__name__}: {exc}") from exc
        register = getattr(module, "register", None)
        if not callable(register):
            raise VerbImportError(f"sgl-deploy: verb module {name} has no register(subparsers)")
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except VerbImportError as exc:
        print(exc, file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
