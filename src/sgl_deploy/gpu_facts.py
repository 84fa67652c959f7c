"""GPU facts: parse ``nvidia-smi -q -x`` and ``nvidia-smi topo -m``; preflight checks.

The Ansible role ``gpu_preflight`` runs the two commands on the host and hands their
stdout to the filter ``sgl_gpu_facts`` (``plugins/filter/sgl_deploy.py``), which calls
:func:`gpu_facts`. Everything here is pure parsing of the tool's output; nothing is
guessed from product names (compute capability stays ``None`` when the XML lacks it).

Capture files (``tests/fixtures/gpu/*/*.txt``, ``shared/fixtures/gpu``) wrap a tool's
output as ``$ <command>`` / output / ``rc=<N>``; :func:`read_capture` unwraps them and
:func:`strip_capture` accepts either form.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, TypedDict

MIB = 1048576  # bytes per MiB
DEFAULT_MIN_DRIVER = "580"  # R580: CUDA 13 driver branch; SGLang 0.5.23 PyPI wheels are CUDA 13 builds
DEFAULT_MIN_CUDA = "13.0"  # torch 2.14.1+cu130 pinned by sglang 0.5.23 (reference/sglang.md §10)
FABRIC_OK_STATES = ("completed",)
FABRIC_OK_STATUS = ("success", "n/a", "")

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RC_RE = re.compile(r"^rc=(-?\d+)\s*$")


# --------------------------------------------------------------------------- captures


@dataclass(frozen=True)
class Capture:
    """One capture file: the command line, the tool's exact output and its exit status."""

    command: str | None
    output: str
    rc: int | None


def read_capture(text: str) -> Capture:
    """Split a capture (``$ cmd`` line, output, ``rc=N`` line) into its parts.

    Text without the ``$ `` header is returned unchanged as the output (raw tool output).
    Only the first line is taken as the command, as in ``shared/fixtures/gpu/README.md``.
    """
    if not text.startswith("$ "):
        return Capture(command=None, output=text, rc=None)
    first_nl = text.find("\n")
    if first_nl < 0:
        return Capture(command=text[2:].strip(), output="", rc=None)
    command = text[2:first_nl].strip()
    body = text[first_nl + 1 :]
    rc: int | None = None
    stripped = body.rstrip("\n")
    last_nl = stripped.rfind("\n")
    last_line = stripped[last_nl + 1 :]
    match = _RC_RE.match(last_line)
    if match:
        rc = int(match.group(1))
        body = stripped[: last_nl + 1] if last_nl >= 0 else ""
    return Capture(command=command, output=body, rc=rc)


def strip_capture(text: str) -> str:
    """Return the tool output of ``text``, whether it is a capture file or raw output."""
    return read_capture(text).output


def load_text(path: str | Path) -> str:
    """Read a raw output or capture file and return the tool's output."""
    return strip_capture(Path(path).read_text(encoding="utf-8", errors="replace"))


# --------------------------------------------------------------------------- XML helpers


def _text(elem: ET.Element | None, path: str) -> str | None:
    """Text of ``elem/path`` stripped; ``None`` when missing, empty or ``N/A``."""
    if elem is None:
        return None
    node = elem.find(path)
    if node is None or node.text is None:
        return None
    value = node.text.strip()
    if value in ("", "N/A", "Not Supported", "[N/A]", "Unknown Error"):
        return None
    return value


def _int(elem: ET.Element | None, path: str) -> int | None:
    """Integer value of ``elem/path`` (leading number, units ignored); ``None`` if absent."""
    value = _text(elem, path)
    if value is None:
        return None
    match = re.match(r"^\s*(-?\d+)", value)
    return int(match.group(1)) if match else None


