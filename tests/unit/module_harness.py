"""Load the repo's modules (plugins/modules) and module_utils for unit tests, and a fake AnsibleModule.

A module imports ``ansible.module_utils.<name>``; here that name is bound to the repo's
plugins/module_utils file before the module is loaded, as ansible-core's AnsiballZ does on a host.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_module_utils(name: str):
    key = f"ansible.module_utils.{name}"
    if key not in sys.modules:
        import ansible.module_utils as pkg

        spec = importlib.util.spec_from_file_location(key, REPO / "plugins" / "module_utils" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
        setattr(pkg, name, module)
    return sys.modules[key]


def load_module(name: str, utils: tuple[str, ...] = ()):
    for util in utils:
        load_module_utils(util)
    spec = importlib.util.spec_from_file_location(f"sgl_test_module_{name}", REPO / "plugins" / "modules" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeModule:
    """The parts of AnsibleModule the modules use: params (spec defaults applied), check_mode, run_command."""

    def __init__(self, argument_spec: dict, params: dict, check_mode: bool = False):
        self.params = {k: spec.get("default") for k, spec in argument_spec.items()}
        self.params.update(params)
        self.check_mode = check_mode
        self.commands: list[list[str]] = []

    def run_command(self, args, check_rc=False, environ_update=None, data=None, **_kw):
        self.commands.append(list(args))
        env = None
        if environ_update:
            import os

            env = {**os.environ, **environ_update}
        proc = subprocess.run(args, capture_output=True, text=True, env=env, input=data, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr
