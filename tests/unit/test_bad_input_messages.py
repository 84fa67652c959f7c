"""Bad input gets a message naming what was found, what is needed, the fix and the variable
(the pieces behind tests/lab/test_bad_input.py, without the lab)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sgl_deploy import gpu_facts, hub, planner, preflight

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "gpu"
AnsibleFilterError = pytest.importorskip("ansible.errors").AnsibleFilterError


def _filters() -> dict:
    spec = importlib.util.spec_from_file_location("sgl_deploy_filter_plugin_bi", REPO / "plugins/filter/sgl_deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


F = _filters()


def x2_facts() -> dict:
    return gpu_facts.gpu_facts((FIX / "h100-80gb-x2" / "nvidia-smi-q-x.txt").read_text())


# ---------------------------------------------------------------- nvidia-smi


def test_nvidia_smi_missing_as_the_command_module_reports_it():
    # ansible-core 2.19 command module, binary absent: rc is the errno, stderr empty, generic msg
    result = {"rc": 2, "stdout": "", "stderr": "", "msg": "Error executing command.", "failed": False}
    p = gpu_facts.nvidia_smi_problem("nvidia-smi", result, "580")
    assert p["check"] == "nvidia-smi"
    assert p["found"].startswith("nvidia-smi not found on the host")
    assert "R580+" in p["needed"] and "gpu_preflight_nvidia_smi" in p["fix"]
    assert F["sgl_nvidia_smi_problems"](result, "nvidia-smi", "580") == [p]


def test_nvidia_smi_other_failures_quote_the_tool():
    shell_missing = gpu_facts.nvidia_smi_problem("nvidia-smi", {"rc": 127, "stderr": "sh: nvidia-smi: not found"})
    assert "not found on the host" in shell_missing["found"]
    no_driver = gpu_facts.nvidia_smi_problem("/usr/bin/nvidia-smi", {
        "rc": 9, "stderr": "",
        "stdout": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\nMake sure ..."})
    assert no_driver["found"] == ("`/usr/bin/nvidia-smi -q -x` failed (rc 9): NVIDIA-SMI has failed because it "
                                  "couldn't communicate with the NVIDIA driver.")
    denied = gpu_facts.nvidia_smi_problem("nvidia-smi", {"rc": 13, "msg": "Error executing command."}, "590")
    assert "cannot be run on the host (Permission denied)" in denied["found"] and "R590+" in denied["needed"]


def test_nvidia_smi_answering_is_no_problem():
    assert gpu_facts.nvidia_smi_problem("nvidia-smi", {"rc": 0, "stdout": "<xml/>"}) is None
    assert F["sgl_nvidia_smi_problems"]({"rc": 0, "stdout": "<xml/>"}) == []


# ---------------------------------------------------------------- planner refusals in inventory words


def test_invalid_layout_override_names_the_variable_and_the_valid_layouts():
    with pytest.raises(planner.PlanError) as err:
        planner.plan(gpu_facts=x2_facts(), weights_gb=0.02, tp_size=3)
    assert "Valid here: --tp-size 2 --ep-size 1; --tp-size 1 --ep-size 1 --pp-size 2." in err.value.message
    with pytest.raises(AnsibleFilterError) as ferr:
        F["sgl_plan"](x2_facts(), weights_gb=0.02, tp_size=3)
    text = str(ferr.value)
    assert "sglang_plan_tp_size 3 does not divide the 64 attention heads" in text
    assert "Valid here: sglang_plan_tp_size=2 sglang_plan_ep_size=1;" in text
    assert text.count("does not divide the 64") == 1, text  # the cause is not appended a second time


def test_ep_override_names_the_variable():
    with pytest.raises(AnsibleFilterError, match=r"sglang_plan_ep_size 3 does not divide the 128 experts"):
        F["sgl_plan"](x2_facts(), weights_gb=0.02, ep_size=3)


def test_port_out_of_range_is_refused():
    for port in (0, 80000):
        with pytest.raises(planner.PlanError, match=rf"invalid override: port {port} is outside 1\.\.65535"):
            planner.plan(gpu_facts=x2_facts(), weights_gb=0.02, port=port)
    with pytest.raises(AnsibleFilterError, match=r"sglang_plan_port 80000 is outside 1\.\.65535"):
        F["sgl_plan"](x2_facts(), weights_gb=0.02, port=80000)
    assert planner.plan(gpu_facts=x2_facts(), weights_gb=0.02, port=65535)["port"] == 65535


def test_shortfall_suggests_hosts_in_inventory_words():
    with pytest.raises(planner.PlanError) as err:
        planner.plan(gpu_facts=x2_facts(), weights_gb=860)
    assert "Would work: --nodes 7 (7 x 2 GPUs" in err.value.message  # the CLI keeps its flags
    text = planner.role_message(err.value.message)
    assert "Would work: 7 hosts like this one in one sglang_replicas group (7 x 2 GPUs" in text
    # the cookbook (the default recipe) has no cell for 2 x H100: its fraction for M3 bf16 (cell h200-bf16)
    assert "at sglang_plan_mem_fraction_static 0.75" in text and "860.0 GB weights" in text


def test_role_message_leaves_other_words_alone():
    assert planner.role_message("host:port 8000 and report 3") == "host:port 8000 and report 3"
    assert planner.role_message("mem_fraction_static must be between 0 and 1 (got 1.5)") == (
        "sglang_plan_mem_fraction_static must be between 0 and 1 (got 1.5)")
    assert planner.role_message("invalid override: context_length 5 exceeds") == (
        "invalid override: sglang_plan_context_length 5 exceeds")


def test_weights_dir_is_the_plans_model_path():
    p = planner.plan(gpu_facts=x2_facts(), weights_gb=0.02, model_id="SglLab/MiniMax-M3-Lab", weights_root="/srv/models/")
    assert p["model_path"] == "/srv/models/SglLab--MiniMax-M3-Lab/master"
    assert F["sgl_weights_dir"]("/srv/models/", "SglLab/MiniMax-M3-Lab", "master") == p["model_path"]


# ---------------------------------------------------------------- hub down before anything changes

REFUSED = {"status": -1, "failed": True, "url": "http://10.77.0.1:1/api/v1/models/x/y/repo/files",
           "msg": "Status code was -1 and not [200]: Request failed: <urlopen error [Errno 111] Connection refused>"}


def test_hub_down_problem_names_endpoint_model_dir_and_fix():
    p = hub.hub_problem(REFUSED, "http://10.77.0.1:1", "SglLab/MiniMax-M3-Lab", "master", "/srv/models/w")
    assert p["check"] == "hub"
    assert p["found"] == ("the model hub http://10.77.0.1:1 does not answer ([Errno 111] Connection refused), "
                          "and /srv/models/w has no complete weights")
    assert "SglLab/MiniMax-M3-Lab@master" in p["needed"]
    assert "model_weights_endpoint" in p["fix"] and "model_weights_source: shared" in p["fix"]
    line = preflight.format_problems("bi4", [p])
    assert line.startswith("bi4: preflight failed (1 problem)\n  [hub] found the model hub http://10.77.0.1:1")


def test_hub_answers_or_refuses_politely_is_not_down():
    args = ("http://hub", "a/b", "master", "/d")
    assert hub.hub_problem({"status": 200, "json": {}}, *args) is None
    for status in (401, 403, 404):  # a private repo or a typo: the weights role (with the token) decides
        assert hub.hub_problem({"status": status}, *args) is None
    assert "does not answer (HTTP 503)" in hub.hub_problem({"status": 503}, *args)["found"]
    assert F["sgl_hub_problems"]({"status": 200}, *args) == []
    assert F["sgl_hub_problems"](REFUSED, *args)[0]["check"] == "hub"


# ---------------------------------------------------------------- disk measured on the weights' own filesystem

DF = """Filesystem         1-blocks  Used    Available Capacity Mounted on
tmpfs           32212254720     0  32212254720       0% /srv/models
"""


def test_df_mounts_reads_the_filesystem_that_mount_facts_leave_out():
    mounts = preflight.df_mounts(DF)
    assert mounts == [{"device": "tmpfs", "size_total": 32212254720, "size_available": 32212254720,
                       "mount": "/srv/models"}]
    assert F["sgl_df_mounts"](DF) == mounts
    facts = [{"mount": "/", "size_available": 70_000_000_000}]  # Ansible's facts: no tmpfs, no ZFS dataset
    path = "/srv/models/SglLab--MiniMax-M3-Lab/master"
    assert preflight.free_bytes_at(mounts + facts, path) == (32212254720, "/srv/models")
    p = preflight.disk_problem(32212254720, 60, 20, f"{path} (mount /srv/models)")
    assert p["found"] == f"32.2 GB free at {path} (mount /srv/models)"
    assert "80.0 GB (weights 60.0 GB + margin 20.0 GB)" in p["needed"] and "sglang_plan_weights_root" in p["fix"]


def test_df_mounts_spaces_and_garbage():
    spaced = "Filesystem 1-blocks Used Available Capacity Mounted on\ntank/models 100 10 90 10% /mnt/my models\n"
    assert preflight.df_mounts(spaced)[0]["mount"] == "/mnt/my models"
    assert preflight.df_mounts("") == [] and preflight.df_mounts("df: /x: No such file or directory") == []


# ---------------------------------------------------------------- plan refusals: one clean message, the fix fits the cause


def test_plan_attempt_never_raises_and_fixes_fit_the_cause():
    attempt = F["sgl_plan_attempt"]
    ok = attempt(x2_facts(), inventory_host="bi4", weights_gb=0.02)
    assert ok["error"] is None and ok["plan"]["tp_size"] == 2
    cases = {
        # cause -> (needle in the message, needle in the fix, the fix must not offer other hosts)
        "short": ({"weights_gb": 860}, "does not fit", "more GPU memory", False),
        "version": ({"weights_gb": 0.02, "sglang_version": "0.4.0"}, "needs SGLang >=", "sglang_plan_sglang_version", True),
        "fraction": ({"weights_gb": 0.02, "mem_fraction_static": 1.5}, "sglang_plan_mem_fraction_static", "between 0 and 1", True),
        "profile": ({"weights_gb": 0.02, "profile": "no-such-profile"}, "no-such-profile", "sglang_plan_model_profile", True),
        "weights": ({"weights_gb": -5}, "sglang_plan_weights_gb must be > 0", "sglang_plan_weights_gb", True),
        "tp": ({"weights_gb": 0.02, "tp_size": 3}, "sglang_plan_tp_size 3", "valid layouts", True),
    }
    for name, (kwargs, in_msg, in_fix, no_hosts) in cases.items():
        res = attempt(x2_facts(), inventory_host="bi4", **kwargs)
        assert res["plan"] is None, name
        msg = res["error"]
        assert msg.startswith("bi4: ") and in_msg in msg, (name, msg)
        fix = msg.split("Fix: ", 1)[1]
        assert in_fix in fix, (name, msg)
        assert ("more GPU memory" not in fix) is no_hosts, (name, msg)
    # the weights size is never reported under the KV variable (and vice versa)
    kv = attempt(x2_facts(), inventory_host="bi4", weights_gb=0.02, kv_gb_per_mtok=-1)["error"]
    assert "sglang_plan_kv_gb_per_mtok must be > 0" in kv and "weights_gb" not in kv


def test_nvidia_smi_printing_nothing_is_a_clear_problem():
    p = gpu_facts.nvidia_smi_problem("nvidia-smi", {"rc": 0, "stdout": "  \n", "stderr": ""}, "580")
    assert p["check"] == "nvidia-smi" and "printed nothing" in p["found"] and "gpu_preflight_nvidia_smi" in p["fix"]
    assert F["sgl_nvidia_smi_problems"]({"rc": 0, "stdout": ""}, "nvidia-smi", "580") == [p]


# ---------------------------------------------------------------- one disk rule (plan and weights phase)


def _present_text(files_on_disk: dict[str, int], manifest: dict[str, int]) -> str:
    import json
    listing = {"files": [{"path": p, "size": s, "sha256": "0" * 64} for p, s in manifest.items()]}
    return json.dumps(listing) + "\n\n--- sizes\n" + "\n".join(f"{s} {p}" for p, s in files_on_disk.items())


def test_disk_rule_counts_the_weights_already_present():
    from sgl_deploy import weights
    # M3 bf16 (860 GB) on a 1.6 TB volume that holds it: ~740 GB free, margin 20 GB
    manifest = {f"model-{i:05d}.safetensors": 8_600_000_000 for i in range(100)}
    present = preflight.manifest_present_gb(_present_text(manifest, manifest))
    assert present == pytest.approx(860.0)
    assert preflight.disk_problem(740 * 10**9, 860.0, 20.0, "/srv/models", present) is None
    # the filter the plan role calls, with the host's probe output
    mounts = [{"mount": "/srv", "size_available": 740 * 10**9}]
    assert F_HOST["sgl_disk_problems"](mounts, "/srv/models/x", 860.0, 20.0, _present_text(manifest, manifest)) == []
    # a fresh host (no manifest) with the same free space fails with the disk message
    fresh = F_HOST["sgl_disk_problems"](mounts, "/srv/models/x", 860.0, 20.0, "")
    assert fresh[0]["check"] == "disk" and "880.0 GB (weights 860.0 GB + margin 20.0 GB)" in fresh[0]["needed"]
    # half there: only the missing half + margin is needed, and the message says what is there
    half = dict(list(manifest.items())[:50])
    p = preflight.disk_problem(100 * 10**9, 860.0, 20.0, "/srv", preflight.manifest_present_gb(_present_text(half, manifest)))
    assert "450.0 GB (weights 860.0 GB, 430.0 GB of them already there + margin 20.0 GB)" in p["needed"]
    # a truncated file does not count; garbage counts nothing
    short = {**manifest, "model-00000.safetensors": 5}
    assert preflight.manifest_present_gb(_present_text(short, manifest)) == pytest.approx(851.4)
    assert preflight.manifest_present_gb("not json\n--- sizes\n1 a") == 0.0 and preflight.manifest_present_gb("") == 0.0
    # the same rule as the weights tool's own check
    assert weights.space_required(860, 860, 20) == 20 and weights.space_required(860, 0, 20) == 880


def _host_filters() -> dict:
    spec = importlib.util.spec_from_file_location("sgl_host_filter_plugin_bi", REPO / "plugins/filter/sgl_host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


F_HOST = _host_filters()


def test_profile_model_id_never_raises_before_the_plan():
    # an unknown profile or variant yields "" (the hub listing is skipped) and the plan task refuses cleanly
    assert F_HOST["sgl_profile_model_id"]("minimax-m3", None, x2_facts())
    assert F_HOST["sgl_profile_model_id"]("minimax-m3", "nope", x2_facts()) == ""
    assert F_HOST["sgl_profile_model_id"]("no-such-profile") == ""
