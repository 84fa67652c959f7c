"""Bad input fails clearly, before anything changes on the host (the project rule), in the lab.

"Bad input (inventory values, flags, GPU layouts that cannot hold the model, a full disk, a hub
that is down) gets a clear error naming the host, the variable and the fix, before anything
changes on a host." Each case runs the real `site.yml` with `--limit` on one lab host and checks:
the run fails; the message names the host, what was found, what is needed and the fix (or the
variable); and nothing changed on the host (no /opt/sglang, no sglang.service, no weights dir,
`changed=0`).

Own hosts and inventory (tests/lab/inventories/badinput, 10.77.0.61-.64), never the main lab:
  bi1 no-gpu, bi2 h100-80gb-x4-old-driver, bi3 h100-80gb-x4-mig,
  bi4 h100-80gb-x2 (healthy) with a 30 GiB tmpfs at /srv/models.
Everything fails in preflight/plan (seconds) except the two argv checks that need the installed
SGLang (sglang_install verification, one ~80 s install on bi4 from the shared uv cache).
SGL_LAB=1 runs it (skipped otherwise); SGL_LAB_KEEP=1 keeps the hosts afterwards.
"""

from __future__ import annotations

import json
import os
import re
import textwrap

import pytest
import yaml

from conftest import REPO, Run, labctl, playbook, ssh

pytestmark = [pytest.mark.lab, pytest.mark.slow]

INV = REPO / "tests/lab/inventories/badinput/hosts.yml"
HOSTS = {"bi1": "10.77.0.61", "bi2": "10.77.0.62", "bi3": "10.77.0.63", "bi4": "10.77.0.64"}
HUB_DOWN = "http://10.77.0.1:1"  # nothing listens there
WEIGHTS_ROOT = "/srv/models"  # sglang_plan_weights_root default; on bi4 a 30 GiB tmpfs


@pytest.fixture(scope="module")
def hosts():
    labctl("up", "-i", str(INV))
    # a host kept from an earlier run (SGL_LAB_KEEP=1) carries its install: recreate just those
    dirty = [h for h, addr in HOSTS.items() if leftovers(addr)]
    if dirty:
        labctl("reset", "-i", str(INV), "--hosts", ",".join(dirty))
    yield HOSTS
    if os.environ.get("SGL_LAB_KEEP") != "1":
        labctl("down", "-i", str(INV))


def site(host: str, extra: dict | None = None, book: str = "site.yml") -> Run:
    args = [book, "--limit", host]
    if extra:
        args += ["-e", json.dumps(extra)]
    return playbook(*args, inventory=INV, timeout=1200)


def message(run: Run, host: str) -> str:
    """The failure message of ``host`` exactly as the user reads it: the `msg` of its last failed
    task (a failure inside a block that a rescue explains is shown too, before the rescue's)."""
    blocks = re.findall(rf"^fatal: \[{re.escape(host)}\]: FAILED! => *\n((?:    .*\n|\n)*)", run.out, re.M)
    assert blocks, f"no failure of {host} in the output:\n{run.out[-4000:]}"
    result = yaml.safe_load(textwrap.dedent(blocks[-1])) or {}
    text = str(result.get("msg", ""))
    print(f"\n--- {host} ---\n{text}")  # shown with pytest -s / in the failure report
    return text


def failed_before_changes(run: Run, host: str) -> str:
    """The run failed on ``host`` without a single change; returns the failure message."""
    assert run.rc != 0, run.out[-4000:]
    assert run.recap.get(host, {}).get("failed") == 1, run.out[-4000:]
    assert run.changed(host) == 0, f"{host} changed before failing:\n{run.out[-6000:]}"
    return message(run, host)


def leftovers(addr: str) -> str:
    """What the toolkit made on the host: install root, unit, config, anything under the weights root."""
    return ssh(
        addr,
        "ls -d /opt/sglang /etc/systemd/system/sglang.service /etc/sglang 2>/dev/null;"
        f" find {WEIGHTS_ROOT} -mindepth 1 -maxdepth 1 2>/dev/null; systemctl cat sglang.service 2>/dev/null; true",
    ).strip()


