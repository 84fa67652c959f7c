"""GPU facts from the real nvidia-smi captures (and the derived fixtures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sgl_deploy import gpu_facts as gf
from sgl_deploy.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "gpu"
REAL = {"h100-80gb-x2": 2, "h100-80gb-x4": 4}
DERIVED = {"h100-80gb-x8": 8, "h100-80gb-x4-old-driver": 4, "h100-80gb-x4-mig": 4}


def facts_for(profile: str, topo: bool = True) -> dict:
    xml = (FIX / profile / "nvidia-smi-q-x.txt").read_text()
    topo_text = (FIX / profile / "topo.txt").read_text() if topo else None
    return gf.gpu_facts(xml, topo_text)


# --------------------------------------------------------------------------- captures


def test_read_capture_splits_header_output_and_rc():
    cap = gf.read_capture((FIX / "h100-80gb-x4" / "nvidia-smi-L.txt").read_text())
    assert cap.command == "nvidia-smi -L"
    assert cap.rc == 0
    assert cap.output.startswith("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-2ce571f3")
    assert cap.output.endswith("a1eb3e616da6)\n")
    assert "rc=" not in cap.output


def test_raw_output_passes_through_unchanged():
    raw = "<nvidia_smi_log/>\n"
    assert gf.strip_capture(raw) == raw
    assert gf.read_capture(raw).rc is None


def test_raw_and_capture_parse_identically():
    text = (FIX / "h100-80gb-x4" / "nvidia-smi-q-x.txt").read_text()
    raw = gf.strip_capture(text)
    assert raw.startswith("<?xml")
    assert gf.parse_nvidia_smi_xml(raw) == gf.parse_nvidia_smi_xml(text)


# --------------------------------------------------------------------------- real captures


@pytest.mark.parametrize("profile,count", sorted((REAL | DERIVED).items()))
def test_every_capture_parses(profile, count):
    facts = facts_for(profile)
    assert facts["gpu_count"] == count
    assert facts["attached_gpus"] == count
    assert [g["index"] for g in facts["gpus"]] == list(range(count))
    assert len({g["uuid"] for g in facts["gpus"]}) == count
    assert len({g["pci_bus_id"] for g in facts["gpus"]}) == count
    for g in facts["gpus"]:
        assert g["name"] == "NVIDIA H100 80GB HBM3"
        assert g["memory_total_mib"] == 81559
        assert g["architecture"] == "Hopper"
    assert facts["homogeneous"] is True
    assert facts["topology"]["gpus"] == [f"GPU{i}" for i in range(count)]
    assert facts["all_nvlink"] is True


@pytest.mark.parametrize("profile", sorted(REAL))
def test_real_capture_values(profile):
    facts = facts_for(profile)
    assert facts["driver_version"] == "580.159.04"
    assert facts["cuda_version"] == "13.0"
    g0 = facts["gpus"][0]
    assert g0["pci_bus_id"] == "00000000:00:06.0"
    assert g0["persistence_mode"] == "Enabled"
    assert (g0["mig_current"], g0["mig_pending"]) == ("Disabled", "Disabled")
    assert (g0["ecc_current"], g0["ecc_pending"]) == ("Enabled", "Enabled")
    assert g0["ecc_uncorrectable_volatile"] == 0
    assert g0["ecc_uncorrectable_aggregate"] == 0
    assert g0["fabric"]["state"] == "Completed"
    assert g0["fabric"]["status"] == "Success"
    assert g0["remapped_rows"]["pending"] is False
    assert g0["retired_pages"] is None  # all N/A on H100 (row remapping instead)


def test_memory_gb_is_exact_decimal_conversion():
    facts = facts_for("h100-80gb-x4")
    # 81559 MiB * 1048576 = 85520809984 bytes (NVML reports exactly this, nvml.txt)
    assert facts["gpus"][0]["memory_total_gb"] == 81559 * 1048576 / 1e9
    assert facts["gpu_memory_gb"] == pytest.approx(85.520809984, abs=1e-12)
    assert "85520809984" in (FIX / "h100-80gb-x4" / "nvml.txt").read_text()


def test_compute_capability_not_guessed_from_name():
    # the v13 XML has no compute capability element: stays None although the name says H100
    facts = facts_for("h100-80gb-x4")
    assert all(g["compute_capability"] is None for g in facts["gpus"])


def test_compute_capability_taken_when_xml_has_it():
    xml = gf.strip_capture((FIX / "h100-80gb-x2" / "nvidia-smi-q-x.txt").read_text())
    xml = xml.replace("<product_architecture>Hopper</product_architecture>",
                      "<product_architecture>Hopper</product_architecture><compute_capability>9.0</compute_capability>", 1)
    facts = gf.parse_nvidia_smi_xml(xml)
    assert facts["gpus"][0]["compute_capability"] == "9.0"
    assert facts["gpus"][1]["compute_capability"] is None


def test_x2_remapped_uncorrectable_row_is_reported_but_not_pending():
    gpu1 = facts_for("h100-80gb-x2")["gpus"][1]
    assert gpu1["remapped_rows"]["uncorrectable"] == 1
    assert gpu1["remapped_rows"]["pending"] is False
    assert gf.check_preflight(facts_for("h100-80gb-x2")) == []


def test_not_nvidia_smi_xml_is_rejected():
    with pytest.raises(ValueError, match="not valid nvidia-smi XML"):
        gf.parse_nvidia_smi_xml("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    with pytest.raises(ValueError, match="expected <nvidia_smi_log>"):
        gf.parse_nvidia_smi_xml("<foo/>")
    with pytest.raises(ValueError, match="empty"):
        gf.parse_nvidia_smi_xml("$ nvidia-smi -q -x\nrc=127\n")


# --------------------------------------------------------------------------- topology


def test_topology_strips_ansi_and_reads_matrix():
    topo = gf.parse_topology((FIX / "h100-80gb-x4" / "topo.txt").read_text())
    assert topo["gpus"] == ["GPU0", "GPU1", "GPU2", "GPU3"]
    assert topo["links"]["GPU0"] == {"GPU1": "NV18", "GPU2": "NV18", "GPU3": "NV18"}
    assert len(topo["pairs"]) == 6
    assert {p["link"] for p in topo["pairs"]} == {"NV18"}
    assert topo["cpu_affinity"]["GPU2"] == "0-63"
    assert topo["numa_affinity"]["GPU2"] == "0"
    assert topo["all_nvlink"] is True


def test_topology_x8_has_28_nvlink_pairs():
    topo = gf.parse_topology((FIX / "h100-80gb-x8" / "topo.txt").read_text())
    assert len(topo["pairs"]) == 28
    assert all(p["link"] == "NV18" for p in topo["pairs"])


PCIE_TOPO = (
    "\t\x1b[4mGPU0\tGPU1\tGPU2\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
    "GPU0\t X \tNV12\tSYS\tPIX\t0-31\t0\t\tN/A\n"
    "GPU1\tNV12\t X \tSYS\tPIX\t0-31\t0\t\tN/A\n"
    "GPU2\tSYS\tSYS\t X \tSYS\t32-63\t1\t\tN/A\n"
    "NIC0\tPIX\tPIX\tSYS\t X \t\t\t\t\n"
    "\nLegend:\n\n  X    = Self\n\nNIC Legend:\n\n  NIC0: mlx5_0\n"
)


def test_topology_mixed_links_and_nic_rows():
    topo = gf.parse_topology(PCIE_TOPO)
    assert topo["gpus"] == ["GPU0", "GPU1", "GPU2"]
    assert topo["devices"] == ["GPU0", "GPU1", "GPU2", "NIC0"]
    assert topo["links"]["GPU0"] == {"GPU1": "NV12", "GPU2": "SYS"}
    assert topo["nvlink"] is True
    assert topo["all_nvlink"] is False
    assert topo["cpu_affinity"]["GPU2"] == "32-63"


def test_topology_without_matrix_is_rejected():
    with pytest.raises(ValueError, match="no topology matrix"):
        gf.parse_topology("Failed to initialize NVML: Driver/library version mismatch\n")


def test_facts_without_topology():
    facts = facts_for("h100-80gb-x4", topo=False)
    assert facts["topology"] is None
    assert facts["nvlink"] is None


# --------------------------------------------------------------------------- fabric manager


def test_needs_fabric_manager_from_fabric_element():
    # the captured hosts are NVSwitch baseboards seen from a VM: fabric state reported
    assert facts_for("h100-80gb-x4", topo=False)["needs_fabric_manager"] is True


def _without_fabric(facts: dict) -> dict:
    facts = json.loads(json.dumps(facts))
    for g in facts["gpus"]:
        g["fabric"] = None
    return facts


def test_needs_fabric_manager_from_topology_heuristic():
    x8 = _without_fabric(facts_for("h100-80gb-x8"))
    x4 = _without_fabric(facts_for("h100-80gb-x4"))
    assert gf.needs_fabric_manager(x8) is True  # >4 GPUs all NVLink: NVSwitch
    assert gf.needs_fabric_manager(x4) is False  # 4 GPUs can mesh directly
    x8["all_nvlink"] = False
    assert gf.needs_fabric_manager(x8) is False


# --------------------------------------------------------------------------- preflight


def test_real_hosts_pass_preflight():
    for profile in REAL:
        facts = facts_for(profile)
        req = {"require_fabric_manager": gf.needs_fabric_manager(facts)}
        assert gf.check_preflight(facts, req) == []


def test_old_driver_flagged_with_fix():
    problems = gf.check_preflight(facts_for("h100-80gb-x4-old-driver"))
    assert [p["check"] for p in problems] == ["driver"]
    p = problems[0]
    assert "535.183.01" in p["found"] and "12.2" in p["found"]
    assert ">= 580" in p["needed"]
    assert "R580" in p["fix"]
    assert set(p) == {"check", "found", "needed", "fix"}


def test_driver_compare_is_numeric():
    facts = facts_for("h100-80gb-x4")
    assert gf.version_tuple("580.159.04") == (580, 159, 4)
    assert gf.check_preflight(facts, {"min_driver": "580.95.05"}) == []
    assert gf.check_preflight(facts, {"min_driver": "580.160"})[0]["check"] == "driver"
    # "1000" > "580" numerically, although "1000" < "580" as strings
    assert gf.check_preflight(facts, {"min_driver": "1000"})[0]["check"] == "driver"


def test_mig_flagged():
    problems = gf.check_preflight(facts_for("h100-80gb-x4-mig"))
    assert [p["check"] for p in problems] == ["mig"]
    assert "GPU0 current=Enabled pending=Enabled" in problems[0]["found"]
    assert "nvidia-smi -mig 0" in problems[0]["fix"]
    assert gf.check_preflight(facts_for("h100-80gb-x4-mig"), {"forbid_mig": False}) == []


def test_mixed_models_flagged():
    x2 = gf.strip_capture((FIX / "h100-80gb-x2" / "nvidia-smi-q-x.txt").read_text())
    head, sep, rest = x2.partition("<product_name>NVIDIA H100 80GB HBM3</product_name>")
    mixed = head + "<product_name>NVIDIA H100 NVL</product_name>" + rest.replace("<total>81559 MiB</total>", "<total>95830 MiB</total>", 1)
    facts = gf.gpu_facts(mixed)
    assert facts["homogeneous"] is False
    assert facts["gpu_name"] is None
    assert facts["gpu_memory_mib"] == 81559  # the smallest
    problems = gf.check_preflight(facts)
    assert [p["check"] for p in problems] == ["homogeneous_gpus"]
    assert "NVIDIA H100 NVL (95830 MiB)" in problems[0]["found"]


def test_uncorrectable_ecc_and_pending_remap_flagged():
    xml = gf.strip_capture((FIX / "h100-80gb-x4" / "nvidia-smi-q-x.txt").read_text())
    xml = xml.replace("<dram_uncorrectable>0</dram_uncorrectable>", "<dram_uncorrectable>3</dram_uncorrectable>", 1)
    xml = xml.replace("<remapped_row_pending>No</remapped_row_pending>", "<remapped_row_pending>Yes</remapped_row_pending>", 1)
    facts = gf.gpu_facts(xml)
    assert facts["gpus"][0]["ecc_uncorrectable_volatile"] == 3
    problems = gf.check_preflight(facts)
    assert [p["check"] for p in problems] == ["ecc"]
    assert "GPU0" in problems[0]["found"] and "row remapping pending" in problems[0]["found"]
    assert gf.check_preflight(facts, {"forbid_uncorrectable_ecc": False}) == []


def test_fabric_not_initialised_flagged_only_when_required():
    xml = gf.strip_capture((FIX / "h100-80gb-x8" / "nvidia-smi-q-x.txt").read_text())
    xml = xml.replace("<state>Completed</state>", "<state>In Progress</state>")
    facts = gf.gpu_facts(xml)
    assert gf.check_preflight(facts) == []
    problems = gf.check_preflight(facts, {"require_fabric_manager": True})
    assert [p["check"] for p in problems] == ["fabric_manager"]
    assert "nvidia-fabricmanager" in problems[0]["fix"]
    assert "580.159.04" in problems[0]["fix"]


def test_fabric_manager_service_state_used_without_fabric_data():
    facts = _without_fabric(facts_for("h100-80gb-x8"))
    req = {"require_fabric_manager": True}
    assert gf.check_preflight(facts, req) == []
    assert gf.check_preflight(facts, {**req, "fabric_manager_active": False})[0]["check"] == "fabric_manager"


def test_min_gpus():
    problems = gf.check_preflight(facts_for("h100-80gb-x2"), {"min_gpus": 4})
    assert problems[0]["check"] == "gpu_count"
    assert problems[0]["found"] == "2 GPUs visible to nvidia-smi"


# --------------------------------------------------------------------------- derived fixtures


def test_derived_fixtures_are_marked_and_reproducible():
    for profile in [*DERIVED, "no-gpu"]:
        assert "DERIVED" in (FIX / profile / "DERIVED.txt").read_text()
        assert profile in (FIX / "README.md").read_text()
    for profile in REAL:
        assert not (FIX / profile / "DERIVED.txt").exists()
    assert (FIX / "no-gpu" / "absent").is_file()
    assert not (FIX / "no-gpu" / "nvidia-smi-q-x.txt").exists()
    res = subprocess.run([sys.executable, str(FIX / "derive.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_real_fixtures_match_shared_captures():
    shared = Path("/work/shared/fixtures/gpu")
    if not shared.is_dir():
        pytest.skip("shared captures not present")
    for profile in REAL:
        for src in (shared / profile).iterdir():
            assert (FIX / profile / src.name).read_bytes() == src.read_bytes(), src.name


def test_x8_derived_identities():
    facts = facts_for("h100-80gb-x8")
    assert [g["pci_bus_id"][-4:] for g in facts["gpus"]] == ["06.0", "07.0", "08.0", "09.0", "0A.0", "0B.0", "0C.0", "0D.0"]
    assert facts["needs_fabric_manager"] is True


# --------------------------------------------------------------------------- CLI


def test_cli_json(capsys):
    rc = cli_main(["gpu-facts", "--nvidia-smi-xml", str(FIX / "h100-80gb-x4" / "nvidia-smi-q-x.txt"),
                   "--topo", str(FIX / "h100-80gb-x4" / "topo.txt"), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpu_count"] == 4 and data["all_nvlink"] is True


def test_cli_table_with_raw_xml(tmp_path, capsys):
    raw = tmp_path / "q.xml"
    raw.write_text(gf.strip_capture((FIX / "h100-80gb-x2" / "nvidia-smi-q-x.txt").read_text()))
    assert cli_main(["gpu-facts", "--nvidia-smi-xml", str(raw)]) == 0
    out = capsys.readouterr().out
    assert "driver 580.159.04" in out
    assert "00000000:00:07.0" in out
    assert "Completed/Success" in out


def test_cli_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("$ nvidia-smi -q -x\nbash: nvidia-smi: command not found\nrc=127\n")
    assert cli_main(["gpu-facts", "--nvidia-smi-xml", str(bad)]) == 2
    assert "not valid nvidia-smi XML" in capsys.readouterr().err
