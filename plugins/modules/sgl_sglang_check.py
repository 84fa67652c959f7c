#!/usr/bin/python
"""Ansible module sgl_sglang_check: verify an installed SGLang against the deployment."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sgl_sglang_check
short_description: Verify an installed SGLang against a deployment (version, architectures, parsers, server argv)
description:
  - Runs the check with the venv's python, which imports the installed SGLang; reads its real parser choices,
    picks the first accepted tool-call and reasoning parser of each preference list, and parses the full server
    argv with SGLang's own C(prepare_server_args), so unknown, removed or ambiguous flags and bad choices fail
    before the service starts.
  - The argv is a list. Arguments that are exactly C({tool_call_parser}) or C({reasoning_parser}) are replaced by
    the chosen parsers; every other argument passes unchanged (JSON values, braces, quotes, spaces).
  - With O(cache), an answer is kept per request (the request includes a hash of the check code); the same
    request again answers from the cache without importing SGLang.
  - The check only reads. Writing the cache is the only change; in check mode the check still runs (when the venv
    exists) and the cache is not written. A venv that does not exist yet is no error in check mode, see RV(verified).
  - The answer is returned, never raised; the caller decides (RV(ok), RV(errors)).
version_added: "0.1.0"
author: sgl-deploy
options:
  python:
    description: The venv's python (the one that imports C(sglang)).
    type: path
    required: true
  version:
    description: The pinned SGLang version; another installed version is an error. Empty accepts any.
    type: str
    default: ""
  architectures:
    description: Model architectures (class names) the installed SGLang must define.
    type: list
    elements: str
    default: []
  tool_call_parser:
    description: Tool-call parser names in preference order; the first one SGLang accepts is chosen.
    type: list
    elements: str
    default: []
  reasoning_parser:
    description: Reasoning parser names in preference order; the first one SGLang accepts is chosen.
    type: list
    elements: str
    default: []
  argv:
    description: The server argv to parse, with the parser placeholders.
    type: list
    elements: str
    default: []
  config_keys:
    description: Keys of the service's C(--config) file; checked with placeholder values (the real file holds secrets).
    type: list
    elements: str
    default: []
  cache:
    description: JSON file that keeps the last answer per request (written with mode 0644). Unset, nothing is cached.
    type: path
attributes:
  check_mode:
    support: full
    description: The check runs (read-only); the cache is not written; RV(changed) says whether it would be.
  diff_mode:
    support: none
    description: The cache is state, not configuration; no diff is shown.
notes:
  - Replaces the former C(roles/sglang_install/files/sgl_check.py) script and its JSON-on-stdout protocol.
"""

EXAMPLES = r"""
- name: Check the installed SGLang, its parsers and the server argv
  sgl_sglang_check:
    python: /opt/sglang/venvs/sglang-0.5.23/bin/python
    version: "0.5.23"
    architectures: [MiniMaxM3ForCausalLM]
    tool_call_parser: [minimax-m3, minimax-m2]
    reasoning_parser: [minimax-m3]
    argv: [--model-path, /srv/models/m3, --tool-call-parser, "{tool_call_parser}", --reasoning-parser, "{reasoning_parser}"]
    config_keys: [api-key]
    cache: /opt/sglang/venvs/sglang-0.5.23/.sgl-verified.json
  register: check

- name: Stop when SGLang cannot serve the plan
  ansible.builtin.fail:
    msg: "{{ check.errors | join(' | ') }}"
  when: not check.ok
"""