def assert_untouched(addr: str) -> None:
    """Nothing the toolkit makes exists on the host: no install root, no unit, no weights dir."""
    out = leftovers(addr)
    assert out == "", f"{addr}: the failed run left: {out}"


def assert_in(msg: str, *needles: str) -> None:
    for needle in needles:
        assert needle.lower() in msg.lower(), f"{needle!r} missing from the message:\n{msg}"


# ---------------------------------------------------------------- preflight: GPUs and driver


def test_no_gpu(hosts):
    """No NVIDIA driver: nvidia-smi is missing."""
    run = site("bi1")
    msg = failed_before_changes(run, "bi1")
    assert_in(msg, "bi1:", "[nvidia-smi]", "found nvidia-smi not found on the host", "needed the NVIDIA R580+ driver",
              "Fix:", "gpu_preflight_nvidia_smi")
    assert_untouched(hosts["bi1"])


def test_old_driver(hosts):
    """Driver 535 / CUDA 12.2: SGLang 0.5.23's wheels are CUDA 13 builds (R580+)."""
    run = site("bi2")
    msg = failed_before_changes(run, "bi2")
    assert_in(msg, "bi2:", "[driver]", "found driver 535.183.01 (CUDA 12.2)", "driver >= 580", "CUDA >= 13.0",
              "Fix:", "R580")
    assert_untouched(hosts["bi2"])


def test_mig_on(hosts):
    run = site("bi3")
    msg = failed_before_changes(run, "bi3")
    assert_in(msg, "bi3:", "[mig]", "MIG mode on", "GPU0 current=Enabled", "MIG disabled", "Fix:",
              "nvidia-smi -mig 0")
    assert_untouched(hosts["bi3"])


# ---------------------------------------------------------------- plan: layout, disk, inventory values


def test_model_does_not_fit_the_gpus(hosts):
    """The real M3 (860 GB bf16, as the inventory states it) on 2 x H100 80GB: the planner's refusal
    (exit 2 of `sgl-deploy plan`) reaches the user with the shortfall; the run (--limit bi4) has one such
    host, so no replica group is offered (issue 28: only alternatives this inventory could take)."""
    run = site("bi4", {"sglang_plan_weights_gb": 860})
    msg = failed_before_changes(run, "bi4")
    assert_in(msg, "bi4:", "does not fit on 2 x 85.5 GB GPUs", "860.0 GB weights", "short by",
              "Fix:", "more GPU memory", "sglang_replicas")
    assert "7 hosts" not in msg and "Would work" not in msg, msg
    assert_untouched(hosts["bi4"])


def test_disk_too_small(hosts):
    """A 60 GB model on a host whose weights path (a 30 GiB tmpfs) cannot hold it plus the margin."""
    run = site("bi4", {"sglang_plan_weights_gb": 60})
    msg = failed_before_changes(run, "bi4")
    assert_in(msg, "bi4:", "[disk]", f"GB free at {WEIGHTS_ROOT}", "80.0 GB (weights 60.0 GB + margin 20.0 GB)",
              "Fix:", "sglang_plan_weights_root")
    assert_untouched(hosts["bi4"])


def test_invalid_tp_override(hosts):
    """tp 3 divides neither the 64 attention heads nor the 2 GPUs: the model's rule needs no GPU, so the
    validation play refuses it (issue 28), with the plan's words and fix, before any host is contacted."""
    run = site("bi4", {"sglang_plan_tp_size": 3})
    msg = failed_before_changes(run, "bi4")
    assert_in(msg, "bi4: sglang_plan_tp_size = 3", "sglang_plan_tp_size 3 does not divide the 64 attention heads",
              "nothing was changed", "Fix: set sglang_plan_tp_size to one the model allows")
    assert_untouched(hosts["bi4"])


def test_malformed_port(hosts):
    """Caught by the sglang_plan argument spec in the fleet validation (playbooks/validate.yml), naming
    host and variable."""
    run = site("bi4", {"sglang_plan_port": "80x0"})
    msg = failed_before_changes(run, "bi4")
    assert_in(msg, "bi4: sglang_plan_port = '80x0'", "argument 'sglang_plan_port'", "int", "Fix:",
              "nothing was changed")
    assert_untouched(hosts["bi4"])


