#!/usr/bin/python
"""Ansible module sgl_router_workers: reconcile a running gateway's (smg) worker list."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sgl_router_workers
short_description: Reconcile a running gateway's (smg) workers with the desired list
description:
  - Reads the router's workers (C(GET /workers)), registers the missing ones (C(POST /workers)) and removes the
    extra ones (C(DELETE /workers/{id}); requests already running on a removed worker finish), then waits until
    every added worker is listed healthy. The router keeps running.
  - URLs are compared without a trailing slash.
  - With an API key (O(key_file)) the router needs a bearer token on the worker API; the key is read from the
    file on the router host, never passed as a parameter.
  - Runs on the router host (stdlib only); code shared with the role's control script in
    C(plugins/module_utils/sgl_router.py).
version_added: "0.1.0"
author: sgl-deploy
options:
  desired:
    description: The worker URLs the router must route to (C(http://host:port)); an empty list removes every worker.
    type: list
    elements: str
    required: true
  base_url:
    description: The router's base URL, as seen from where the module runs.
    type: str
    default: http://127.0.0.1:30000
  key_file:
    description:
      - File with the router's API key. Unset, no key is sent.
      - The key is also sent in the body of C(POST /workers) as the worker's key (smg does not give workers added
        through its API its own C(--api-key)).
    type: path
  ca_file:
    description: CA bundle the gateway's TLS certificate chains to, for an C(https) O(base_url). Unset, the system store.
    type: path
  timeout:
    description: Seconds to wait until the added workers are listed healthy.
    type: int
    default: 300
  http_timeout:
    description: Seconds per HTTP request to the router.
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    description: Reads the router's workers and reports what it would add and remove; changes nothing.
  diff_mode:
    support: full
    description: The worker list before and after, one URL per line.
"""

EXAMPLES = r"""
- name: Sync the router's workers with the inventory
  sgl_router_workers:
    desired:
      - http://10.77.0.11:8000
      - http://10.77.0.12:8000
    key_file: /etc/sglang-router/api-key
    timeout: 600
"""

RETURN = r"""
added:
  description: Worker URLs registered (in check mode, that would be).
  returned: success
  type: list
  elements: str
removed:
  description: Worker URLs removed (in check mode, that would be).
  returned: success
  type: list
  elements: str
before:
  description: The router's worker URLs before the change.
  returned: success
  type: list
  elements: str
workers:
  description: The desired worker URLs (what the router routes to afterwards).
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils import sgl_router as router_code
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    desired=dict(type="list", elements="str", required=True),
    base_url=dict(type="str", default="http://127.0.0.1:30000"),
    key_file=dict(type="path", no_log=False),
    ca_file=dict(type="path"),
    timeout=dict(type="int", default=300),
    http_timeout=dict(type="int", default=10),
)


class ModuleError(Exception):
    """A failure to report with fail_json."""


def run(module) -> dict:
    """The module's work, on a (fake or real) AnsibleModule; returns the result dict."""
    p = module.params
    key = None
    if p["key_file"]:
        try:
            with open(p["key_file"], encoding="utf-8") as fh:
                key = fh.read().strip() or None
        except OSError as exc:
            raise ModuleError(f"cannot read the key file {p['key_file']}: {exc}") from exc
    router = router_code.Router(p["base_url"], key, float(p["http_timeout"]), p.get("ca_file"))
    try:
        out = router_code.reconcile(router, p["desired"], float(p["timeout"]), check_mode=module.check_mode)
    except RuntimeError as exc:
        raise ModuleError(str(exc)) from exc
    if getattr(module, "_diff", False):
        out["diff"] = {"before": "".join(u + "\n" for u in out["before"]),
                       "after": "".join(u + "\n" for u in out["workers"]),
                       "before_header": "router workers", "after_header": "router workers"}
    return out


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        module.exit_json(**run(module))
    except ModuleError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