RETURN = r"""
ok:
  description: Whether the installed SGLang can serve the request (no RV(errors)).
  returned: always
  type: bool
verified:
  description: Whether the installed SGLang answered (now or from the cache). False only in check mode without the venv.
  returned: always
  type: bool
cached:
  description: Whether the answer came from O(cache).
  returned: always
  type: bool
version:
  description: The installed SGLang version (the pin when RV(verified) is false).
  returned: always
  type: str
parsers:
  description: The chosen parsers (C(tool_call_parser), C(reasoning_parser); null when none was asked for).
  returned: always
  type: dict
argv:
  description: The server argv with the chosen parsers in place of the placeholders (what the service runs, less C(--config)).
  returned: always
  type: list
  elements: str
choices:
  description: The parser choices of the installed SGLang (C(tool_call_parser), C(reasoning_parser)).
  returned: when verified
  type: dict
errors:
  description: Why SGLang cannot serve the request, one sentence each, naming the variable to change.
  returned: always
  type: list
  elements: str
"""

import inspect
import json
import os
import pkgutil

from ansible.module_utils import sgl_sglang_check as check_code
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    python=dict(type="path", required=True),
    version=dict(type="str", default=""),
    architectures=dict(type="list", elements="str", default=[]),
    tool_call_parser=dict(type="list", elements="str", default=[]),
    reasoning_parser=dict(type="list", elements="str", default=[]),
    argv=dict(type="list", elements="str", default=[]),
    config_keys=dict(type="list", elements="str", default=[], no_log=False),
    cache=dict(type="path"),
)


def check_source() -> str:
    """The check code, to run with the venv's python (the module_utils file itself)."""
    try:
        return inspect.getsource(check_code)
    except (OSError, TypeError):
        data = pkgutil.get_data("ansible.module_utils", "sgl_sglang_check.py")
        return data.decode() if data else ""


def read_cache(path):
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("result"), dict) else None


def ask_sglang(module, python, source, request):
    """The venv's answer (a dict with ok/errors), or an answer that says why there is none."""
    rc, out, err = module.run_command([python, "-c", source, json.dumps(request)], check_rc=False,
                                      environ_update={"PYTHONDONTWRITEBYTECODE": "1"})
    lines = (out or "").strip().splitlines()
    try:
        answer = json.loads(lines[-1])
        if isinstance(answer, dict) and "ok" in answer:
            return answer
    except (ValueError, IndexError):
        pass
    return {"ok": False, "errors": [f"the check failed (exit {rc}): {(err or out or '').strip()[-600:]}"]}


def run(module) -> dict:
    """The module's work, on a (fake or real) AnsibleModule; returns the result dict."""
    p = module.params
    source = check_source()
    request = check_code.build_request(p["version"], p["architectures"], p["tool_call_parser"], p["reasoning_parser"],
                                       p["argv"], p["config_keys"], source)
    result = {"changed": False, "cached": False, "verified": True}
    cached = read_cache(p["cache"])
    if cached is not None and cached.get("request") == request:
        return {**result, "cached": True, "choices": {}, **cached["result"]}
    if not os.path.exists(p["python"]):
        if module.check_mode:  # the run would build the venv first: nothing to ask yet
            chosen = check_code.first_choices(request)
            return {**result, "changed": bool(p["cache"]), "verified": False, "ok": True, "errors": [],
                    "version": p["version"], "parsers": chosen, "argv": check_code.resolve_argv(request["argv"], chosen)}
        answer = {"ok": False, "errors": [f"{p['python']} does not exist: the venv is not built"]}
    else:
        answer = ask_sglang(module, p["python"], source, request)
    answer.setdefault("errors", [])
    answer.setdefault("parsers", check_code.first_choices({}))
    answer.setdefault("argv", [])
    answer.setdefault("version", "")
    if p["cache"] and answer["ok"]:  # only a good answer is kept: a failure is asked again next time
        text = json.dumps({"request": request, "result": answer}, sort_keys=True) + "\n"
        old = None
        if os.path.isfile(p["cache"]):
            with open(p["cache"], encoding="utf-8") as fh:
                old = fh.read()
        if old != text:
            result["changed"] = True
            if not module.check_mode:
                tmp = p["cache"] + ".tmp"
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(text)
                os.chmod(tmp, 0o644)
                os.replace(tmp, p["cache"])
    return {**result, **answer}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