def _sum_ints(elem: ET.Element | None, tags: Iterable[str]) -> int | None:
    """Sum the integer children ``tags`` of ``elem``; ``None`` when none is present."""
    values = [_int(elem, tag) for tag in tags]
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _yes_no(value: str | None) -> bool | None:
    """Map nvidia-smi Yes/No strings to bools; ``None`` stays ``None``."""
    if value is None:
        return None
    low = value.strip().lower()
    if low in ("yes", "true", "enabled"):
        return True
    if low in ("no", "false", "disabled"):
        return False
    return None


_UNCORRECTABLE_TAGS = (
    # DTD v12+/v13 (H100, 5xx drivers)
    "sram_uncorrectable",
    "sram_uncorrectable_parity",
    "sram_uncorrectable_secded",
    "dram_uncorrectable",
    # older DTDs
    "double_bit/total",
    "total_uncorrectable",
)


def _ecc_uncorrectable(gpu: ET.Element, scope: str) -> int | None:
    """Total uncorrectable ECC errors for ``scope`` (volatile|aggregate) where reported."""
    node = gpu.find(f"ecc_errors/{scope}")
    if node is None:
        return None
    return _sum_ints(node, _UNCORRECTABLE_TAGS)


def _retired_pages(gpu: ET.Element) -> dict[str, Any] | None:
    """Retired-page counters (pre-Ampere) where the XML reports numbers."""
    node = gpu.find("retired_pages")
    if node is None:
        return None
    single = _int(node, "multiple_single_bit_retirement/retired_count")
    double = _int(node, "double_bit_retirement/retired_count")
    pending = _yes_no(_text(node, "pending_retirement")) if _text(node, "pending_retirement") else None
    if single is None and double is None and pending is None:
        return None
    return {"single_bit": single, "double_bit": double, "pending": pending}


def _remapped_rows(gpu: ET.Element) -> dict[str, Any] | None:
    """Row-remapping state (Ampere and newer) where reported."""
    node = gpu.find("remapped_rows")
    if node is None:
        return None
    data = {
        "correctable": _int(node, "remapped_row_corr"),
        "uncorrectable": _int(node, "remapped_row_unc"),
        "pending": _yes_no(_text(node, "remapped_row_pending")),
        "failure": _yes_no(_text(node, "remapped_row_failure")),
    }
    if all(v is None for v in data.values()):
        return None
    return data


def _fabric(gpu: ET.Element) -> dict[str, Any] | None:
    """The ``<fabric>`` element (NVSwitch fabric registration) where present and not N/A."""
    node = gpu.find("fabric")
    if node is None:
        return None
    state = _text(node, "state")
    status = _text(node, "status")
    if state is None and status is None:
        return None
    return {
        "state": state,
        "status": status,
        "clique_id": _text(node, "cliqueId"),
        "cluster_uuid": _text(node, "clusterUuid"),
    }


def _compute_capability(gpu: ET.Element) -> str | None:
    """Compute capability only when the XML states it (never derived from the name)."""
    for path in ("compute_capability", "cuda_compute_capability", "compute_cap"):
        value = _text(gpu, path)
        if value:
            return value
    major = _text(gpu, "compute_capability/major")
    minor = _text(gpu, "compute_capability/minor")
    if major is not None and minor is not None:
        return f"{major}.{minor}"
    return None


def mib_to_gb(mib: int) -> float:
    """MiB -> decimal GB (``MiB * 1048576 / 1e9``), no rounding."""
    return mib * MIB / 1e9


def _parse_gpu(gpu: ET.Element, position: int) -> dict[str, Any]:
    """One ``<gpu>`` element as a plain dict."""
    mem_mib = _int(gpu, "fb_memory_usage/total")
    minor = _int(gpu, "minor_number")
    return {
        "index": minor if minor is not None else position,
        "name": _text(gpu, "product_name"),
        "uuid": _text(gpu, "uuid"),
        "pci_bus_id": _text(gpu, "pci/pci_bus_id") or gpu.get("id"),
        "memory_total_mib": mem_mib,
        "memory_total_gb": mib_to_gb(mem_mib) if mem_mib is not None else None,
        "compute_capability": _compute_capability(gpu),
        "architecture": _text(gpu, "product_architecture"),
        "persistence_mode": _text(gpu, "persistence_mode"),
        "mig_current": _text(gpu, "mig_mode/current_mig"),
        "mig_pending": _text(gpu, "mig_mode/pending_mig"),
        "ecc_current": _text(gpu, "ecc_mode/current_ecc"),
        "ecc_pending": _text(gpu, "ecc_mode/pending_ecc"),
        "ecc_uncorrectable_volatile": _ecc_uncorrectable(gpu, "volatile"),
        "ecc_uncorrectable_aggregate": _ecc_uncorrectable(gpu, "aggregate"),
        "retired_pages": _retired_pages(gpu),
        "remapped_rows": _remapped_rows(gpu),
        "fabric": _fabric(gpu),
    }


def parse_nvidia_smi_xml(xml_text: str) -> dict[str, Any]:
    """Parse ``nvidia-smi -q -x`` output (raw or capture file) into GPU facts.

    Returns ``driver_version``, ``cuda_version``, ``attached_gpus``, ``gpu_count``,
    ``gpus`` (sorted by index), ``homogeneous`` and the aggregate ``gpu_name``,
    ``gpu_memory_mib`` / ``gpu_memory_gb`` (minimum over GPUs), ``architecture``.
    Raises ``ValueError`` on text that is not nvidia-smi XML.
    """
    text = strip_capture(xml_text).strip()
    if not text:
        raise ValueError("empty nvidia-smi -q -x output")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not valid nvidia-smi XML: {exc}") from exc
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"unexpected XML root <{root.tag}>, expected <nvidia_smi_log>")
    gpus = [_parse_gpu(g, i) for i, g in enumerate(root.findall("gpu"))]
    gpus.sort(key=lambda g: g["index"])
    names = {(g["name"], g["memory_total_mib"]) for g in gpus}
    mems = [g["memory_total_mib"] for g in gpus if g["memory_total_mib"] is not None]
    archs = {g["architecture"] for g in gpus}
    min_mib = min(mems) if mems else None
    return {
        "driver_version": _text(root, "driver_version"),
        "cuda_version": _text(root, "cuda_version"),
        "attached_gpus": _int(root, "attached_gpus"),
        "gpu_count": len(gpus),
        "gpus": gpus,
        "homogeneous": len(names) <= 1,
        "gpu_name": gpus[0]["name"] if len(names) == 1 else None,
        "gpu_memory_mib": min_mib,
        "gpu_memory_gb": mib_to_gb(min_mib) if min_mib is not None else None,
        "architecture": archs.pop() if len(archs) == 1 else None,
    }


# --------------------------------------------------------------------------- topology


def _split_cells(line: str) -> list[str]:
    """Split a ``topo -m`` line on tabs, keeping empty cells (they are columns)."""
    return [cell.strip() for cell in line.split("\t")]


def parse_topology(topo_text: str) -> dict[str, Any]:
    """Parse ``nvidia-smi topo -m`` (raw or capture) into a link matrix.

    Result: ``devices`` (row labels: GPU0.., NIC0..), ``gpus`` (GPU labels),
    ``links`` {GPUi: {GPUj: "NV18"|"SYS"|...}} between GPUs, ``pairs`` list of
    {a, b, link} for i<j, ``cpu_affinity`` / ``numa_affinity`` per GPU, ``nvlink``
    (any GPU pair over NVLink), ``all_nvlink`` (every pair NV#, needs >=2 GPUs).
    """
    text = _ANSI_RE.sub("", strip_capture(topo_text))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header_idx = next(
        (i for i, ln in enumerate(lines) if re.search(r"\bGPU0\b", ln) and _split_cells(ln)[0] == ""),
        None,
    )
    if header_idx is None:
        raise ValueError("no topology matrix header (GPU0 ...) found in nvidia-smi topo -m output")
    header = _split_cells(lines[header_idx])
    if header and header[0] == "":
        header = header[1:]
    columns = [c for c in header]
    devices: list[str] = []
    links: dict[str, dict[str, str]] = {}
    cpu_aff: dict[str, str | None] = {}
    numa_aff: dict[str, str | None] = {}
    for line in lines[header_idx + 1 :]:
        cells = _split_cells(line)
        label = cells[0]
        if not re.match(r"^(GPU|NIC)\d+$", label):
            break  # legend or NIC legend follows the matrix
        devices.append(label)
        row = cells[1:]
        entry: dict[str, str] = {}
        for col, value in zip(columns, row):
            if re.match(r"^(GPU|NIC)\d+$", col):
                entry[col] = value
        if label.startswith("GPU"):
            links[label] = {k: v for k, v in entry.items() if k.startswith("GPU") and k != label}
            named = dict(zip(columns, row))
            cpu_aff[label] = named.get("CPU Affinity") or None
            numa_aff[label] = named.get("NUMA Affinity") or None
    gpus = [d for d in devices if d.startswith("GPU")]
    pairs = []
    for i, a in enumerate(gpus):
        for b in gpus[i + 1 :]:
            pairs.append({"a": int(a[3:]), "b": int(b[3:]), "link": links.get(a, {}).get(b)})
    nv = [bool(p["link"] and p["link"].startswith("NV")) for p in pairs]
    return {
        "devices": devices,
        "gpus": gpus,
        "links": links,
        "pairs": pairs,
        "cpu_affinity": cpu_aff,
        "numa_affinity": numa_aff,
        "nvlink": any(nv),
        "all_nvlink": bool(nv) and all(nv),
    }


# --------------------------------------------------------------------------- facts


def gpu_facts(xml_text: str, topo_text: str | None = None) -> dict[str, Any]:
    """GPU facts from ``nvidia-smi -q -x`` (and optionally ``topo -m``) output.

    Adds ``topology`` (or ``None``), ``nvlink`` (bool, ``None`` without topology),
    ``all_nvlink`` and ``needs_fabric_manager`` (see :func:`needs_fabric_manager`).
    """
    facts = parse_nvidia_smi_xml(xml_text)
    topo = parse_topology(topo_text) if topo_text and topo_text.strip() else None
    facts["topology"] = topo
    facts["nvlink"] = topo["nvlink"] if topo else None
    facts["all_nvlink"] = topo["all_nvlink"] if topo else None
    facts["needs_fabric_manager"] = needs_fabric_manager(facts)
    return facts


def needs_fabric_manager(facts: dict[str, Any]) -> bool:
    """Whether this host's GPUs sit on an NVSwitch fabric (so Fabric Manager must run).

    Heuristic, from parsed data only (never from product names):

    1. any GPU reports a ``<fabric>`` state other than N/A: the driver only reports
       fabric registration for GPUs attached to an NVSwitch fabric (HGX/DGX baseboards,
       also when a VM gets a subset of them, as on the captured hosts); or
    2. more than 4 GPUs and every GPU pair is NVLink (``topo -m`` NV#): NVLink bridges
       join at most pairs and 4-GPU boards can mesh directly, so all-to-all NVLink
       among more than 4 GPUs needs NVSwitches.
    """
    if any(g.get("fabric") for g in facts.get("gpus", [])):
        return True
    return int(facts.get("gpu_count") or 0) > 4 and bool(facts.get("all_nvlink"))


# --------------------------------------------------------------------------- preflight


class Problem(TypedDict):
    """One failed preflight check; the role formats it with the host name."""

    check: str
    found: str
    needed: str
    fix: str


def version_tuple(version: str | None) -> tuple[int, ...]:
    """``"580.159.04"`` -> ``(580, 159, 4)``; non-numeric parts end the tuple."""
    parts: list[int] = []
    for piece in str(version or "").strip().split("."):
        match = re.match(r"^(\d+)", piece)
        if not match:
            break
        parts.append(int(match.group(1)))
    return tuple(parts)


def nvidia_smi_problem(
    command: str, result: dict[str, Any], min_driver: str | None = DEFAULT_MIN_DRIVER
) -> Problem | None:
    """The problem of a failed ``nvidia-smi -q -x`` (``result``: Ansible's command result), or None.

    A missing binary (rc 127 from a shell, or the command module's ``No such file or directory``
    with rc 2 and empty stderr) says "not found"; any other failure quotes the tool's first line
    (nvidia-smi prints its driver errors on stdout, e.g. "NVIDIA-SMI has failed because it couldn't
    communicate with the NVIDIA driver").
    """
    rc = result.get("rc")
    branch = f"R{version_tuple(min_driver)[0]}" if version_tuple(min_driver) else "R580"
    if rc == 0 and not result.get("failed"):
        if str(result.get("stdout") or "").strip():
            return None
        return Problem(  # a wrapper or a broken install that answers nothing: no XML to parse
            check="nvidia-smi",
            found=f"`{command} -q -x` exited 0 but printed nothing",
            needed=f"`{command} -q -x` printing the GPUs as XML (NVIDIA {branch}+ driver)",
            fix=f"run `{command} -q -x` on the host: if gpu_preflight_nvidia_smi points at a wrapper, make it pass "
            "its arguments and output through, else reinstall the NVIDIA driver utilities",
        )
    said = next(
        (line.strip() for key in ("stderr", "stdout", "msg") for line in str(result.get(key) or "").splitlines()
         if line.strip()),
        "",
    )
    # the command module could not execute it: rc is the errno (2 = ENOENT), the text is generic
    not_run = said.startswith("Error executing command") and isinstance(rc, int) and rc > 0
    if rc == 127 or (not_run and rc == errno.ENOENT) or "no such file" in said.lower() or "not found" in said.lower():
        found = f"{command} not found on the host (no NVIDIA driver installed, or not on PATH)"
    elif not_run:
        found = f"{command} cannot be run on the host ({os.strerror(rc)})"
    else:
        found = f"`{command} -q -x` failed (rc {rc}): {said[:300] or 'no output'}"
    return Problem(
        check="nvidia-smi",
        found=found,
        needed=f"the NVIDIA {branch}+ driver loaded and `{command} -q -x` answering",
        fix=f"install the NVIDIA {branch}+ datacenter driver and reboot, check that `nvidia-smi` lists the GPUs "
        "(`dmesg | grep -i nvrm` shows driver errors); if nvidia-smi lives outside PATH set gpu_preflight_nvidia_smi "
        "to its path",
    )


DEFAULT_REQUIREMENTS: dict[str, Any] = {
    "min_driver": DEFAULT_MIN_DRIVER,
    "min_cuda": DEFAULT_MIN_CUDA,
    "min_gpus": 1,
    "require_homogeneous": True,
    "forbid_mig": True,
    "forbid_uncorrectable_ecc": True,
    "require_fabric_manager": False,
    "fabric_manager_active": None,
}


def _check_driver(facts: dict[str, Any], req: dict[str, Any]) -> list[Problem]:
    driver, cuda = facts.get("driver_version"), facts.get("cuda_version")
    min_driver, min_cuda = req.get("min_driver"), req.get("min_cuda")
    too_old = bool(min_driver) and version_tuple(driver) < version_tuple(min_driver)
    cuda_old = bool(min_cuda) and version_tuple(cuda) < version_tuple(min_cuda)
    if not (too_old or cuda_old):
        return []
    needed = f"driver >= {min_driver}" + (f" (CUDA >= {min_cuda})" if min_cuda else "")
    return [
        Problem(
            check="driver",
            found=f"driver {driver or 'unknown'} (CUDA {cuda or 'unknown'})",
            needed=needed + ": SGLang 0.5.23 PyPI wheels are CUDA 13 builds (torch 2.14.1+cu130)",
            fix=f"install an NVIDIA R{version_tuple(min_driver)[0] if min_driver else 580} (or newer) "
            "datacenter driver with the matching nvidia-fabricmanager, reboot, rerun preflight",
        )
    ]


def _check_homogeneous(facts: dict[str, Any]) -> list[Problem]:
    if facts.get("homogeneous", True):
        return []
    kinds = sorted({f"{g['name']} ({g['memory_total_mib']} MiB)" for g in facts.get("gpus", [])})
    return [
        Problem(
            check="homogeneous_gpus",
            found="mixed GPUs: " + ", ".join(kinds),
            needed="identical GPUs (same model and memory) for tensor parallelism",
            fix="serve from a host with identical GPUs, or limit the GPUs used (CUDA_VISIBLE_DEVICES) "
            "to one model and set the GPU count explicitly",
        )
    ]


def _check_mig(facts: dict[str, Any]) -> list[Problem]:
    bad = [
        g for g in facts.get("gpus", []) if "enabled" in (str(g.get("mig_current")) + str(g.get("mig_pending"))).lower()
    ]
    if not bad:
        return []
    desc = ", ".join(f"GPU{g['index']} current={g['mig_current']} pending={g['mig_pending']}" for g in bad)
    return [
        Problem(
            check="mig",
            found=f"MIG mode on: {desc}",
            needed="MIG disabled (current and pending) on every GPU",
            fix="stop GPU workloads, run `nvidia-smi -mig 0` (per GPU: `-i N -mig 0`), "
            "then reset the GPUs (`nvidia-smi -r`) or reboot",
        )
    ]


