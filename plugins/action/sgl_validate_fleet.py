# -*- coding: utf-8 -*-
"""sgl_validate_fleet: validate every host of the run on the controller, before any host task.

Run once (``run_once: true``) in the first play of every playbook (playbooks/validate.yml). For
each host of the run (``ansible_play_hosts_all``, so ``--limit`` applies) it merges the defaults
of the roles that run on the host's groups (sgl_deploy.validate.ROLE_GROUPS) under the host's
variables (inventory, group_vars, host_vars, -e), templates what can be templated (values that
need facts of a later phase, such as ``sglang_plan_result``, are skipped), checks each role's
``meta/argument_specs.yml`` (entry point ``main``) with Ansible's ``ArgumentSpecValidator`` and
then the semantic rules of ``sgl_deploy.validate``. It never contacts a host.

Fails with every problem of every host, one per line (host, variable, value, problem, fix).
Returns: hosts (how many were checked), elapsed_s, timing (read, template, spec, rules seconds).

Task arguments:
  hosts   hosts to check (default: ansible_play_hosts_all)
  roles_dir  where the roles are (default: the roles/ folder of this checkout)
"""

from __future__ import annotations

import os
import re
import sys
import time

from ansible.plugins.action import ActionBase

try:
    from ansible.parsing.vault import EncryptedString
except ImportError:  # older ansible-core: no vaulted value type to recognise
    EncryptedString = ()

try:
    from sgl_deploy import remote_checks as _remote
    from sgl_deploy import validate as _validate
