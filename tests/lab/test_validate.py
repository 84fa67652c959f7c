"""Every bad inventory value is refused before any host changes (issue 15), in the lab.

`playbooks/validate.yml` (the first play of site.yml, redeploy.yml and every phase playbook) checks
every host of the run on the controller. Here 48 bad values, across every role and every playbook,
run against the already-serving main lab (session fixture `site`: lab1, lab2 serving, labrouter
routing). For each case: the run fails; the message names the host and the variable and says that
nothing was changed; no task other than the validation ran; and every host's fingerprint (the
files under the toolkit's paths, the units, the MainPIDs) is what it was before. At the end the
engines still have their MainPIDs and answer /v1/models with the key.

The disk cases run on their own host (tests/lab/inventories/validate, vd1 10.77.0.85, a 64 MiB
tmpfs at /srv/models): with the weights on disk and less than weights + margin free, site.yml and
`--tags probe` pass; a fresh weights dir on the same disk fails with the disk message.
SGL_LAB=1 runs it (skipped otherwise); SGL_LAB_KEEP=1 keeps vd1 afterwards.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import REPO, Run, inventory_copy, labctl, playbook, ssh

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LAB = {"lab1": "10.77.0.11", "lab2": "10.77.0.12", "labrouter": "10.77.0.20"}
KEY = "lab-secret-key"
VALIDATE_TASKS = {"Validate every host's variables (controller only, no host contact)",
                  "Remember that this run is validated"}
# Everything the toolkit makes on a host; modification times and sizes of every file, link targets.
FINGERPRINT = (
    "for p in /opt/sglang /opt/sglang-router /etc/sglang /etc/sglang-router /srv/models /var/lib/sgl-deploy "
    "/etc/systemd/system; do [ -e $p ] && find $p -xdev -path '*/__pycache__' -prune -o -printf '%p %s %T@ %l\\n'; "
    "done | sort | sha256sum | cut -c1-16; "
    "for u in sglang sglang-router; do echo $u $(systemctl show -p MainPID -p ActiveState --value $u | tr '\\n' ' '); done"
)

# (id, playbook, extra vars, variable the message must name, more ansible-playbook args)
CASES: list[tuple[str, str, dict, str, list[str]]] = [
    # sglang_plan (site.yml and the phases that plan first)
    ("revision-escapes", "site.yml", {"sglang_plan_model_revision": "../escape"}, "sglang_plan_model_revision", []),
    ("revision-slash", "playbooks/redeploy.yml", {"sglang_plan_model_revision": "a/b"}, "sglang_plan_model_revision", []),
    ("model-id-dots", "site.yml", {"sglang_plan_model_id": "../../etc"}, "sglang_plan_model_id", []),
    ("weights-root-relative", "site.yml", {"sglang_plan_weights_root": "srv/models"}, "sglang_plan_weights_root", []),
    ("weights-root-etc", "playbooks/preflight.yml", {"sglang_plan_weights_root": "/etc/models"}, "sglang_plan_weights_root", []),
    ("extra-args-string", "site.yml", {"sglang_plan_extra_args": "--enable-metrics"}, "sglang_plan_extra_args", []),
    ("extra-args-planned", "playbooks/install.yml", {"sglang_plan_extra_args": ["--tp-size", "2"]}, "sglang_plan_extra_args", []),
    ("extra-args-api-key", "site.yml", {"sglang_plan_extra_args": ["--api-key", "x"]}, "sglang_plan_extra_args", []),
    ("extra-args-host", "playbooks/serve.yml", {"sglang_plan_extra_args": ["--host=127.0.0.1"]}, "sglang_plan_extra_args", []),
    ("two-replica-groups", "site.yml", {"sglang_replicas": {"g1": ["lab1", "lab2"], "g2": ["lab2"]}}, "sglang_plan_replicas", []),
    ("replica-not-a-server", "site.yml", {"sglang_replicas": {"g1": ["lab1", "labrouter"]}}, "sglang_plan_replicas", []),
    ("replica-unknown-host", "playbooks/preflight.yml", {"sglang_replicas": {"g1": ["lab1", "lab9"]}}, "sglang_plan_replicas", []),
    ("replica-cut-by-limit", "site.yml", {"sglang_replicas": {"g1": ["lab1", "lab2"]}}, "sglang_plan_replicas", ["--limit", "lab1"]),
    ("rendezvous-port", "site.yml", {"sglang_plan_dist_init_port": 0}, "sglang_plan_dist_init_port", []),
    ("engine-port", "playbooks/serve.yml", {"sglang_plan_port": 80000}, "sglang_plan_port", []),
    ("engine-port-type", "site.yml", {"sglang_plan_port": "80x0"}, "sglang_plan_port", []),
    ("mem-fraction", "site.yml", {"sglang_plan_mem_fraction_static": 1.5}, "sglang_plan_mem_fraction_static", []),
    ("profile-unknown", "site.yml", {"sglang_plan_model_profile": "minimax-m9"}, "sglang_plan_model_profile", []),
    ("variant-unknown", "site.yml", {"sglang_plan_variant": "nope"}, "sglang_plan_variant", []),
    ("sglang-version", "playbooks/install.yml", {"sglang_plan_sglang_version": "latest"}, "sglang_plan_sglang_version", []),
    ("weights-size-negative", "site.yml", {"sglang_plan_weights_gb": -5}, "sglang_plan_weights_gb", []),
    ("tp-zero-tags-probe", "site.yml", {"sglang_plan_tp_size": 0}, "sglang_plan_tp_size", ["--tags", "probe"]),
    ("context-zero", "playbooks/probe.yml", {"sglang_plan_context_length": 0}, "sglang_plan_context_length", []),
    # gpu_preflight
    ("fabric-manager-choice", "playbooks/preflight.yml", {"gpu_preflight_fabric_manager": "maybe"}, "gpu_preflight_fabric_manager", []),
    ("min-driver", "site.yml", {"gpu_preflight_min_driver": "R580"}, "gpu_preflight_min_driver", []),
    ("min-gpus-type", "playbooks/preflight.yml", {"gpu_preflight_min_gpus": "two"}, "gpu_preflight_min_gpus", []),
    # sglang_install
    ("index-url", "playbooks/install.yml", {"sglang_install_index_url": "pypi.example.com/simple"}, "sglang_install_index_url", []),
    ("offline-no-wheelhouse", "site.yml", {"sglang_install_offline": True}, "sglang_install_offline", []),
    ("extra-index-urls", "playbooks/redeploy.yml", {"sglang_install_extra_index_urls": ["download.pytorch.org/whl"]},
     "sglang_install_extra_index_urls", []),
    ("install-root-usr", "playbooks/install.yml", {"sglang_install_root": "/usr/local/sglang"}, "sglang_install_root", []),
    ("install-env-list", "site.yml", {"sglang_install_environment": {"PIP_CERT": ["a", "b"]}}, "sglang_install_environment", []),
    # model_weights
    ("weights-source-choice", "playbooks/weights.yml", {"model_weights_source": "bogus"}, "model_weights_source", []),
    ("weights-endpoint", "site.yml", {"model_weights_endpoint": "10.77.0.1:18080"}, "model_weights_endpoint", []),
    ("weights-model-id", "playbooks/weights.yml", {"model_weights_model_id": "SglLab/../x"}, "model_weights_model_id", []),
    ("weights-revision", "playbooks/weights.yml", {"model_weights_revision": ".."}, "model_weights_revision", []),
    ("weights-workers-type", "site.yml", {"model_weights_max_workers": "many"}, "model_weights_max_workers", []),
    ("weights-token", "site.yml", {"model_weights_token": "tok en"}, "model_weights_token", []),
    # sglang_service
    ("api-key-newline", "site.yml", {"sglang_service_api_key": KEY + "\n"}, "sglang_service_api_key", []),
    ("env-mapping", "playbooks/serve.yml", {"sglang_service_environment": {"SGL_LAB_LOAD_SECONDS": {"a": 1}}},
     "sglang_service_environment", []),
    ("nccl-env-list", "site.yml", {"sglang_service_nccl_environment": {"NCCL_DEBUG": ["INFO"]}},
     "sglang_service_nccl_environment", []),
    ("unit-name", "playbooks/serve.yml", {"sglang_service_name": "sglang/../x"}, "sglang_service_name", []),
    ("restart-sec-type", "playbooks/serve.yml", {"sglang_service_restart_sec": "soon"}, "sglang_service_restart_sec", []),
    ("backup-dir-root", "playbooks/redeploy.yml", {"sglang_service_backup_dir": "/"}, "sglang_service_backup_dir", []),
    # sglang_router
    ("router-port", "playbooks/router.yml", {"sglang_router_port": 70000}, "sglang_router_port", []),
    ("router-metrics-clash", "site.yml", {"sglang_router_prometheus_port": 30000}, "sglang_router_prometheus_port", []),
    ("router-extra-args", "playbooks/router.yml", {"sglang_router_extra_args": ["--policy", "random"]}, "sglang_router_extra_args", []),
    ("router-api-key", "playbooks/router.yml", {"sglang_router_api_key": "a b"}, "sglang_router_api_key", []),
    ("router-version", "site.yml", {"sglang_router_version": ">=0.3"}, "sglang_router_version", []),
    ("router-env", "playbooks/router.yml", {"sglang_router_environment": {"X": {"y": 1}}}, "sglang_router_environment", []),
    # probes
    ("probes-skip", "playbooks/probe.yml", {"probes_skip": ["nope"]}, "probes_skip", []),
    ("probes-only", "site.yml", {"probes_only": ["chat", "Tools"]}, "probes_only", []),
    ("probes-vision-choice", "playbooks/probe.yml", {"probes_vision": "maybe"}, "probes_vision", []),
    ("probes-base-url", "playbooks/probe.yml", {"probes_base_url": "localhost:8000"}, "probes_base_url", []),
    ("probes-concurrency", "site.yml", {"probes_concurrency": 0}, "probes_concurrency", []),
]


def fingerprints() -> dict[str, str]:
    with ThreadPoolExecutor(len(LAB)) as pool:
        return dict(zip(LAB, pool.map(lambda addr: ssh(addr, FINGERPRINT).strip(), LAB.values())))


def refused_before_any_task(run: Run, variable: str) -> str:
    """The run failed in the validation, naming the variable; no other task ran on any host."""
    assert run.rc != 0, run.out[-3000:]
    assert "nothing was changed on any host" in run.out, run.out[-3000:]
    lines = [ln.strip() for ln in run.out.splitlines() if re.match(r"^\s+\S+: \S+ = .*Fix: ", ln)]
    assert any(ln.split(": ", 1)[1].startswith(variable) for ln in lines), (variable, run.out[-3000:])
    tasks = set(re.findall(r"^TASK \[(.*?)\]", run.out, re.M))
    assert tasks <= VALIDATE_TASKS, f"other tasks ran: {tasks - VALIDATE_TASKS}"
    assert all(r["changed"] == 0 for r in run.recap.values()), run.recap
    return "\n".join(lines)


def engine_answers(addr: str) -> str:
    return ssh(addr, f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {KEY}' "
                     "http://127.0.0.1:8000/v1/models", check=False).strip()


def test_bad_values_are_refused_before_any_host_changes(site):
    """48+ bad values, every role, every playbook, against the serving main lab. Each case costs one
    controller-side validation (a few seconds); three run at a time. Every case must fail in the
    validation with no other task run and nothing changed; the fleet's fingerprint (unit files, key
    files, venv links, MainPIDs) is the same after all of them."""
    before = fingerprints()
    assert all(engine_answers(LAB[h]) == "200" for h in ("lab1", "lab2"))

    def one(case):
        case_id, book, extra, variable, more = case
        started = time.monotonic()
        run = playbook(book, "-e", json.dumps(extra), *more, timeout=300)
        try:
            text = refused_before_any_task(run, variable)
            assert KEY + "\n" not in run.out and "tok en" not in run.out  # secrets masked
            return f"ok   {case_id:<24} {book:<24} {time.monotonic() - started:5.1f} s  {text.splitlines()[0][:140]}", None
        except AssertionError as exc:
            return f"FAIL {case_id}: {str(exc)[:2000]}", f"{case_id} ({book}, {extra}): {exc}"

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, CASES))
    print(*(line for line, _f in results), sep="\n")
    failures = [f for _line, f in results if f]
    assert not failures, "\n\n".join(failures)
    assert len(CASES) >= 40
    # the serving fleet is untouched: same MainPIDs (in the fingerprint) and still answering with the key
    assert fingerprints() == before
    assert all(engine_answers(LAB[h]) == "200" for h in ("lab1", "lab2"))


def test_every_problem_of_every_host_at_once(site, tmp_path):
    """Bad values on three hosts (host_vars files, as a user edits them): one run names all of them."""
    before = fingerprints()
    inv = inventory_copy(tmp_path, {
        "lab1": {"sglang_plan_model_revision": "../x"},
        "lab2": {"sglang_service_api_key": "two\nlines", "probes_skip": ["nope"]},
        "labrouter": {"sglang_router_port": 0},
    })
    run = playbook("site.yml", inventory=inv, timeout=300)
    text = refused_before_any_task(run, "sglang_plan_model_revision")
    for needle in ("lab1: sglang_plan_model_revision = '../x'", "lab2: sglang_service_api_key = <secret, 9 chars>",
                   "lab2: probes_skip = ['nope']", "labrouter: sglang_router_port = 0"):
        assert needle in text, text
    assert "two\nlines" not in run.out
    assert fingerprints() == before


# ---------------------------------------------------------------- one disk rule, on its own host

VD_INV = REPO / "tests/lab/inventories/validate/hosts.yml"
VD = "10.77.0.85"


@pytest.fixture(scope="module")
def vd1():
    labctl("up", "-i", str(VD_INV))
    run = playbook("site.yml", inventory=VD_INV, timeout=1500)
    assert run.rc == 0, run.out[-6000:]
    yield VD
    if os.environ.get("SGL_LAB_KEEP") != "1":
        labctl("down", "-i", str(VD_INV))


def _disk(addr: str) -> tuple[int, int]:
    """(free bytes at /srv/models, bytes of the weights there per MANIFEST.json)."""
    out = ssh(addr, "df -P -B1 /srv/models | tail -1 | awk '{print $4}'; "
                    "cat /srv/models/SglLab--MiniMax-M3-Lab/master/MANIFEST.json")
    free, manifest = out.split("\n", 1)
    return int(free), int(json.loads(manifest)["total_bytes"])


def test_rerun_with_weights_present_and_disk_below_weights_plus_margin(vd1):
    """Free space holds the margin but not weights + margin: the weights are there, so site.yml and
    --tags probe pass (the plan counts them, like the weights tool); a fresh weights dir on the same
    disk, which would need weights + margin, fails in the plan with the disk message."""
    free, weights = _disk(vd1)
    margin_gb = (free - weights // 2) / 1e9  # weights + margin > free > margin
    assert weights + margin_gb * 1e9 > free > margin_gb * 1e9
    extra = json.dumps({"sglang_plan_disk_margin_gb": margin_gb})
    pid = ssh(vd1, "systemctl show -p MainPID --value sglang").strip()
    run = playbook("site.yml", "-e", extra, inventory=VD_INV, timeout=900)
    assert run.rc == 0, run.out[-6000:]
    run = playbook("site.yml", "--tags", "probe", "-e", extra, inventory=VD_INV, timeout=900)
    assert run.rc == 0, run.out[-6000:]
    assert ssh(vd1, "systemctl show -p MainPID --value sglang").strip() == pid
    # fresh: no weights in that dir yet, the same disk and margin
    fresh = json.dumps({"sglang_plan_disk_margin_gb": margin_gb, "sglang_plan_weights_root": "/srv/models/fresh"})
    run = playbook("site.yml", "-e", fresh, inventory=VD_INV, timeout=900)
    assert run.rc != 0 and run.recap["vd1"]["changed"] == 0, run.out[-6000:]
    assert "[disk]" in run.out and "free at /srv/models/fresh" in run.out and "sglang_plan_weights_root" in run.out, \
        run.out[-4000:]
    assert ssh(vd1, "ls /srv/models/fresh 2>/dev/null; true").strip() == ""
    assert ssh(vd1, "systemctl show -p MainPID --value sglang").strip() == pid
