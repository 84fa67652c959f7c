#!/usr/bin/env python3
"""Start the gateway (smg, ``smg launch``) with its worker list and API key read from files
(shipped by the sglang_router role; runs with the gateway venv's python).

    sgl_router_launch.py --workers-file FILE [--api-key-file FILE] -- <smg launch args>
    sgl_router_launch.py --check -- <smg launch args>   parse only, print {"ok", "version", ...}

* ``--workers-file``: JSON list of worker URLs, passed to the router as ``--worker-urls``. The
  list lives in a file (not in the unit), so a change of the fleet is applied through the
  router's HTTP API at runtime instead of restarting the router.
* ``--api-key-file``: a file holding the API key (the systemd credential). The key is added to
  the router's arguments inside this process, so it never appears on a command line, in the
  unit file, in ``systemctl show`` or in ``/proc/<pid>/cmdline``. smg 1.13.0 has no environment
  variable or config file for ``--api-key``; this is what ``smg launch`` does
  (``smg.cli.main``: ``parse_router_args`` then ``launch_router``) with two more inputs.
"""

from __future__ import annotations

import json
import sys


def split_argv(argv: list[str]) -> tuple[dict, list[str]]:
    """Our options before ``--``, the router's after it."""
    ours: dict = {"workers_file": None, "api_key_file": None, "check": False}
    rest = list(argv)
    if "--" in rest:
        cut = rest.index("--")
        head, rest = rest[:cut], rest[cut + 1:]
    else:
        head = []
    it = iter(head)
    for arg in it:
        if arg == "--check":
            ours["check"] = True
        elif arg in ("--workers-file", "--api-key-file"):
            ours[arg[2:].replace("-", "_")] = next(it, None)
        else:
            raise SystemExit(f"sgl_router_launch: unknown option {arg} (router arguments go after --)")
    for flag in ("--api-key", "--worker-urls", "--control-plane-api-keys", "--tenant-api-key"):
        if any(a == flag or a.startswith(flag + "=") for a in rest):
            raise SystemExit(f"sgl_router_launch: pass {flag} through its file option, not as an argument")
    return ours, rest


def read_key(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        key = fh.read().strip()
    if not key:
        raise SystemExit(f"sgl_router_launch: {path} is empty")
    return key


def main(argv: list[str]) -> None:
    ours, router_argv = split_argv(argv)
    if ours["workers_file"]:
        with open(ours["workers_file"], encoding="utf-8") as fh:
            urls = json.load(fh)
        if urls:
            router_argv += ["--worker-urls", *[str(u) for u in urls]]
    if ours["api_key_file"]:
        router_argv += ["--api-key", read_key(ours["api_key_file"])]

    from smg.launch_router import launch_router, parse_router_args

    args = parse_router_args(router_argv)  # argparse errors exit 2 with smg's message
    if ours["check"]:
        from importlib.metadata import version

        print(json.dumps({"ok": True, "version": version("smg"), "policy": args.policy,
                          "host": args.host, "port": args.port}))
        return
    launch_router(args)


if __name__ == "__main__":
    main(sys.argv[1:])
