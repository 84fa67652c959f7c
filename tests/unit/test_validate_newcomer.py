"""A newcomer's mistakes (issue 28) refused by the fleet validation before any host is touched:
unknown (misspelt) variables, an endpoint without a key by accident, a GPU server that is also the
gateway, a gateway pin of sglang-router's line, an SGLang pin older than the model, a vaulted value
validation cannot decrypt; and real `ansible-playbook playbooks/validate.yml` runs (no host contacted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sgl_deploy import validate as v

REPO = Path(__file__).resolve().parents[2]
KNOWN = v.known_variable_names(str(REPO / "roles"))


def unknown(vars_, allow=()):
    return v.unknown_variable_problems("gpu1", vars_, KNOWN, allow)


# ---------------------------------------------------------------- unknown variables

@pytest.mark.parametrize("name, suggestion", [
    ("sglang_service_apikey", "sglang_service_api_key"),
    ("sglang_plan_ep_szie", "sglang_plan_ep_size"),
    ("model_weights_fanout_limt", "model_weights_fanout_limit"),
    ("probes_skipp", "probes_skip"),
    ("monitoring_scrape_intervall", "monitoring_scrape_interval"),
    ("gpu_preflight_min_drivr", "gpu_preflight_min_driver"),
    ("redeploy_seral", "redeploy_serial"),
    ("sglang_replica", "sglang_replicas"),
])
def test_a_misspelt_variable_is_refused_with_the_closest_name(name, suggestion):
    p = unknown({name: "x"})
    assert len(p) == 1 and p[0]["variable"] == name and p[0]["host"] == "gpu1", p
    assert p[0]["fix"].startswith(f"did you mean `{suggestion}`"), p[0]["fix"]
    assert "is not a variable of any role or playbook" in p[0]["problem"]


def test_the_misspelt_key_is_masked():
    p = unknown({"sglang_service_apikey": "s3cret-value"})
    assert p[0]["value"] == "<secret, 12 chars>" and "s3cret" not in str(p)


def test_known_and_foreign_names_pass():
    ok = {"sglang_service_api_key": "k", "sglang_replicas": {}, "redeploy_serial": 2, "vault_sglang_service_api_key": "k",
          "lab_gpu_profile": "x", "ansible_host": "10.0.0.1", "my_site_var": 1, "sgl_validate_allow_unknown": ["a"]}
    assert unknown(ok) == []


def test_own_helpers_are_allowed_by_name_or_pattern():
    vars_ = {"sglang_site_rack": "r1", "sglang_site_row": 2, "probes_mine": 1}
    assert [p["variable"] for p in unknown(vars_, ["sglang_site_*"])] == ["probes_mine"]
    assert unknown(vars_, ["sglang_site_*", "probes_mine"]) == []


def test_known_names_come_from_the_specs_and_the_playbook_list():
    for spec_file in (REPO / "roles").glob("*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec_file.read_text())["argument_specs"] or {}).values():
            assert set(entry.get("options") or {}) <= KNOWN
    # every redeploy_* the redeploy playbook reads is in the playbook list (the one copy)
    used = set(re.findall(r"\b(redeploy_[a-z_]+)\b", (REPO / "playbooks/redeploy.yml").read_text()))
    assert used <= set(v.playbook_variables()), used - set(v.playbook_variables())
    assert {"sglang_replicas", "sgl_validate_allow_unknown"} <= set(v.playbook_variables())
    # every validation setting is a documented playbook variable
    assert set(v.VALIDATION_SETTINGS) <= set(v.playbook_variables())


# ---------------------------------------------------------------- authentication

def test_an_engine_without_a_key_is_refused_unless_on_purpose():
    p = [x for x in v.host_problems("g1", {"sglang_service_api_key": ""}, ["sglang_servers"])]
    assert len(p) == 1 and p[0]["variable"] == "sglang_service_api_key" and "without authentication" in p[0]["problem"]
    assert "sglang_service_allow_unauthenticated: true" in p[0]["fix"] and "ansible-vault" in p[0]["fix"]
    assert p[0]["value"] == "<empty>"
    assert v.host_problems("g1", {"sglang_service_api_key": "", "sglang_service_allow_unauthenticated": True},
                           ["sglang_servers"]) == []
    # a key validation could not resolve (a vault value without the password) is not "empty"
    assert v.host_problems("g1", {}, ["sglang_servers"]) == []


def test_a_gateway_without_a_key_is_refused_unless_on_purpose():
    p = v.host_problems("r1", {"sglang_router_api_key": ""}, ["sglang_routers"])
    assert [x["variable"] for x in p] == ["sglang_router_api_key"] and "the gateway" in p[0]["problem"]
    assert "sglang_router_allow_unauthenticated: true" in p[0]["fix"]
    assert v.host_problems("r1", {"sglang_router_api_key": "", "sglang_router_allow_unauthenticated": "true"},
                           ["sglang_routers"]) == []


# ---------------------------------------------------------------- fleet shape

def test_a_server_that_is_also_the_gateway_is_refused_unless_allowed():
    groups = {"all": ["g1"], "sglang_servers": ["g1"], "sglang_routers": ["g1"]}
    base = {"sglang_service_api_key": "k", "sglang_router_api_key": "k"}
    p = v.fleet_problems({"g1": base}, groups, ["g1"])
    assert len(p) == 1 and p[0]["variable"] == "group_names" and "both a GPU server" in p[0]["problem"], p
    assert "sglang_router_allow_colocation: true" in p[0]["fix"]
    assert v.fleet_problems({"g1": {**base, "sglang_router_allow_colocation": True}}, groups, ["g1"]) == []


def test_a_host_in_two_replica_groups_is_refused_once_by_the_existing_rule():
    groups = {"all": ["g1", "g2"], "sglang_servers": ["g1", "g2"]}
    replicas = {"a": ["g1", "g2"], "b": ["g2"]}
    p = v.fleet_problems({h: {"sglang_plan_replicas": replicas} for h in ("g1", "g2")}, groups, ["g1", "g2"])
    assert [x["problem"] for x in p] == ["names g2, which is also in group a"], p


# ---------------------------------------------------------------- pins older than the roles use

@pytest.mark.parametrize("pin, bad", [("0.3.2", True), ("0.3.0", True), ("0.4.0", True), ("1.0.0", False), ("1.13.0", False)])
def test_gateway_pin_floor(pin, bad):
    p = [x for x in v.host_problems("r1", {"sglang_router_version": pin, "sglang_router_api_key": "k"}, ["sglang_routers"])]
    assert bool(p) == bad, p
    if bad:
        assert "playbooks/migrate-gateway.yml" in p[0]["fix"] and "smg >= 1.0.0" in p[0]["problem"]
    if pin.startswith("0.3"):
        assert "sglang-router's line" in p[0]["problem"]


def test_sglang_install_pin_floor_is_the_planners_rule():
    """sglang_install_version set on its own gets the planner's version rule (sgl_deploy.plan_rules, the one
    that refuses sglang_plan_sglang_version in fleet_problems): same words, same fix, no second copy."""
    from sgl_deploy import plan_rules

    base = {"sglang_service_api_key": "k", "sglang_plan_model_profile": "minimax-m3"}
    p = v.host_problems("g1", {**base, "sglang_install_version": "0.5.15"}, ["sglang_servers"])
    assert len(p) == 1 and p[0]["variable"] == "sglang_install_version", p
    assert "needs SGLang >= 0.5.16" in p[0]["problem"] and p[0]["fix"] == plan_rules.VERSION_FIX, p
    assert v.host_problems("g1", {**base, "sglang_install_version": "0.5.16"}, ["sglang_servers"]) == []
    # the plan's own pin is the planner rule's business alone: reported once, by fleet_problems
    assert v.host_problems("g1", {**base, "sglang_plan_sglang_version": "0.5.15"}, ["sglang_servers"]) == []


# ---------------------------------------------------------------- real ansible-playbook runs

BIN = Path(sys.executable).parent


def _run(tmp_path, inv, *extra, env_extra=None):
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-playbook not next to this python")
    path = tmp_path / "hosts.yml"
    path.write_text(inv if isinstance(inv, str) else yaml.safe_dump(inv))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PYTHONPATH": str(REPO / "src"),
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env_extra or {})}
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(path), str(REPO / "playbooks/validate.yml"), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return proc, proc.stdout + proc.stderr


def test_newcomer_mistakes_are_refused_together(tmp_path):
    inv = {"all": {"vars": {"sgl_validate_remote_checks": False}, "children": {
        "sglang_servers": {"hosts": {
            "gpu-a": {"ansible_host": "192.0.2.1", "sglang_service_apikey": "typo-key", "sglang_plan_ep_szie": 8},
            "gpu-b": {"ansible_host": "192.0.2.2", "sglang_service_api_key": "k", "model_weights_fanout_limt": 4},
        }},
        "sglang_routers": {"hosts": {
            "gpu-b": {},
            "gw": {"ansible_host": "192.0.2.9", "sglang_router_version": "0.3.2", "sglang_router_api_key": "k"},
        }},
    }}}
    proc, out = _run(tmp_path, inv, "-e", json.dumps({"sglang_plan_tp_sise": 8}))
    assert proc.returncode != 0, out
    for needle in ("gpu-a: sglang_service_apikey = <secret, 8 chars>: is not a variable",
                   "did you mean `sglang_service_api_key`", "did you mean `sglang_plan_ep_size`",
                   "gpu-a: sglang_service_api_key = <empty>: is empty: the engine would serve without authentication",
                   "gpu-b: model_weights_fanout_limt = 4", "did you mean `model_weights_fanout_limit`",
                   "sglang_plan_tp_sise",  # -e counts too
                   "gpu-b: group_names = ['sglang_routers', 'sglang_servers']: is both a GPU server",
                   "gw: sglang_router_version = '0.3.2'", "playbooks/migrate-gateway.yml", "nothing was changed"):
        assert needle in out, f"{needle!r} missing:\n{out}"
    assert "typo-key" not in out and "UNREACHABLE" not in out


def test_helpers_and_opt_outs_pass(tmp_path):
    inv = {"all": {"vars": {"sgl_validate_remote_checks": False, "sgl_validate_allow_unknown": ["sglang_site_*"],
                            "sglang_site_rack": "r7", "vault_anything": "x", "sglang_service_allow_unauthenticated": True},
                   "children": {"sglang_servers": {"hosts": {"gpu-a": {"ansible_host": "192.0.2.1"}}},
                                "sglang_routers": {"hosts": {"gw": {
                                    "ansible_host": "192.0.2.9", "sglang_router_allow_unauthenticated": True,
                                    "sglang_router_tls_cert": "{{ lookup('ansible.builtin.file', '/nonexistent/gw.crt') }}",
                                    "sglang_router_tls_key": "{{ lookup('ansible.builtin.file', '/nonexistent/gw.key') }}"}}}}}}
    proc, out = _run(tmp_path, inv)
    assert proc.returncode == 0, out
    # what validation could not evaluate is said, not skipped silently (a later-phase fact is)
    assert "gw: sglang_router_tls_cert = <not evaluated>: cannot be evaluated on the controller" in out, out
    assert "sglang_plan_result" not in out


VAULT_PASSWORD = "unit-vault-pw"


def test_a_value_validation_cannot_decrypt_is_an_error_that_says_how(tmp_path):
    if not (BIN / "ansible-vault").exists():
        pytest.skip("ansible-vault not next to this python")
    (tmp_path / "pw").write_text(VAULT_PASSWORD)
    enc = subprocess.run([str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(tmp_path / "pw"),
                          "vaulted-key", "--name", "vault_sglang_service_api_key"],
                         capture_output=True, text=True, check=True).stdout
    inv = ("all:\n  vars:\n    sgl_validate_remote_checks: false\n"
           "    sglang_service_api_key: '{{ vault_sglang_service_api_key }}'\n"
           + "".join("    " + line + "\n" for line in enc.splitlines())
           + "    sglang_router_tls_key: !vault |\n"
           + "".join("      " + line.strip() + "\n" for line in enc.splitlines()[1:])
           + "  children:\n    sglang_servers:\n      hosts:\n        gpu-a: {ansible_host: 192.0.2.1}\n")
    proc, out = _run(tmp_path, inv)
    assert proc.returncode != 0, out
    assert "gpu-a: sglang_service_api_key = <vaulted value>: cannot be decrypted by the validation" in out, out
    assert "--ask-vault-pass" in out and "--vault-password-file" in out and "ANSIBLE_VAULT_PASSWORD_FILE" in out
    assert "is empty" not in out  # not mistaken for a missing key
    proc, out = _run(tmp_path, inv, "--vault-password-file", str(tmp_path / "pw"))
    assert proc.returncode == 0, out
