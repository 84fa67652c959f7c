"""Host-level preflight checks (OS, Python, RAM, disk, clocks) and the report format.

GPU checks live in :mod:`sgl_deploy.gpu_facts` (``check_preflight``); both return the same
problem shape ``{check, found, needed, fix}`` so the ``gpu_preflight`` role reports them
together, one line per problem, each naming the host and the variable to change.
"""

from __future__ import annotations

from typing import Any, Iterable

from .gpu_facts import Problem, version_tuple

DEFAULT_SUPPORTED_OS = {"Ubuntu": ["22.04", "24.04"], "Debian": ["12"]}


def _problem(check: str, found: str, needed: str, fix: str) -> Problem:
    return {"check": check, "found": found, "needed": needed, "fix": fix}


def host_problems(host: dict[str, Any], requirements: dict[str, Any] | None = None) -> list[Problem]:
    """Check OS, Python and RAM of one host.

    ``host``: ``distribution``, ``distribution_version`` (``distribution_major_version`` also
    matches, so Debian "12" accepts 12.15), ``python_version``, ``ram_mb``.
    ``requirements``: ``supported_os`` ({distribution: [versions]}), ``min_python`` ("3.10"),
    ``min_ram_gb`` (decimal GB).
    """
    req = requirements or {}
    problems: list[Problem] = []
    supported = req.get("supported_os") or DEFAULT_SUPPORTED_OS
    dist, ver = str(host.get("distribution", "")), str(host.get("distribution_version", ""))
    major = str(host.get("distribution_major_version", ver.split(".")[0]))
    allowed = [str(v) for v in supported.get(dist, [])]
    if ver not in allowed and major not in allowed:
        wanted = "; ".join(f"{d} {', '.join(map(str, v))}" for d, v in supported.items())
        problems.append(_problem(
            "os", f"{dist} {ver}".strip() or "unknown", wanted,
            "use a supported OS, or extend gpu_preflight_supported_os if you have validated this one",
        ))
    min_py = str(req.get("min_python", "3.10"))
    py = str(host.get("python_version", ""))
    if version_tuple(py) < version_tuple(min_py):
        problems.append(_problem(
            "python", f"python3 {py or 'missing'}", f"python3 >= {min_py} (SGLang and the ModelScope client need it)",
            "install a newer python3 (e.g. Ubuntu 22.04+ / Debian 12) or set sglang_install_python to one",
        ))
    min_ram = float(req.get("min_ram_gb", 0) or 0)
    ram_gb = float(host.get("ram_mb", 0)) * 1048576 / 1e9
    if min_ram and ram_gb < min_ram:
        problems.append(_problem(
            "ram", f"{ram_gb:.1f} GB", f">= {min_ram:.0f} GB (gpu_preflight_min_ram_gb)",
            "use a host with more memory, or lower gpu_preflight_min_ram_gb if you know the load fits",
        ))
    return problems


def disk_problem(free_bytes: int, needed_gb: float, margin_gb: float, path: str) -> Problem | None:
    """Free space at ``path`` must hold the weights plus a margin (all decimal GB)."""
    free_gb = free_bytes / 1e9
    want = needed_gb + margin_gb
    if free_gb >= want:
        return None
    return _problem(
        "disk", f"{free_gb:.1f} GB free at {path}",
        f"{want:.1f} GB (weights {needed_gb:.1f} GB + margin {margin_gb:.1f} GB)",
        f"free {want - free_gb:.1f} GB at {path}, or point sglang_plan_weights_root at a larger disk",
    )


def free_bytes_at(mounts: Iterable[dict[str, Any]], path: str) -> tuple[int, str]:
    """Free bytes of the mount holding ``path`` (longest mount point prefix) from Ansible mount facts."""
    best: dict[str, Any] | None = None
    for m in mounts:
        mp = str(m.get("mount", ""))
        prefix = mp.rstrip("/") + "/"
        if (path == mp or path.startswith(prefix) or mp == "/") and (
            best is None or len(mp) > len(str(best["mount"]))
        ):
            best = m
    if best is None:
        return 0, "?"
    return int(best.get("size_available", 0)), str(best["mount"])


def clock_problem(host_epoch: float, controller_epoch: float, max_skew_s: float) -> Problem | None:
    skew = abs(host_epoch - controller_epoch)
    if skew <= max_skew_s:
        return None
    return _problem(
        "clock", f"clock {skew:.1f} s off the controller", f"<= {max_skew_s:.0f} s (multi-node ranks need synced clocks)",
        "enable NTP (chrony or systemd-timesyncd) on every host of the replica group",
    )


def format_problems(host: str, problems: list[Problem]) -> str:
    """One line per problem: host, check, what was found, what is needed, the fix."""
    lines = [f"{host}: preflight failed ({len(problems)} problem{'s' if len(problems) != 1 else ''})"]
    for p in problems:
        lines.append(f"  [{p['check']}] found {p['found']}; needed {p['needed']}. Fix: {p['fix']}")
    return "\n".join(lines)


def group_problems(rank0: dict[str, Any], members: list[dict[str, Any]], names: list[str]) -> list[Problem]:
    """Every rank of a multi-node replica group must have rank 0's GPU model, memory and count."""
    def shape(facts: dict[str, Any]) -> tuple[Any, ...]:
        gpus = facts.get("gpus") or [{}]
        return facts.get("gpu_count"), gpus[0].get("name"), gpus[0].get("memory_total_mib")

    want = shape(rank0)
    problems: list[Problem] = []
    for name, facts in zip(names, members):
        got = shape(facts or {})
        if got != want:
            problems.append(_problem(
                "replica_group", f"{name}: {got[0]} x {got[1]} ({got[2]} MiB)",
                f"{want[0]} x {want[1]} ({want[2]} MiB) like rank 0 ({names[0]})",
                "put only identical hosts in one sglang_replicas group",
            ))
    return problems
