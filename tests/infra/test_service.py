"""The serve phase: hardened unit with the planned flags, secrets kept out of argv, readiness."""

import pytest

from conftest import http_status, journal_tail

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RestrictSUIDSGID": "yes",
    "DevicePolicy": "closed",
    "Restart": "on-failure",
}


def test_unit_is_enabled_and_running(host, unit):
    svc = host.service(unit)
    assert svc.is_enabled
    assert svc.is_running, journal_tail(host, unit)


def test_unit_runs_as_the_service_user(host, hv, unit):
    assert host.service(unit).systemd_properties["User"] == hv["sglang_service_user"]
    assert host.user(hv["sglang_service_user"]).shell.endswith("nologin")


def test_unit_carries_the_planned_flags(host, unit):
    exec_start = host.service(unit).systemd_properties["ExecStart"]
    for flag in ("--model-path", "--tp-size", "--tool-call-parser", "--reasoning-parser",
                 "--trust-remote-code", "--mem-fraction-static", "--served-model-name", "--enable-metrics"):
        assert flag in exec_start, f"{flag} missing from {exec_start}"
    assert "--tp " not in exec_start  # never the prefix abbreviation


@pytest.mark.parametrize("key,value", sorted(HARDENING.items()))
def test_unit_is_hardened(host, unit, key, value):
    assert host.service(unit).systemd_properties[key] == value


def test_exposure_score_at_most_4(host, unit):
    out = host.check_output(f"systemd-analyze security {unit} --no-pager | tail -1")
    score = float(out.split("exposure level for")[1].split(":")[1].split()[0])
    assert score <= 4.0, out


def test_api_key_file_is_root_only_and_key_not_in_argv(host, hv, unit):
    key = hv["sglang_service_api_key"]
    if not key or str(key).startswith("$ANSIBLE_VAULT"):
        pytest.skip("no plain API key in this inventory (vaulted or none)")
    conf = host.file(f"/etc/sglang/{hv['sglang_service_name']}.yaml")
    assert conf.user == "root" and conf.mode == 0o600
    unit_text = host.file(f"/etc/systemd/system/{unit}").content_string
    assert key not in unit_text
    ps = host.check_output("ps -eo args")
    assert key not in ps
    assert key not in host.run(f"journalctl -u {unit} --no-pager -o cat").stdout


def test_port_listens_and_health_is_200(host, hv, unit, worker_rank):
    if worker_rank:
        pytest.skip("ranks >= 1 serve no HTTP")
    port = int(hv["sglang_plan_port"])
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening, journal_tail(host, unit)
    assert http_status(host, f"http://127.0.0.1:{port}/health") == "200"


def test_server_info_is_not_exposed_without_key(host, hv, worker_rank):
    """/server_info echoes the API key: with a key set it must not answer anonymous callers."""
    if worker_rank or not hv["sglang_service_api_key"]:
        pytest.skip("no key or worker rank")
    assert http_status(host, f"http://127.0.0.1:{int(hv['sglang_plan_port'])}/server_info") in ("401", "404")