def _check_ecc(facts: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for g in facts.get("gpus", []):
        vol = g.get("ecc_uncorrectable_volatile") or 0
        rows = g.get("remapped_rows") or {}
        pages = g.get("retired_pages") or {}
        issues = []
        if vol > 0:
            issues.append(f"{vol} volatile uncorrectable ECC errors")
        if rows.get("pending"):
            issues.append("row remapping pending")
        if rows.get("failure"):
            issues.append("row remapping failure")
        if pages.get("pending"):
            issues.append("page retirement pending")
        if not issues:
            continue
        problems.append(
            Problem(
                check="ecc",
                found=f"GPU{g['index']} ({g.get('pci_bus_id')}): " + ", ".join(issues),
                needed="no volatile uncorrectable ECC errors and no pending row remap/page retirement",
                fix="drain the GPU and reset it (`nvidia-smi -r -i N`) or reboot; "
                "if errors persist or remapping failed, RMA the GPU",
            )
        )
    return problems


def _check_fabric(facts: dict[str, Any], req: dict[str, Any]) -> list[Problem]:
    gpus = facts.get("gpus", [])
    reported = [g for g in gpus if g.get("fabric")]
    bad = [
        g
        for g in reported
        if str(g["fabric"].get("state") or "").lower() not in FABRIC_OK_STATES
        or str(g["fabric"].get("status") or "").lower() not in FABRIC_OK_STATUS
    ]
    fix = (
        "install nvidia-fabricmanager at exactly the driver version "
        f"({facts.get('driver_version')}), `systemctl enable --now nvidia-fabricmanager`, "
        "then rerun preflight (CUDA fails with Error 802 'system not yet initialized' otherwise)"
    )
    if bad:
        desc = ", ".join(f"GPU{g['index']} state={g['fabric']['state']} status={g['fabric']['status']}" for g in bad)
        return [
            Problem(
                check="fabric_manager",
                found=f"NVSwitch fabric not initialised: {desc}",
                needed="fabric state Completed / status Success on every GPU",
                fix=fix,
            )
        ]
    if not reported and req.get("fabric_manager_active") is False:
        return [
            Problem(
                check="fabric_manager",
                found="NVSwitch system (by topology) and nvidia-fabricmanager is not active",
                needed="nvidia-fabricmanager running",
                fix=fix,
            )
        ]
    return []


def check_preflight(facts: dict[str, Any], requirements: dict[str, Any] | None = None) -> list[Problem]:
    """Check GPU facts against ``requirements`` (merged over ``DEFAULT_REQUIREMENTS``).

    Requirement keys: ``min_driver`` (numeric tuple compare, "580" = R580 or newer),
    ``min_cuda``, ``min_gpus``, ``require_homogeneous``, ``forbid_mig``,
    ``forbid_uncorrectable_ecc``, ``require_fabric_manager`` (caller decides, usually
    from :func:`needs_fabric_manager`) and ``fabric_manager_active`` (bool from the
    service state, or ``None`` when unknown: only used when the XML has no fabric data).
    Returns the problems; empty list = pass.
    """
    req = dict(DEFAULT_REQUIREMENTS)
    req.update({k: v for k, v in (requirements or {}).items() if v is not None or k == "fabric_manager_active"})
    problems: list[Problem] = []
    count = int(facts.get("gpu_count") or 0)
    min_gpus = int(req.get("min_gpus") or 0)
    if count < min_gpus:
        problems.append(
            Problem(
                check="gpu_count",
                found=f"{count} GPUs visible to nvidia-smi",
                needed=f"at least {min_gpus} GPUs",
                fix="check `nvidia-smi -L`, the driver (`dmesg | grep -i nvrm`) and the host's GPU allocation",
            )
        )
    if count:
        problems += _check_driver(facts, req)
    if req.get("require_homogeneous"):
        problems += _check_homogeneous(facts)
    if req.get("forbid_mig"):
        problems += _check_mig(facts)
    if req.get("forbid_uncorrectable_ecc"):
        problems += _check_ecc(facts)
    if req.get("require_fabric_manager"):
        problems += _check_fabric(facts, req)
    return problems


# --------------------------------------------------------------------------- CLI


def format_table(facts: dict[str, Any]) -> str:
    """A short human-readable summary of GPU facts."""
    lines = [
        f"driver {facts.get('driver_version')}  CUDA {facts.get('cuda_version')}  "
        f"GPUs {facts.get('gpu_count')}  homogeneous {facts.get('homogeneous')}  "
        f"nvlink {facts.get('nvlink')}  all_nvlink {facts.get('all_nvlink')}  "
        f"needs_fabric_manager {facts.get('needs_fabric_manager')}",
        f"{'idx':>3}  {'name':<24} {'MiB':>7} {'GB':>8}  {'arch':<9} {'bus id':<17} {'MIG':<9} {'ECC':<8} fabric",
    ]
    for g in facts.get("gpus", []):
        fabric = g.get("fabric") or {}
        gb = g.get("memory_total_gb")
        lines.append(
            f"{g['index']:>3}  {str(g['name'])[:24]:<24} {g['memory_total_mib'] or '-':>7} "
            f"{(f'{gb:.2f}' if gb else '-'):>8}  {str(g['architecture']):<9} {str(g['pci_bus_id']):<17} "
            f"{str(g['mig_current']):<9} {str(g['ecc_current']):<8} "
            f"{fabric.get('state', '-')}/{fabric.get('status', '-')}"
        )
    return "\n".join(lines)


def _cmd_gpu_facts(args: argparse.Namespace) -> int:
    try:
        xml_text = load_text(args.nvidia_smi_xml)
        topo_text = load_text(args.topo) if args.topo else None
        facts = gpu_facts(xml_text, topo_text)
    except (OSError, ValueError) as exc:
        print(f"sgl-deploy gpu-facts: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
    else:
        print(format_table(facts))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``gpu-facts`` verb."""
    p = subparsers.add_parser(
        "gpu-facts",
        help="parse nvidia-smi -q -x (and topo -m) into GPU facts",
        description="Parse `nvidia-smi -q -x` output (raw XML or a capture file with the "
        "`$ cmd` header and `rc=N` trailer) and optionally `nvidia-smi topo -m`.",
    )
    p.add_argument("--nvidia-smi-xml", required=True, metavar="FILE", help="nvidia-smi -q -x output")
    p.add_argument("--topo", metavar="FILE", help="nvidia-smi topo -m output")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=_cmd_gpu_facts)
