"""The install phase: versioned venv, `current` link, the pinned SGLang, safe permissions."""


def test_venv_for_the_pin_exists(host, hv):
    venv = f"{hv['sglang_install_root']}/venvs/sglang-{hv['sglang_plan_sglang_version']}"
    assert host.file(f"{venv}/bin/python").exists
    assert host.file(f"{venv}/.sgl-install.json").is_file


def test_current_points_at_the_pinned_venv(host, hv):
    current = host.file(f"{hv['sglang_install_root']}/current")
    assert current.is_symlink
    assert current.linked_to == f"{hv['sglang_install_root']}/venvs/sglang-{hv['sglang_plan_sglang_version']}"


def test_sglang_imports_and_reports_the_pin(host, hv):
    python = f"{hv['sglang_install_root']}/current/bin/python"
    out = host.check_output(
        f"{python} -c 'import importlib.metadata as m; print(m.version(\"sglang\"))'"
    )
    assert out.strip() == hv["sglang_plan_sglang_version"]


def test_nothing_under_the_install_root_is_world_writable(host, hv):
    found = host.check_output(f"find {hv['sglang_install_root']} -xdev -perm -o+w ! -type l -print -quit")
    assert found == "", f"world-writable: {found}"


def test_venvs_are_root_owned(host, hv):
    venvs = host.file(f"{hv['sglang_install_root']}/venvs")
    assert venvs.user == "root"
    assert venvs.mode & 0o022 == 0
