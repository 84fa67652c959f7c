"""Host-level preflight checks (OS, Python, RAM, disk, clocks) and the report format.

GPU checks live in :mod:`sgl_deploy.gpu_facts` (``check_preflight``); both return the same
problem shape ``{check, found, needed, fix}`` so the ``gpu_preflight`` role reports them
together, one line per problem, each naming the host and the variable to change.
"""

from __future__ import annotations

import json
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


def disk_problem(
    free_bytes: int, needed_gb: float, margin_gb: float, path: str, present_gb: float = 0.0
) -> Problem | None:
    """Free space at ``path`` must hold the weights still missing plus a margin (all decimal GB):
    the weights tool's rule (:func:`sgl_deploy.weights.space_required`), so the plan and the
    weights phase agree. ``present_gb``: weights already on disk per their MANIFEST.json."""
    from sgl_deploy.weights import space_required  # the one disk rule

    present_gb = min(max(float(present_gb or 0.0), 0.0), float(needed_gb))
    want_bytes = space_required(int(needed_gb * 1e9), int(present_gb * 1e9), int(margin_gb * 1e9))
    if free_bytes >= want_bytes:
        return None
    free_gb, want = free_bytes / 1e9, want_bytes / 1e9
    have = f", {present_gb:.1f} GB of them already there" if present_gb > 0 else ""
    return _problem(
        "disk", f"{free_gb:.1f} GB free at {path}",
        f"{want:.1f} GB (weights {needed_gb:.1f} GB{have} + margin {margin_gb:.1f} GB)",
        f"free {want - free_gb:.1f} GB at {path}, or point sglang_plan_weights_root at a larger disk",
    )


def manifest_present_gb(text: str) -> float:
    """Weights already on disk (decimal GB) from the plan's probe of the weights dir: its
    MANIFEST.json, a line ``--- sizes``, then ``<bytes> <relative path>`` per file (``find -printf
    '%s %P\\n'``). A file counts when its size is the manifest's; no manifest or garbage counts 0."""
    head, sep, tail = str(text or "").partition("\n--- sizes\n")
    if not sep:
        return 0.0
    try:
        files = json.loads(head).get("files") or []
    except (ValueError, AttributeError):
        return 0.0
    sizes: dict[str, int] = {}
    for line in tail.splitlines():
        size, _, rel = line.partition(" ")
        if size.isdigit() and rel:
            sizes[rel] = int(size)
    present = sum(int(f.get("size", -1)) for f in files
                  if isinstance(f, dict) and sizes.get(str(f.get("path"))) == f.get("size"))
    return present / 1e9


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


def df_mounts(df_output: str) -> list[dict[str, Any]]:
    """``df -P -B1 PATH`` output -> ``[{mount, device, size_total, size_available}]`` (Ansible mount
    fact shape, for :func:`free_bytes_at`), or ``[]`` when it cannot be read.

    Ansible's mount facts leave out filesystems whose source is not a path (tmpfs, ZFS datasets
    such as ``tank/models``): measured this way, the weights path's own filesystem is always known.
    """
    lines = [line for line in str(df_output or "").splitlines() if line.strip()]
    if len(lines) < 2:
        return []
    fields = lines[-1].split(None, 5)
    if len(fields) < 6 or not fields[1].isdigit() or not fields[3].isdigit():
        return []
    return [{"device": fields[0], "size_total": int(fields[1]), "size_available": int(fields[3]),
             "mount": fields[5]}]


def clock_problem(
    host_epoch: float, controller_before: float, max_skew_s: float, controller_after: float | None = None
) -> Problem | None:
    """The host clock must be within ``max_skew_s`` of the controller's.

    The host read its clock at some moment between the controller readings ``controller_before``
    and ``controller_after`` (SSH and task overhead sit in between, seconds on a busy controller),
    so the skew is at least the distance from ``host_epoch`` to that interval: a slow controller
    widens the interval and never makes a synced host fail.
    """
    after = controller_before if controller_after is None else max(controller_after, controller_before)
    if host_epoch < controller_before:
        skew, direction = controller_before - host_epoch, "behind"
    elif host_epoch > after:
        skew, direction = host_epoch - after, "ahead of"
    else:
        return None
    if skew <= max_skew_s:
        return None
    return _problem(
        "clock", f"clock at least {skew:.1f} s {direction} the controller's",
        f"<= {max_skew_s:g} s (sglang_plan_max_clock_skew_s; the ranks of a multi-node group need synced clocks)",
        "enable NTP on every host of the replica group (chrony or systemd-timesyncd: "
        "`timedatectl set-ntp true`, then check `timedatectl` shows 'System clock synchronized: yes')",
    )


