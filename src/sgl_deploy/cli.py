"""`sgl-deploy <verb>`: command-line entry point.

Each verb lives in its own module exposing ``register(subparsers)``; the module sets
``func`` on its parser. Modules must keep heavy imports (openai, ansible_runner, ...)
inside functions so that ``sgl-deploy --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb modules, in the order they appear in --help
VERB_MODULES = (
    "sgl_deploy.gpu_facts",
    "sgl_deploy.planner",
    "sgl_deploy.weights",
    "sgl_deploy.probe",
    "sgl_deploy.report",
    "sgl_deploy.redeploy",
    "sgl_deploy.status",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgl-deploy",
        description="Plan, verify and probe SGLang deployments of MiniMax models.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a verb module not written yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
