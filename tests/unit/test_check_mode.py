"""Check mode through site.yml, statically: what runs in check mode only reads, what a fresh host
lacks is not touched, probes stay out, and --diff shows no state blobs.

The lab test (tests/lab/test_check_mode.py) runs site.yml --check --diff on real hosts; these rules
catch the usual regressions in the task files without a lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# playbooks/redeploy.yml and the task files only it includes act on a running fleet (drain, roll back);
# it has no check mode (sgl-deploy redeploy never passes --check), so they are not site.yml's rules
REDEPLOY_ONLY = {"playbooks/redeploy.yml", "roles/sglang_router/tasks/worker.yml",
                 "roles/sglang_service/tasks/rollback.yml", "roles/sglang_service/tasks/backup.yml"}
TASK_FILES = sorted(p for p in [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("roles/*/handlers/*.yml"),
                                *ROOT.glob("playbooks/*.yml")]
                    if str(p.relative_to(ROOT)) not in REDEPLOY_ONLY)
NESTED = ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers")
# modules that never change a host, so they may run in check mode (check_mode: false)
READ_ONLY = {"stat", "slurp", "setup", "find", "uri", "set_fact", "debug", "assert", "fail", "getent",
             "wait_for", "sgl_poll", "package_facts", "service_facts"}
STATE_KEYS = ("state", "enabled", "masked")


def _module(task: dict) -> tuple[str, object] | None:
    for key, value in task.items():
        short = key.rsplit(".", 1)[-1]
        if key.startswith("ansible.builtin.") or key in READ_ONLY or short in (
                "command", "shell", "copy", "template", "file", "systemd_service", "systemd", "sgl_poll"):
            return short, value
    return None


def tasks(node, where: str):
    if isinstance(node, list):
        for item in node:
            yield from tasks(item, where)
    elif isinstance(node, dict):
        if any(k in node for k in NESTED):
            for key in NESTED:
                yield from tasks(node.get(key), where)
        else:
            yield where, node


def all_tasks():
    for path in TASK_FILES:
        yield from tasks(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT)))


def _when(task: dict) -> str:
    when = task.get("when", [])
    return " ".join(when if isinstance(when, list) else [str(when)])


def check_mode_writers(items) -> list[str]:
    """Tasks forced to run in check mode (check_mode: false) that may change something."""
    out = []
    for where, task in items:
        if task.get("check_mode") is not False:
            continue
        module = _module(task)
        name = module[0] if module else "?"
        if name in READ_ONLY:
            continue
        if name in ("command", "shell") and task.get("changed_when") is False:
            continue
        if name in ("systemd_service", "systemd") and isinstance(module[1], dict) and not any(
                k in module[1] for k in STATE_KEYS):
            continue
        out.append(f"{where}: {task.get('name')} ({name}) runs in check mode and may change the host")
    return out


def unguarded_service_actions(items) -> list[str]:
    """systemd start/restart/reload/stop without `not ansible_check_mode`: fails on a fresh host's
    missing unit in check mode."""
    out = []
    for where, task in items:
        module = _module(task)
        if not module or module[0] not in ("systemd_service", "systemd") or not isinstance(module[1], dict):
            continue
        if module[1].get("state") and "not ansible_check_mode" not in _when(task):
            out.append(f"{where}: {task.get('name')}")
    return out


def diff_blobs(items) -> list[str]:
    """copy tasks writing one-line JSON (to_json) without diff: false or no_log: a blob in --diff."""
    out = []
    for where, task in items:
        module = _module(task)
        if not module or module[0] != "copy" or not isinstance(module[1], dict):
            continue
        content = str(module[1].get("content", ""))
        if "to_json" in content.replace("to_nice_json", "") and task.get("diff") is not False and not task.get("no_log"):
            out.append(f"{where}: {task.get('name')}")
    return out


def test_redeploy_only_files_are_not_in_site_yml():
    """REDEPLOY_ONLY is no hiding place: no role's main.yml (what site.yml runs) includes them."""
    site = (ROOT / "site.yml").read_text()
    for path in REDEPLOY_ONLY:
        assert (ROOT / path).exists(), path
        if path.startswith("roles/"):
            assert Path(path).name not in (ROOT / path).parent.joinpath("main.yml").read_text(), path
        else:
            assert path not in site, path


def test_check_mode_only_reads():
    assert check_mode_writers(all_tasks()) == []


def test_service_actions_skip_check_mode():
    assert unguarded_service_actions(all_tasks()) == []


def test_no_state_blob_in_diff():
    assert diff_blobs(all_tasks()) == []


def test_the_verification_cache_is_kept_out_of_diff():
    """The module sgl_sglang_check writes the cache (no diff mode); no task copies it into a diff."""
    verify = yaml.safe_load((ROOT / "roles/sglang_install/tasks/verify.yml").read_text())
    checks = [t for t in verify if "sgl_sglang_check" in t]
    assert len(checks) == 1 and str(checks[0]["sgl_sglang_check"]["cache"]).endswith("/.sgl-verified.json")
    assert not [t for t in verify if ".sgl-verified.json" in str(t.get("ansible.builtin.copy", {}))]
    doc = yaml.safe_load((ROOT / "plugins/modules/sgl_sglang_check.py").read_text().split('DOCUMENTATION = r"""')[1]
                         .split('"""')[0])
    assert doc["attributes"]["diff_mode"]["support"] == "none"


def test_probes_do_not_run_in_check_mode():
    main = yaml.safe_load((ROOT / "roles/probes/tasks/main.yml").read_text())
    runs = [t for t in main if t.get("ansible.builtin.include_tasks") == "run.yml"]
    assert len(runs) == 1  # one include runs every target and suite (tasks/run.yml)
    assert all("not ansible_check_mode" in _when(t) for t in runs)


@pytest.mark.parametrize(("rule", "task"), [
    (check_mode_writers, {"name": "x", "ansible.builtin.command": "touch /x", "check_mode": False}),
    (check_mode_writers, {"name": "x", "ansible.builtin.copy": {"dest": "/x", "content": "y"}, "check_mode": False}),
    (check_mode_writers, {"name": "x", "ansible.builtin.systemd_service": {"name": "u", "state": "restarted"},
                          "check_mode": False}),
    (unguarded_service_actions, {"name": "x", "ansible.builtin.systemd_service": {"name": "u", "state": "started"}}),
    (diff_blobs, {"name": "x", "ansible.builtin.copy": {"dest": "/x", "content": "{{ big | to_json }}"}}),
])
def test_a_broken_task_fails(rule, task):
    assert rule([("t.yml", task)])


@pytest.mark.parametrize(("rule", "task"), [
    (check_mode_writers, {"name": "x", "ansible.builtin.command": "date", "check_mode": False, "changed_when": False}),
    (check_mode_writers, {"name": "x", "ansible.builtin.systemd_service": {"name": "u"}, "check_mode": False}),
    (unguarded_service_actions, {"name": "x", "ansible.builtin.systemd_service": {"name": "u", "state": "started"},
                                 "when": ["not ansible_check_mode"]}),
    (diff_blobs, {"name": "x", "ansible.builtin.copy": {"dest": "/x", "content": "{{ m | to_nice_json }}"}}),
    (diff_blobs, {"name": "x", "ansible.builtin.copy": {"dest": "/x", "content": "{{ k | to_json }}"}, "no_log": True}),
])
def test_a_good_task_passes(rule, task):
    assert rule([("t.yml", task)]) == []