except ImportError:  # a checkout without `pip install -e .` (or an older install): use the checkout's src/
    sys.path.insert(0, os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")))
    for _name in [m for m in sys.modules if m == "sgl_deploy" or m.startswith("sgl_deploy.")]:
        sys.modules.pop(_name)
    from sgl_deploy import remote_checks as _remote
    from sgl_deploy import validate as _validate


def _maybe_template(value) -> bool:
    """Whether a value holds Jinja (only those are templated: fast on big fleets)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_maybe_template(k) or _maybe_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_maybe_template(v) for v in value)
    return False


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# the same object for every host of the run: part of no cache key
_FLEET_WIDE = frozenset({"groups", "hostvars", "ansible_play_hosts_all", "ansible_play_hosts", "play_hosts",
                         "ansible_play_batch", "playbook_dir", "ansible_playbook_python"})


def _inputs_key(value, merged) -> str:
    """Every variable a template can read, followed through templated variables, with its raw value
    (names that are not variables, such as filters, add nothing)."""
    seen, todo = set(), [value]
    while todo:
        for ident in _IDENT.findall(repr(todo.pop())):
            if ident not in seen and ident in merged and ident not in _FLEET_WIDE:
                seen.add(ident)
                if _maybe_template(merged[ident]):
                    todo.append(merged[ident])
    return repr(value) + repr([(n, merged[n]) for n in sorted(seen)])


VAULT_FIX = ("give validation the vault password: add --ask-vault-pass, or --vault-password-file FILE (or "
             "ANSIBLE_VAULT_PASSWORD_FILE=FILE, or --vault-id for several vaults) to the ansible-playbook command")
_UNDEFINED_RE = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined")


def _is_vault_error(exc: BaseException) -> bool:
    """Whether a templating error comes from a vaulted value that cannot be decrypted."""
    seen = 0
    while exc is not None and seen < 10:
        name = type(exc).__name__
        text = str(exc).lower()
        if "Vault" in name or ("vault" in text and ("decrypt" in text or "secret" in text or "password" in text)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _vault_problem(host: str, name: str, exc: BaseException | None = None) -> dict:
    reason = str(exc).strip().splitlines()[0][:200] if exc is not None and str(exc).strip() else "no vault secret"
    return _validate.problem(host, name, "<vaulted value>",
                             f"cannot be decrypted by the validation ({reason}), so it cannot be checked", VAULT_FIX)


def _undecryptable(value) -> BaseException | None:
    """The decryption error of a vaulted value (or of one inside a list or mapping), else None."""
    if EncryptedString and isinstance(value, EncryptedString):
        try:
            str(value)
        except Exception as exc:  # noqa: BLE001 - AnsibleVaultError and friends
            return exc
        return None
    if isinstance(value, dict):
        return next((e for e in (_undecryptable(v) for v in value.values()) if e is not None), None)
    if isinstance(value, (list, tuple)):
        return next((e for e in (_undecryptable(v) for v in value) if e is not None), None)
    return None


_ROLES_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "roles"))


def _runtime_fact_names(hostvars, host: str) -> set:
    """Names set on ``host`` by tasks (set_fact, register, cached facts): not inventory variables."""
    vm = getattr(hostvars, "_variable_manager", None)
    out = set()
    for attr in ("_nonpersistent_fact_cache", "_fact_cache"):
        cache = getattr(vm, attr, None)
        try:
            out |= set((cache or {}).get(host) or {})
        except Exception:  # noqa: BLE001 - a fact cache plugin that cannot answer: nothing excluded
            pass
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def _role_data(self, roles_dir: str) -> dict:
        """role -> (options of entry point main, defaults, vars) read from the role's files."""
        data = {}
        for role in _validate.ROLE_GROUPS:
            base = os.path.join(roles_dir, role)
            spec = self._loader.load_from_file(os.path.join(base, "meta", "argument_specs.yml")) or {}
            options = ((spec.get("argument_specs") or {}).get("main") or {}).get("options") or {}
            layers = []
            for sub in ("defaults", "vars"):
                path = os.path.join(base, sub, "main.yml")
                if os.path.exists(path):
                    layers.append(self._loader.load_from_file(path, trusted_as_template=True) or {})
            data[role] = (options, layers[0] if layers else {}, layers[1] if len(layers) > 1 else {})
        return data

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        started = time.monotonic()
        playbook_dir = task_vars.get("playbook_dir") or os.getcwd()
        roles_dir = self._task.args.get("roles_dir") or _ROLES_DIR
        hosts = list(self._task.args.get("hosts") or task_vars.get("ansible_play_hosts_all") or [])
        groups = {k: list(v) for k, v in (task_vars.get("groups") or {}).items()}
        hostvars = task_vars["hostvars"]
        roles = self._role_data(roles_dir)
        member_of = {}
        for group, members in groups.items():
            for h in members:
                member_of.setdefault(h, set()).add(group)

        resolved = {}
        templar = None
        cache = {}
        spec_cache = {}
        spec_problems = []
        other_problems = []
        warnings = []
        known = _validate.known_variable_names(roles_dir)
        runtime_facts = None
        timing = {"read_s": 0.0, "template_s": 0.0, "spec_s": 0.0}
        for host in hosts:
            host_groups = member_of.get(host, set())
            host_roles = [r for r, g in _validate.ROLE_GROUPS.items() if g in host_groups]
            mark = time.monotonic()
            raw = dict(hostvars.raw_get(host))
            timing["read_s"] += time.monotonic() - mark
            # what the inventory (inventory files, group_vars, host_vars) and -e set: not facts
            facts = set((raw.get("ansible_facts") or {}) if isinstance(raw.get("ansible_facts"), dict) else ())
            facts |= _runtime_fact_names(hostvars, host)
            inventory_vars = {k: v for k, v in raw.items() if k not in facts}
            allow = raw.get(_validate.ALLOW_UNKNOWN_VARIABLE) or []
            if isinstance(allow, str):
                allow = [allow]
            other_problems += _validate.unknown_variable_problems(
                host, {k: ("<vaulted value>" if EncryptedString and isinstance(v, EncryptedString) else v)
                       for k, v in inventory_vars.items() if k.startswith(_validate.TOOLKIT_PREFIXES)},
                known, allow)
            merged = {}
            names = set()
            for role in host_roles:
                options, defaults, role_vars = roles[role]
                merged.update(role_vars)
                merged.update(defaults)
                names.update(options)
                names.update(defaults)
            merged.update(raw)
            # the magic variables of a play on this host that role defaults use
            merged.setdefault("inventory_hostname", host)
            merged.setdefault("playbook_dir", playbook_dir)
            merged.setdefault("ansible_play_hosts_all", hosts)
            merged.setdefault("ansible_play_hosts", hosts)
            merged.setdefault("groups", groups)
            merged.setdefault("hostvars", hostvars)
            merged.setdefault("ansible_playbook_python", sys.executable)
            prefixes = tuple(f"{_validate.ROLE_PREFIXES[r]}_" for r in host_roles)
            names.update(k for k in raw if prefixes and k.startswith(prefixes))
            names.update(n for n in ("ansible_host",) + _validate.VALIDATION_SETTINGS if n in raw)
            mark = time.monotonic()
            if templar is None:
                templar = self._templar.copy_with_new_env(available_variables=merged)
            else:  # one templar for the whole fleet
                templar.available_variables = merged
            values = {}
            for name in names:
                if name not in merged:
                    continue
                if not _maybe_template(merged[name]):
                    bad = _undecryptable(merged[name])
                    if bad is not None:
                        other_problems.append(_vault_problem(host, name, bad))
                    else:
                        values[name] = merged[name]
                    continue
                # hosts that share every input of a template share its value: template it once
                key = (name, _inputs_key(merged[name], merged))
                if key not in cache:
                    try:
                        cache[key] = (True, templar.template(merged[name]))
                    except Exception as exc:  # noqa: BLE001 - why it failed decides what to say (below)
                        cache[key] = (False, exc)
                ok, value = cache[key]
                if ok:
                    values[name] = value
                elif _is_vault_error(value):
                    if name in raw:  # the inventory's own variable; role defaults derived from it add nothing
                        other_problems.append(_vault_problem(host, name, value))
                else:
                    # undefined because a later phase sets it (sglang_plan_result, ...): the role checks it
                    # when it runs; anything else (a lookup of a missing file, an undefined helper) is said
                    missing = _UNDEFINED_RE.findall(str(value))
                    if name in raw and runtime_facts is None:  # role defaults that fail are the role's business
                        runtime_facts = _validate.runtime_fact_names(os.path.dirname(roles_dir))
                    if name in raw and not (missing and all(m in runtime_facts for m in missing)):
                        text = str(value).strip().splitlines()[0][:240] if str(value).strip() else type(value).__name__
                        warnings.append(_validate.problem(
                            host, name, "<not evaluated>",
                            f"cannot be evaluated on the controller ({text}), so it was not checked here",
                            f"make every variable and file {name} uses available to the controller"))
            resolved[host] = values
            timing["template_s"] += time.monotonic() - mark
            mark = time.monotonic()
            for role in host_roles:
                # a role default as written is valid by construction (tests/unit/test_role_specs.py):
                # check what the inventory set and what was templated
                options, defaults, _vars = roles[role]
                check = {k: v for k, v in values.items()
                         if k in options and (k in raw or _maybe_template(defaults.get(k)))}
                key = (role, repr(sorted(check.items(), key=lambda kv: kv[0])))
                if key not in spec_cache:
                    spec_cache[key] = _validate.argument_spec_problems("\0", role, options, check)
                spec_problems += [{**p, "host": host} for p in spec_cache[key]]
            timing["spec_s"] += time.monotonic() - mark
        mark = time.monotonic()
        semantic = other_problems + _validate.fleet_problems(resolved, groups, hosts)
        timing["rules_s"] = time.monotonic() - mark
        mark = time.monotonic()
        # one cause, one line: a value an offline rule already refused is not reported again by its look-up
        said = {(p["host"], p["variable"]) for p in semantic + spec_problems}
        semantic += [p for p in _remote.fleet_remote_problems(resolved, groups, hosts) if (p["host"], p["variable"]) not in said]
        timing["remote_s"] = time.monotonic() - mark
        problems, soft = _validate.split_warnings(_validate.merge_problems(spec_problems, semantic, hosts))
        warnings += soft
        timing = {k: round(v, 3) for k, v in timing.items()}
        result.update(changed=False, hosts=len(hosts), elapsed_s=round(time.monotonic() - started, 3), timing=timing)
        if warnings:
            result["warnings"] = [_validate.format_line(p) for p in warnings]
        if problems:  # the message says it all (one line per problem); no second copy in the result
            result["failed"] = True
            result["msg"] = _validate.format_problems(problems)
        else:
            result["msg"] = f"{len(hosts)} host(s) validated: no bad value"
        return result
