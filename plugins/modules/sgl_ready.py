#!/usr/bin/python
"""Ansible module sgl_ready: one readiness check of an SGLang unit (the action plugin of the same name polls it)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sgl_ready
short_description: Wait until an SGLang unit serves (the readiness gate)
description:
  - Ready means, in order, that the unit is active, the port is bound (SGLang binds it only after the weights are
    loaded), C(GET /health) answers 200 (503 during warmup) and C(GET /v1/models) lists O(model).
  - Fails at once, not at the deadline, when the unit failed, waits to auto-restart, or was restarted by systemd
    since the gate began (O(restarts_baseline)), with the journal's last lines.
  - Ranks >= 1 of a multi-node group (O(worker)) serve no HTTP; ready means the unit is active and, with
    O(dist_init_addr), holds an established TCP connection to rank 0's rendezvous address.
  - The action plugin of the same name runs the check every O(interval) seconds until ready, printing the progress
    line when it changes, and fails after O(timeout) seconds. The module alone runs the check once.
  - Never calls C(/server_info) (it echoes the API key). Stdlib only; the code is in
    C(plugins/module_utils/sgl_ready.py).
version_added: "0.1.0"
author: sgl-deploy
options:
  unit:
    description: The systemd unit of the engine.
    type: str
    required: true
  port:
    description: The engine's HTTP port (rank 0 and single hosts; required unless O(worker)).
    type: int
  model:
    description: The served model name expected in C(/v1/models) (required unless O(worker)).
    type: str
  key_file:
    description: The service's config file with its C(api-key:) line, read on the host for C(/v1/models).
    type: path
  since:
    description: Start of the journal read for progress lines (C(journalctl --since), e.g. C(@<epoch>)).
    type: str
  restarts_baseline:
    description: The unit's C(NRestarts) before the gate; more restarts than that fail the gate at once.
    type: int
  worker:
    description: Rank >= 1 of a multi-node group (no HTTP).
    type: bool
    default: false
  dist_init_addr:
    description: With O(worker), rank 0's rendezvous address (C(host:port)) this rank must be connected to.
    type: str
    default: ""
  interval:
    description: Seconds between two checks (action plugin).
    type: float
    default: 5.0
  timeout:
    description: Seconds before the gate fails (action plugin).
    type: float
    default: 2700.0
  quiet:
    description: Do not print the progress lines (action plugin).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads only. In check mode the action runs the check once and reports it, without waiting or failing
      (a unit that a run would restart is not restarted in check mode).
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
"""

EXAMPLES = r"""
- name: Wait until SGLang is ready (port, /health, /v1/models)
  sgl_ready:
    unit: sglang.service
    port: 8000
    model: MiniMax-M3
    key_file: /etc/sglang/config.yaml
    restarts_baseline: "{{ restarts.status.NRestarts }}"
    timeout: 2700

- name: Wait until this rank joined rank 0's rendezvous
  sgl_ready:
    unit: sglang.service
    worker: true
    dist_init_addr: 10.0.0.11:20000
"""

RETURN = r"""
ready:
  description: Whether the unit serves (in check mode, whether it serves now).
  returned: always
  type: bool
crashed:
  description: Whether the unit failed or restarted (the module fails then; the action plugin fails at once).
  returned: always
  type: bool
line:
  description: The last progress line (the unit state and the journal's latest loading line).
  returned: always
  type: str
polls:
  description: How many checks the action plugin ran.
  returned: action plugin
  type: int
elapsed_s:
  description: Seconds the action plugin waited.
  returned: action plugin
  type: float
"""

from ansible.module_utils import sgl_ready as ready_code
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    unit=dict(type="str", required=True),
    port=dict(type="int"),
    model=dict(type="str"),
    key_file=dict(type="path", no_log=False),
    since=dict(type="str"),
    restarts_baseline=dict(type="int"),
    worker=dict(type="bool", default=False),
    dist_init_addr=dict(type="str", default=""),
    interval=dict(type="float", default=5.0),
    timeout=dict(type="float", default=2700.0),
    quiet=dict(type="bool", default=False),
)
CHECK_ARGS = ("unit", "port", "model", "key_file", "since", "restarts_baseline", "worker", "dist_init_addr")


def run(module, probe=None) -> dict:
    """One check on a (fake or real) AnsibleModule -> the result (``failed`` when the unit crashed)."""
    p = module.params
    if not p["worker"] and (p["port"] is None or not p["model"]):
        return {"failed": True, "changed": False, "ready": False, "crashed": False, "line": "",
                "msg": "sgl_ready: port and model are required unless worker is true"}
    out = ready_code.check(**{k: p[k] for k in CHECK_ARGS}, probe=probe)
    result = {"changed": False, **out}
    if out["crashed"]:
        result["failed"] = True
    result["msg"] = out["msg"] or out["line"]
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run(module)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