def rendezvous_problem(
    host: str, rank0: str, address: str, port: int, error: str, timeout_s: float
) -> Problem:
    """A rank >= 1 host could not open a TCP connection to rank 0's ``--dist-init-addr``."""
    return _problem(
        "rendezvous",
        f"{host} cannot reach rank 0 ({rank0}) at {address}:{port} (TCP, {timeout_s:g} s): {error}".rstrip(": "),
        f"TCP port {port} of {rank0} open to every rank of the group (SGLang's --dist-init-addr "
        "rendezvous; NCCL then also opens ephemeral ports between the ranks)",
        f"allow TCP {port} (and the ranks' traffic on the NCCL interface) from {host} to {address} in the "
        "firewall / security group, check that the address routes between the hosts, or set "
        "sglang_plan_dist_init_port to a port that is open",
    )


def ifname_matches(spec: str, interfaces: Iterable[str]) -> list[str]:
    """Interfaces an NCCL/Gloo ``*_SOCKET_IFNAME`` value selects.

    NCCL semantics: a comma list of prefixes; ``=name`` matches exactly; a leading ``^``
    excludes the listed prefixes (then every other interface is selected).
    """
    names = [str(i) for i in interfaces]
    text = str(spec).strip()
    exclude = text.startswith("^")
    if exclude:
        text = text[1:]
    exact = text.startswith("=")
    if exact:
        text = text[1:]
    wanted = [w.strip() for w in text.split(",") if w.strip()]

    def hit(name: str) -> bool:
        return any(name == w if exact else name.startswith(w) for w in wanted)

    return [n for n in names if not hit(n)] if exclude else [n for n in names if hit(n)]


def ifname_problems(settings: dict[str, Any], interfaces: Iterable[str]) -> list[Problem]:
    """Each ``*_SOCKET_IFNAME`` setting must select an interface of the host.

    ``settings``: ``{variable: value}`` (e.g. ``{"NCCL_SOCKET_IFNAME": "ens"}``). NCCL-style
    variables use :func:`ifname_matches` (loopback never counts for an include list: ranks on
    different hosts cannot meet on it). ``GLOO_SOCKET_IFNAME`` is a comma list of exact names
    (Gloo fails with "Unable to find address for: <name>" on any name the host lacks).
    """
    names = sorted(str(i) for i in interfaces)
    problems: list[Problem] = []
    for var, value in sorted((settings or {}).items()):
        text = str(value or "").strip()
        if not text:
            continue
        if str(var).upper().startswith("GLOO_"):
            wanted = [w.strip() for w in text.split(",") if w.strip()]
            bad = [w for w in wanted if w not in names]
            found = f"{var}={text}: no interface {', '.join(bad)}" if bad else ""
        else:
            picked = ifname_matches(text, names)
            if not text.startswith("^"):
                picked = [n for n in picked if n != "lo"]
            found = "" if picked else f"{var}={text} matches none"
        if found:
            problems.append(_problem(
                "network_interface", f"{found} of the host's interfaces ({', '.join(names)})",
                f"{var} naming the interface on the network that links the ranks of the replica group",
                "set sglang_service_socket_ifname (or that variable in sglang_service_nccl_environment) to the "
                "interface name on the ranks' shared network, as `ip -br addr` shows it on every host",
            ))
    return problems


def group_membership_problems(group_name: str, members: list[str], in_play: Iterable[str]) -> list[Problem]:
    """Every host of a multi-node group must be in the run: its ranks start and restart together."""
    playing = set(in_play)
    missing = [m for m in members if m not in playing]
    if not missing:
        return []
    return [_problem(
        "replica_group",
        f"{', '.join(missing)} of replica group {group_name} ({', '.join(members)}) not in this run "
        "(left out by --limit, or failed an earlier task)",
        "every host of a multi-node group in the same run (they form one model and restart together)",
        "run without --limit, or with a --limit that names every host of the group; a host that is down "
        "must be repaired or removed from sglang_replicas first",
    )]


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