def test_port_out_of_range(hosts):
    """An int the argument spec accepts but no socket can use."""
    run = site("bi4", {"sglang_plan_port": 80000})
    msg = failed_before_changes(run, "bi4")
    assert_in(msg, "bi4: sglang_plan_port = 80000", "1..65535", "Fix:")
    assert_untouched(hosts["bi4"])


def test_hub_down(hosts):
    """No weights on the host and the hub does not answer: fail in the plan phase, before the
    install (nothing installed, no weights dir, no unit), naming the endpoint and the fix."""
    run = site("bi4", {"model_weights_endpoint": HUB_DOWN})
    msg = failed_before_changes(run, "bi4")
    assert_in(msg, "bi4:", "[hub]", HUB_DOWN, "SglLab/MiniMax-M3-Lab@master", "no complete weights",
              "Fix:", "model_weights_endpoint")
    assert_untouched(hosts["bi4"])


# ---------------------------------------------------------------- install verification (needs SGLang)


def test_unknown_tool_call_parser(hosts):
    """Only the installed SGLang knows its parser choices: the venv is built (side by side, the
    only change), then verification refuses; no active venv, no unit, no weights."""
    run = site("bi4", {"sglang_install_tool_call_parser": "no-such-parser"})
    assert run.rc != 0 and run.recap["bi4"]["failed"] == 1, run.out[-4000:]
    msg = message(run, "bi4")
    assert_in(msg, "bi4:", "no-such-parser", "sglang_install_tool_call_parser", "choices:", "minimax-m3",
              "minimax-m2", "/opt/sglang/current are untouched")
    out = ssh(hosts["bi4"], "ls -d /opt/sglang/current /etc/systemd/system/sglang.service 2>/dev/null;"
                            f" find {WEIGHTS_ROOT} -mindepth 1 -maxdepth 1; true")
    assert out.strip() == "", out


def test_unknown_extra_flag(hosts):
    """`--cuda-graph-max-bs` is no flag of SGLang 0.5.23 (only -decode/-prefill): the installed
    SGLang's own parser refuses the argv; nothing is activated or started."""
    run = site("bi4", {"sglang_plan_extra_args": ["--cuda-graph-max-bs", "16"]})
    assert run.rc != 0 and run.recap["bi4"]["failed"] == 1, run.out[-4000:]
    msg = message(run, "bi4")
    assert_in(msg, "bi4:", "--cuda-graph-max-bs", "sglang_plan_extra_args", "/opt/sglang/current are untouched")
    out = ssh(hosts["bi4"], "ls -d /opt/sglang/current /etc/systemd/system/sglang.service 2>/dev/null;"
                            f" find {WEIGHTS_ROOT} -mindepth 1 -maxdepth 1; true")
    assert out.strip() == "", out


def test_hub_down_at_the_weights_phase(hosts):
    """The weights phase alone (playbooks/weights.yml, as its header documents, with the venv the
    parser case built) meets the dead hub itself: it names host, endpoint and fix; no unit is made
    and no weights file is written."""
    run = site("bi4", {
        "model_weights_endpoint": HUB_DOWN,
        "model_weights_model_id": "SglLab/MiniMax-M3-Lab",
        "model_weights_revision": "master",
        "model_weights_dir": f"{WEIGHTS_ROOT}/SglLab--MiniMax-M3-Lab/master",
        "model_weights_python": "/opt/sglang/venvs/sglang-0.5.23/bin/python",
    }, book="playbooks/weights.yml")
    assert run.rc != 0 and run.recap["bi4"]["failed"] == 1, run.out[-4000:]
    msg = message(run, "bi4")
    assert_in(msg, "bi4:", f"cannot reach the hub at {HUB_DOWN}", "SglLab/MiniMax-M3-Lab@master", "Fix:",
              "model_weights_endpoint")
    out = ssh(hosts["bi4"], "ls -d /etc/systemd/system/sglang.service 2>/dev/null; systemctl cat sglang 2>/dev/null;"
                            f" find {WEIGHTS_ROOT} -type f -not -path '*/.sgl-weights/*'; true")
    assert out.strip() == "", out
