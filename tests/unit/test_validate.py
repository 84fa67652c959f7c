"""The fleet validation rules (sgl_deploy.validate): each rule with good and bad values, the fixes,
secret masking, the fleet rules (replica groups, port clashes), the argument specs, and one real
`ansible-playbook playbooks/validate.yml` run on a generated inventory (no host contacted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sgl_deploy import probe, validate as v

REPO = Path(__file__).resolve().parents[2]
H = "gpu1"


def one(problems):
    assert len(problems) == 1, problems
    return problems[0]


def vars_of(**kw):
    return kw


def problems_of(var, value, groups=("sglang_servers",), **more):
    return [p for p in v.host_problems(H, {var: value, **more}, groups) if p["variable"].startswith(var)]


# ---------------------------------------------------------------- paths

@pytest.mark.parametrize("value", ["/srv/models", "/opt/sglang", "/var/cache/sglang/uv", "/data/x/../models", ""])
def test_paths_good(value):
    assert problems_of("sglang_plan_weights_root", value) == []


@pytest.mark.parametrize("value,why", [
    ("srv/models", "not an absolute path"), ("./models", "not an absolute path"), ("/", "root directory"),
    ("//", "root directory"), ("/etc/models", "/etc"), ("/usr/local/models", "/usr"), ("/proc/x", "/proc"),
    ("/sys", "/sys"), ("/dev/shm/m", "/dev"), ("/boot/m", "/boot"), ("/bin/m", "/bin"), ("/lib/m", "/lib"),
    ("/srv/../etc/x", "/etc"),
])
def test_paths_bad(value, why):
    p = one(problems_of("sglang_plan_weights_root", value))
    assert why in p["problem"] and "sglang_plan_weights_root" in p["fix"] and p["host"] == H


@pytest.mark.parametrize("var", v.PATH_VARIABLES)
def test_every_path_variable_is_checked(var):
    assert one(problems_of(var, "relative/dir"))["variable"] == var


# ---------------------------------------------------------------- model id and revision

@pytest.mark.parametrize("value", ["MiniMax/MiniMax-M3", "SglLab/MiniMax-M3-Lab", "org_1/name.v2", ""])
def test_model_id_good(value):
    assert problems_of("sglang_plan_model_id", value) == []


@pytest.mark.parametrize("value", ["MiniMax", "a/b/c", "../etc", "a/..", "org/na me", "org/name\n", "/abs/x", "org/$x", ".x/y"])
def test_model_id_bad(value):
    p = one(problems_of("model_weights_model_id", value))
    assert "hub model id" in p["problem"] and "model_weights_model_id" in p["fix"]


@pytest.mark.parametrize("value", ["master", "v1.0", "0f3a9c", "release-2026_01", ""])
def test_revision_good(value):
    assert problems_of("sglang_plan_model_revision", value) == []


@pytest.mark.parametrize("value", ["../", "../../etc", "a/b", "..", "v1..2", "x y", "rev\n", "/abs"])
def test_revision_bad(value):
    p = one(problems_of("sglang_plan_model_revision", value))
    assert "'..'" in p["problem"] and "branch, tag or commit" in p["fix"]


# ---------------------------------------------------------------- API keys (masked)

@pytest.mark.parametrize("value", ["lab-secret-key", "sk-ABC_123.=~"])
def test_api_key_good(value):
    assert problems_of("sglang_service_api_key", value) == []


def test_empty_api_key_only_on_purpose():
    assert problems_of("sglang_service_api_key", "", sglang_service_allow_unauthenticated=True) == []


@pytest.mark.parametrize("value", ["secret\n", "sec ret", "tab\tkey", "ключ", "bell\x07"])
@pytest.mark.parametrize("var", v.API_KEY_VARIABLES)
def test_api_key_bad_and_masked(var, value):
    p = one(problems_of(var, value))
    assert p["value"] == f"<secret, {len(value)} chars>"
    assert value not in v.format_problems([p]) and var in p["fix"]


# ---------------------------------------------------------------- environment

def test_environment_scalars_only():
    assert problems_of("sglang_service_environment", {"A": "1", "B": 2, "C": 0.5, "D": True}) == []
    p = one(problems_of("sglang_service_environment", {"A": {"x": 1}}))
    assert p["variable"] == "sglang_service_environment.A" and "not a scalar" in p["problem"]
    assert "not a scalar" in one(problems_of("sglang_install_environment", {"L": [1, 2]}))["problem"]
    assert "newline" in one(problems_of("sglang_router_environment", {"L": "a\nb"}, groups=("sglang_routers",)))["problem"]
    assert "not an environment variable name" in one(problems_of("sglang_service_nccl_environment", {"1X": "a"}))["problem"]
    assert "not a mapping" in one(problems_of("sglang_service_environment", ["A=1"]))["problem"]


# ---------------------------------------------------------------- ports

@pytest.mark.parametrize("var", v.PORT_VARIABLES)
@pytest.mark.parametrize("value", [0, 65536, -1, 80000, "80x0", True])
def test_ports_bad(var, value):
    p = one(problems_of(var, value))
    assert "1..65535" in p["problem"] and var in p["fix"]


@pytest.mark.parametrize("value", [1, 8000, "30000", 65535])
def test_ports_good(value):
    assert problems_of("sglang_router_port", value) == []


def test_port_clash_on_one_host():
    both = ("sglang_servers", "sglang_routers")
    clash = v.port_clash_problems(H, {"sglang_plan_port": 30000, "sglang_router_port": 30000,
                                      "sglang_router_prometheus_port": 29000}, both)
    p = one(clash)
    assert {p["variable"], "sglang_plan_port"} <= {"sglang_router_port", "sglang_plan_port"} and "same port" in p["problem"]
    # a server only: the router's ports are not its own
    assert v.port_clash_problems(H, {"sglang_plan_port": 30000, "sglang_router_port": 30000}, ("sglang_servers",)) == []
    # metrics vs router on a router host
    assert one(v.port_clash_problems(H, {"sglang_router_port": 29000, "sglang_router_prometheus_port": 29000},
                                     ("sglang_routers",)))["variable"] == "sglang_router_prometheus_port"
    # rendezvous only counts on multi-node groups
    rv = {"sglang_plan_port": 20000, "sglang_plan_dist_init_port": 20000}
    assert v.port_clash_problems(H, rv, ("sglang_servers",)) == []
    assert one(v.port_clash_problems(H, {**rv, "sglang_plan_replicas": {"g": [H, "gpu2"]}}, ("sglang_servers",)))
    fan = {"sglang_plan_port": 18181, "model_weights_fanout_port": 18181, "model_weights_source": "fanout"}
    assert one(v.port_clash_problems(H, fan, ("sglang_servers",)))["variable"] == "model_weights_fanout_port"


# ---------------------------------------------------------------- replica groups

ALL = ["a", "b", "c", "d", "r"]
SERVERS = ["a", "b", "c", "d"]


def groups_problems(replicas, in_run=ALL):
    return v.replica_group_problems("a", replicas, ALL, SERVERS, in_run)


def test_replica_groups_good():
    assert groups_problems({"g1": ["a", "b"], "g2": ["c", "d"]}) == []
    assert groups_problems({}) == [] and groups_problems(None) == []
    assert groups_problems({"g1": ["a", "b"]}, in_run=["c", "d"]) == []  # the group is wholly out of the run


@pytest.mark.parametrize("replicas,needle", [
    ({"g1": ["a", "b"], "g2": ["b", "c"]}, "also in group g1"),
    ({"g1": ["a", "a"]}, "twice in this group"),
    ({"g1": ["a", "zz"]}, "not in the inventory"),
    ({"g1": ["a", "r"]}, "not in sglang_servers"),
    ({"g1": []}, "non-empty list"),
    ({"g1": "a,b"}, "non-empty list"),
    (["a", "b"], "not a mapping"),
])
def test_replica_groups_bad(replicas, needle):
    p = one(groups_problems(replicas))
    assert needle in p["problem"] and p["variable"].startswith("sglang_plan_replicas") and p["fix"]


def test_replica_group_cut_by_limit():
    p = one(groups_problems({"g1": ["a", "b"]}, in_run=["a"]))
    assert "b of replica group g1" in p["problem"] and "--limit" in p["fix"]


# ---------------------------------------------------------------- extra args

def test_extra_args_good():
    assert problems_of("sglang_plan_extra_args", ["--chunked-prefill-size", "8192",
                                                  "--json-model-override-args", '{"rope_scaling": {"type": "yarn"}}']) == []


@pytest.mark.parametrize("value,needle", [
    ("--chunked-prefill-size 8192", "not a list"),
    (["--api-key", "x"], "secret"),
    (["--api-key=x"], "secret"),
    (["--admin-api-key", "x"], "secret"),
    (["--host", "1.2.3.4"], "conflicts with a flag the plan sets"),
    (["--port=1"], "conflicts with a flag the plan sets"),
    (["--tp-size", "2"], "conflicts with a flag the plan sets"),
    (["--model", "x"], "conflicts with a flag the plan sets"),
    (["--context-len", "9"], "abbreviation"),
    ([{"a": 1}], "not a string"),
])
def test_extra_args_bad(value, needle):
    probs = problems_of("sglang_plan_extra_args", value)
    assert probs and any(needle in p["problem"] for p in probs), probs
    assert all("sglang_plan_extra_args" in p["fix"] for p in probs)


def test_extra_args_reuse_the_planners_flag_list():
    # every flag the planner owns is refused: one source of truth (sgl_deploy.argv.MANAGED_FLAGS)
    from sgl_deploy.argv import MANAGED_FLAGS
    for flag in MANAGED_FLAGS:
        assert problems_of("sglang_plan_extra_args", [flag, "1"]), flag


@pytest.mark.parametrize("value,bad", [(["--policy", "x"], True), (["--api-key=x"], True), ("--x", True),
                                        (["--log-level", "debug"], False)])
def test_router_extra_args(value, bad):
    assert bool(problems_of("sglang_router_extra_args", value, groups=("sglang_routers",))) is bad


# ---------------------------------------------------------------- other values

def test_probe_names_come_from_the_runner():
    assert problems_of("probes_skip", list(probe.PROBES)) == []
    p = one(problems_of("probes_only", ["chat", "nope"]))
    assert "nope" in p["problem"] and "concurrency" in p["fix"]
    assert one(problems_of("probes_skip", ["Chat"]))


@pytest.mark.parametrize("var", v.URL_VARIABLES)
@pytest.mark.parametrize("value", ["mirror.example.com", "http://", "ftp://x", "10.0.0.5:18080", "http://a b"])
def test_urls_bad(var, value):
    p = one(problems_of(var, value))
    assert "scheme" in p["problem"] and var in p["fix"]


@pytest.mark.parametrize("value", ["", "http://10.77.0.1:18080", "https://modelscope.cn", "http://[::1]:80/x"])
def test_urls_good(value):
    assert problems_of("model_weights_endpoint", value) == []


def test_url_lists():
    assert problems_of("sglang_install_extra_index_urls", ["https://download.pytorch.org/whl/cu130"]) == []
    assert one(problems_of("sglang_install_extra_index_urls", ["download.pytorch.org"]))
    assert one(problems_of("sglang_router_worker_urls", ["10.0.0.1:8000"], groups=("sglang_routers",)))


def test_offline_needs_a_wheelhouse():
    p = one([x for x in v.host_problems(H, {"sglang_install_offline": True, "sglang_install_find_links": ""})
             if x["variable"] == "sglang_install_offline"])
    assert "sglang_install_find_links" in p["problem"] and "wheelhouse" in p["fix"]
    assert v.offline_problem(H, "sglang_install_offline", "sglang_install_find_links",
                             {"sglang_install_offline": True, "sglang_install_find_links": "/srv/wheels"}) is None
    assert v.offline_problem(H, "sglang_router_offline", "sglang_router_find_links", {"sglang_router_offline": False}) is None
    assert one(problems_of("sglang_install_find_links", "wheels"))
    assert problems_of("sglang_install_find_links", "https://mirror/wheels/") == []


@pytest.mark.parametrize("var", v.VERSION_VARIABLES)
@pytest.mark.parametrize("value", ["latest", ">=0.5", "v0.5.23", "0.5.x", "0.5.23 "])
def test_versions_bad(var, value):
    if value == "0.5.23 ":
        assert problems_of(var, value) == []  # stripped
        return
    p = one(problems_of(var, value))
    assert "version" in p["problem"] and "exact version such as " in p["fix"] and var in p["fix"]


@pytest.mark.parametrize("value", ["0.5.23", "0.5.4.post1", "0.5.16rc1", "0.13.9"])
def test_versions_good(value):
    assert problems_of("sglang_plan_sglang_version", value) == []


def test_minimum_versions():
    assert problems_of("gpu_preflight_min_driver", "580") == []
    assert "580" in one(problems_of("gpu_preflight_min_driver", "R580"))["fix"]


@pytest.mark.parametrize("value,bad", [(0.85, False), ("0.5", False), (None, False), (0, True), (1, True),
                                        (1.5, True), (-0.1, True), ("x", True), (85, True)])
def test_fraction(value, bad):
    assert bool(problems_of("sglang_plan_mem_fraction_static", value)) is bad


def test_negative_weights_size_is_named_as_itself():
    p = one(problems_of("sglang_plan_weights_gb", -5))
    assert p["variable"] == "sglang_plan_weights_gb" and "greater than 0" in p["problem"]
    assert problems_of("sglang_plan_weights_gb", None) == [] and problems_of("sglang_plan_weights_gb", 860) == []
    assert one(problems_of("sglang_plan_tp_size", 0))["variable"] == "sglang_plan_tp_size"
    assert problems_of("sglang_plan_disk_margin_gb", 0) == []
    assert one(problems_of("probes_concurrency", 0))


def test_fanout_limits_and_caps():
    p = one(problems_of("model_weights_fanout_limit", 0))
    assert p["variable"] == "model_weights_fanout_limit" and "1" in p["fix"], p
    assert one(problems_of("model_weights_fanout_seed_workers", 0))
    assert one(problems_of("model_weights_fanout_max_upload_mb_s", -5))["variable"] == "model_weights_fanout_max_upload_mb_s"
    assert one(problems_of("model_weights_fanout_max_download_mb_s", -0.5))
    for var, value in (("model_weights_fanout_limit", 2), ("model_weights_fanout_max_upload_mb_s", 0),
                       ("model_weights_fanout_max_download_mb_s", 125.0)):
        assert problems_of(var, value) == []


def test_profile_and_variant():
    assert v.profile_problems(H, {"sglang_plan_model_profile": "minimax-m3"}) == []
    p = one(v.profile_problems(H, {"sglang_plan_model_profile": "minimax-m9"}))
    assert p["variable"] == "sglang_plan_model_profile" and "minimax-m3" in p["fix"] and "GPU memory" not in p["fix"]
    p = one(v.profile_problems(H, {"sglang_plan_model_profile": "minimax-m3", "sglang_plan_variant": "nope"}))
    assert p["variable"] == "sglang_plan_variant" and "hopper-bf16" in p["fix"]


def test_names():
    assert one(problems_of("sglang_service_name", "sglang/../x"))
    assert problems_of("sglang_service_name", "sglang-a") == []
    assert one(problems_of("sglang_service_user", "Root User"))


# ---------------------------------------------------------------- argument specs, fleet, format

def _spec(role):
    return yaml.safe_load((REPO / "roles" / role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def test_argument_spec_problems_name_the_variable():
    pytest.importorskip("ansible")
    opts = _spec("model_weights")
    p = one(v.argument_spec_problems(H, "model_weights", opts, {"model_weights_source": "bogus", "model_weights_hub": "modelscope"}))
    assert p["variable"] == "model_weights_source" and "hub, fanout, shared" in p["fix"]
    p = one(v.argument_spec_problems(H, "sglang_plan", _spec("sglang_plan"), {"sglang_plan_port": "80x0"}))
    assert p["variable"] == "sglang_plan_port" and "an int" in p["fix"] and "80x0" in p["problem"]
    assert v.argument_spec_problems(H, "sglang_plan", _spec("sglang_plan"), {"sglang_plan_port": 8000}) == []


def test_fleet_problems_and_format():
    hostvars = {
        "a": {"sglang_plan_model_revision": "../x", "sglang_plan_replicas": {"g": ["a", "b"]}},
        "b": {"sglang_plan_model_revision": "master", "sglang_plan_replicas": {"g": ["a", "b"]}},
        "r": {"sglang_router_port": 70000},
    }
    groups = {"all": ["a", "b", "r"], "sglang_servers": ["a", "b"], "sglang_routers": ["r"]}
    probs = v.fleet_problems(hostvars, groups, ["a", "b", "r"])
    assert {(p["host"], p["variable"]) for p in probs} == {("a", "sglang_plan_model_revision"), ("r", "sglang_router_port")}
    text = v.format_problems(probs)
    assert text.splitlines()[0].startswith("The inventory has 2 bad values on 2 hosts")
    assert "  a: sglang_plan_model_revision = '../x': " in text and "Fix:" in text
    # the same replica mapping is checked once; a --limit that cuts the group is refused once
    cut = v.fleet_problems(hostvars, groups, ["a"])
    assert [p["variable"] for p in cut].count("sglang_plan_replicas.g") == 1


def test_merge_keeps_one_line_per_cause():
    spec = [v.problem("b", "sglang_plan_port", "x", "spec", "fix")]
    sem = [v.problem("a", "x", 1, "p", "f"), v.problem("b", "sglang_plan_port", "x", "port", "f")]
    merged = v.merge_problems(spec, sem, ["a", "b"])
    assert [(p["host"], p["problem"]) for p in merged] == [("a", "p"), ("b", "spec")]


# ---------------------------------------------------------------- the real playbook (no host contact)

def _inventory(tmp_path: Path, host_vars: dict, all_vars: dict | None = None) -> Path:
    # a key (authentication is a choice) and no look-ups of the index and hub (no network in unit tests)
    inv = {"all": {"vars": {"sglang_service_api_key": "unit-key", "sgl_validate_remote_checks": False, **(all_vars or {})},
                   "children": {
        "sglang_servers": {"hosts": {"g1": {"ansible_host": "192.0.2.1"}, "g2": {"ansible_host": "192.0.2.2"}}},
        "sglang_routers": {"hosts": {"r1": {"ansible_host": "192.0.2.3"}}},
    }}}
    for host, hv in host_vars.items():
        for group in inv["all"]["children"].values():
            if host in group["hosts"]:
                group["hosts"][host].update(hv)
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def _validate(tmp_path: Path, host_vars: dict, *extra: str, all_vars: dict | None = None,
              env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PYTHONPATH": str(REPO / "src"),
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env_extra or {})}
    bindir = Path(sys.executable).parent
    return subprocess.run([str(bindir / "ansible-playbook"), "-i", str(_inventory(tmp_path, host_vars, all_vars)),
                           str(REPO / "playbooks/validate.yml"), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_playbook_reports_every_host_at_once(tmp_path):
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        pytest.skip("ansible-playbook not next to this python")
    run = _validate(tmp_path, {
        "g1": {"sglang_plan_model_revision": "../../etc", "sglang_service_api_key": "abc\n"},
        "g2": {"sglang_plan_extra_args": "--enable-foo", "probes_skip": ["nope"], "model_weights_source": "bogus"},
        "r1": {"sglang_router_port": 70000},
    }, "-e", json.dumps({"sglang_replicas": {"x": ["g1", "g2"], "y": ["g2"]}}))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    for needle in ("g1: sglang_plan_model_revision = '../../etc'", "g1: sglang_service_api_key = <secret, 4 chars>",
                   "g2: sglang_plan_extra_args = '--enable-foo'", "g2: probes_skip", "g2: model_weights_source",
                   "r1: sglang_router_port = 70000", "names g2, which is also in group x", "nothing was changed"):
        assert needle in out, f"{needle!r} missing:\n{out}"
    assert "abc\\n" not in out and "UNREACHABLE" not in out


def test_playbook_passes_a_good_inventory_and_respects_limit(tmp_path):
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        pytest.skip("ansible-playbook not next to this python")
    run = _validate(tmp_path, {"g2": {"sglang_plan_port": 0}}, "--limit", "g1,r1")
    assert run.returncode == 0, run.stdout + run.stderr
    run = _validate(tmp_path, {}, "--limit", "g1", "-e", json.dumps({"sglang_replicas": {"x": ["g1", "g2"]}}))
    assert run.returncode != 0 and "g2 of replica group x" in run.stdout, run.stdout


def test_router_role_uses_the_same_rule():
    import importlib.util
    spec = importlib.util.spec_from_file_location("sgl_host_filters_v", REPO / "plugins/filter/sgl_host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check = module.FilterModule().filters()["sgl_router_extra_args_problems"]
    assert check(["--log-level", "debug"]) == []
    assert "carries --worker-urls" in check(["--worker-urls=http://x"])[0]