# --------------------------------------------------------------------------- ports between ranks

# SGLang 0.5.23 server_args.py PortArgs.init_new: with attention DP (--enable-dp-attention) and
# --dist-init-addr, the ZMQ sockets between the ranks use port_base = dist_init_port + 1 and the
# next five ports (tokenizer, detokenizer +1, rpc +2, metrics +3, scheduler input +4, load collector
# +5) on rank 0's host; when dist_init_port + 6 > 65535, port_base = dist_init_port - 7.
SGLANG_DERIVED_PORTS = 6


def sglang_derived_ports(dist_init_port: int, extra_args: list[str] | None) -> list[int]:
    """Ports on rank 0 SGLang derives from --dist-init-addr (attention DP only; else none)."""
    args = [str(a).split("=", 1)[0] for a in extra_args or []]
    if "--enable-dp-attention" not in args:
        return []
    port = int(dist_init_port)
    base = port - SGLANG_DERIVED_PORTS - 1 if port + SGLANG_DERIVED_PORTS > 65535 else port + 1
    return list(range(base, base + SGLANG_DERIVED_PORTS))


def parse_port_range(text: str | None) -> list[int]:
    """``"50000-50100"`` -> [50000, 50100] (the ends are checked); ``""`` -> []."""
    text = str(text or "").strip()
    if not text:
        return []
    lo, sep, hi = text.partition("-")
    if not (lo.strip().isdigit() and (not sep or hi.strip().isdigit())):
        raise ValueError(f"port range {text!r} is not <low>-<high>")
    lo_i, hi_i = int(lo), int(hi or lo)
    if not 1 <= lo_i <= hi_i <= 65535:
        raise ValueError(f"port range {text!r} is outside 1..65535 or reversed")
    return sorted({lo_i, hi_i})


def group_port_checks(
    group: list[str], host: str, addresses: dict[str, str], dist_init_port: int,
    extra_args: list[str] | None = None, watchdog_port: int | None = None, nccl_port_range: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """What ``host`` listens on (stand-in listeners) and connects to, for the ports the ranks need
    beyond the rendezvous port (checked on its own). Returns ``{"listen": [{"port", "expected"}],
    "connect": [{"peer", "address", "port", "why"}]}``.

    * attention-DP ports SGLang derives from --dist-init-addr: every rank >= 1 -> rank 0;
    * the group watchdog's port: rank 0 -> every rank and every rank -> rank 0;
    * the NCCL port range when one is pinned (both ends): every rank -> every other rank.
    """
    wants: list[tuple[str, str, int, str]] = []  # (from, to, port, why)
    for other in group[1:]:
        for port in sglang_derived_ports(dist_init_port, extra_args):
            wants.append((other, group[0], port, "SGLang's attention-DP ZMQ port derived from --dist-init-addr"))
    if watchdog_port:
        for other in group[1:]:
            wants.append((group[0], other, int(watchdog_port), "the group watchdog's /state (rank 0 reads it)"))
            wants.append((other, group[0], int(watchdog_port), "the group watchdog's /state (the ranks follow rank 0)"))
    for port in parse_port_range(nccl_port_range):
        for a in group:
            for b in group:
                if a != b:
                    wants.append((a, b, port, "the pinned NCCL port range (sglang_plan_nccl_port_range)"))
    listen: dict[int, int] = {}
    connect = []
    for src, dst, port, why in wants:
        if dst == host:
            listen[port] = listen.get(port, 0) + 1
        if src == host:
            connect.append({"peer": dst, "address": str(addresses.get(dst, dst)), "port": port, "why": why})
    return {"listen": [{"port": p, "expected": n} for p, n in sorted(listen.items())], "connect": connect}


def port_problem(host: str, peer: str, address: str, port: int, why: str, error: str, timeout_s: float) -> Problem:
    """A rank could not open a TCP connection to a port another rank needs open."""
    return _problem(
        "ports",
        f"{host} cannot reach {peer} at {address}:{port} (TCP, {timeout_s:g} s): {error}".rstrip(": "),
        f"TCP port {port} of {peer} open to the other ranks of the group ({why})",
        f"allow TCP {port} from {host} to {address} in the firewall / security group",
    )
