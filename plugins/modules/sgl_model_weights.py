#!/usr/bin/python
"""Ansible module sgl_model_weights: a model's weights in a directory, with MANIFEST.json and marker."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sgl_model_weights
short_description: Model weights from a ModelScope or Hugging Face hub, with a manifest and a completion marker
description:
  - O(state=present) makes O(dir) hold every file of O(model_id)@O(revision) that O(allow_patterns) and
    O(ignore_patterns) select, downloaded with the real hub client, then C(MANIFEST.json) (path, size, sha256 of
    every file) and last the C(.sgl-complete) marker bound to it. A directory whose marker, manifest and file sizes
    match is left alone without contacting the hub (no rehash), so a rerun is cheap and reports no change.
  - O(state=verified) rehashes every file against C(MANIFEST.json). Files that do not match are deleted with the
    marker (O(delete_bad)), so the next O(state=present) fetches exactly them.
  - O(state=status) only reads the directory (stat only), never contacts the hub, never changes anything.
  - In check mode O(state=present) lists the hub (with the client when it is installed, else over plain HTTP, so a
    fresh host without the SGLang venv can be previewed) and reports the files and bytes a run would fetch, and
    whether the disk has room for them (the one disk rule, C(space_required)).
  - A download needs the hub client (C(modelscope==1.40.2), or C(huggingface_hub)), so run the module with the SGLang
    venv's python (C(ansible_python_interpreter)). Listing, patterns, manifest and disk math are the shared code in
    C(plugins/module_utils/sgl_weights.py), also used by the role's fan-out mirror, C(sgl-deploy weights) and the
    lab hub.
version_added: "0.1.0"
author: sgl-deploy
options:
  dir:
    description: The weights directory (absolute).
    type: path
    required: true
  model_id:
    description: The model on the hub, C(owner/name). Needed by O(state=present); for the others it binds the check
      to that model.
    type: str
  revision:
    description: Branch, tag or commit on the hub.
    type: str
    default: master
  allow_patterns:
    description: Glob patterns of the repo files to fetch (the client's rule; empty, every file).
    type: list
    elements: str
    default: []
  ignore_patterns:
    description: Glob patterns of the repo files to skip.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(present), complete weights (downloaded when missing); V(verified), every file rehashed against the
        manifest; V(status), read only.
    type: str
    choices: [present, verified, status]
    default: present
  hub:
    description: The hub protocol.
    type: str
    choices: [modelscope, huggingface]
    default: modelscope
  endpoint:
    description: ModelScope endpoint URL; empty, the client's default.
    type: str
    default: ""
  hf_endpoint:
    description: Hugging Face endpoint or mirror (C(HF_ENDPOINT)).
    type: str
    default: ""
  token:
    description: Hub access token (sent to the hub only).
    type: str
    default: ""
  margin_gb:
    description: Free space (decimal GB) to keep beyond what is still to download.
    type: float
    default: 10.0
  max_workers:
    description: Files downloaded in parallel.
    type: int
    default: 4
  file_timeout:
    description: Seconds per file (C(MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT)).
    type: int
    default: 21600
  parallel_workers:
    description: Parallel ranges per file (C(MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS)).
    type: int
    default: 1
  publish:
    description: Fan-out seed, record each file verified against the listing so the host's live mirror can serve it
      while the rest downloads.
    type: bool
    default: false
  delete_bad:
    description: With O(state=verified), delete mismatching files and the marker; false, fail on them instead.
    type: bool
    default: true
  hash_workers:
    description: Files hashed at once by O(state=verified).
    type: int
    default: 2
attributes:
  check_mode:
    support: full
    description: O(state=present) reports the files and bytes it would fetch and the disk check; O(state=verified)
      rehashes and reports what it would delete. Nothing is written.
  diff_mode:
    support: full
    description: The repo files a run would add (path and size), or delete, one per line.
"""

EXAMPLES = r"""
- name: Weights of MiniMax-M3 from ModelScope, with the SGLang venv's client
  sgl_model_weights:
    dir: /srv/models/MiniMaxAI--MiniMax-M3--master
    model_id: MiniMaxAI/MiniMax-M3
    revision: master
    ignore_patterns: ["*.pth"]
  vars:
    ansible_python_interpreter: /opt/sglang/venvs/sglang-0.5.23/bin/python

- name: Rehash every file against MANIFEST.json
  sgl_model_weights:
    dir: /srv/models/MiniMaxAI--MiniMax-M3--master
    state: verified
"""

RETURN = r"""
complete:
  description: Marker, manifest and file sizes are all there (after the run; in check mode, as found).
  returned: always
  type: bool
reason:
  description: Why the directory is, or is not, complete.
  returned: always
  type: str
total_bytes:
  description: Bytes of the selected repo files (the listing's, or the manifest's).
  returned: when known
  type: int
file_count:
  description: Number of selected repo files.
  returned: when known
  type: int
fetch_files:
  description: The repo paths a run downloads (in check mode, would download).
  returned: state=present and the weights were not complete
  type: list
  elements: str
fetch_bytes:
  description: Bytes still to download (the total minus the full-size files already on disk).
  returned: state=present and the weights were not complete
  type: int
space_ok:
  description: The disk has room for what is still to download plus O(margin_gb).
  returned: state=present and the weights were not complete
  type: bool
endpoint:
  description: The hub endpoint listed or downloaded from.
  returned: state=present and the hub was contacted
  type: str
bad:
  description: Files that do not match the manifest (path and problem).
  returned: state=verified
  type: list
  elements: dict
removed:
  description: Files deleted (in check mode, that would be) by O(state=verified).
  returned: state=verified
  type: list
  elements: str
"""

import argparse
import os
from pathlib import Path

from ansible.module_utils import sgl_weights as w
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = dict(
    dir=dict(type="path", required=True),
    model_id=dict(type="str"),
    revision=dict(type="str", default="master"),
    allow_patterns=dict(type="list", elements="str", default=[]),
    ignore_patterns=dict(type="list", elements="str", default=[]),
    state=dict(type="str", choices=["present", "verified", "status"], default="present"),
    hub=dict(type="str", choices=["modelscope", "huggingface"], default="modelscope"),
    endpoint=dict(type="str", default=""),
    hf_endpoint=dict(type="str", default=""),
    token=dict(type="str", default="", no_log=True),
    margin_gb=dict(type="float", default=10.0),
    max_workers=dict(type="int", default=4),
    file_timeout=dict(type="int", default=21600),
    parallel_workers=dict(type="int", default=1),
    publish=dict(type="bool", default=False),
    delete_bad=dict(type="bool", default=True),
    hash_workers=dict(type="int", default=2),
)


class ModuleError(Exception):
    """A failure to report with fail_json (``details`` go into the result)."""

    def __init__(self, msg: str, /, **details):
        super().__init__(msg)
        self.details = {k: v for k, v in details.items() if k not in ("msg", "failed")}


def tool_args(p: dict) -> argparse.Namespace:
    """The weights code's arguments (the tool's subcommand namespace) from the module's parameters."""
    return argparse.Namespace(
        dir=p["dir"], model_id=p["model_id"], revision=p["revision"], allow=list(p["allow_patterns"] or []),
        ignore=list(p["ignore_patterns"] or []), hub=p["hub"], endpoint=p["endpoint"] or "",
        hf_endpoint=p["hf_endpoint"] or "", margin_gb=float(p["margin_gb"]), max_workers=int(p["max_workers"]),
        file_timeout=int(p["file_timeout"]), parallel_workers=int(p["parallel_workers"]), progress_interval=2.0,
        force=False, publish=bool(p["publish"]), hash_workers=int(p["hash_workers"]),
        delete_bad=bool(p["delete_bad"]), repair=False)


def status_of(p: dict) -> dict:
    return w.evaluate(Path(p["dir"]), p["model_id"], p["revision"] if p["model_id"] else None,
                      p["allow_patterns"], p["ignore_patterns"])


def _lines(files) -> str:
    return "".join(f"{f['path']} ({f['size']} bytes)\n" for f in files)


def preview(args, st: dict, diff: bool) -> dict:
    """Check mode of state=present on incomplete weights: what a run would fetch, and the disk check."""
    listing = w.get_listing(args, client=False)
    weights_dir = Path(args.dir)
    have = w.disk_bytes(weights_dir, listing["files"])["complete_paths"] if weights_dir.is_dir() else set()
    todo = [f for f in listing["files"] if f["path"] not in have]
    space = w.space_check(weights_dir, listing, args.margin_gb)
    fetch_bytes = sum(f["size"] for f in todo)
    out = dict(st, changed=True, endpoint=listing["endpoint"], total_bytes=listing["total_bytes"],
               file_count=listing["file_count"], fetch_files=[f["path"] for f in todo], fetch_bytes=fetch_bytes,
               **{k: v for k, v in space.items() if k != "space_msg"})
    out["msg"] = (f"check mode: a run would download {len(todo)} of {listing['file_count']} files, "
                  f"{fetch_bytes} bytes ({w.fmt_bytes(fetch_bytes)}), of {args.model_id}@{args.revision} from "
                  f"{listing['endpoint']} into {args.dir}")
    if not space["space_ok"]:
        raise ModuleError(space["space_msg"], **{k: v for k, v in out.items() if k != "msg"})
    if diff:
        out["diff"] = {"before": "", "after": _lines(todo), "before_header": f"{args.dir} (missing files)",
                       "after_header": f"{args.dir} (after a download)"}
    return out


def present(module, p: dict) -> dict:
    if not p["model_id"]:
        raise ModuleError("state=present needs model_id")
    st = status_of(p)
    if st["complete"]:
        return dict(st, changed=False, msg=f"{p['model_id']}@{p['revision']} complete in {p['dir']} "
                    "(marker + manifest, sizes match); hub not contacted")
    args = tool_args(p)
    if module.check_mode:
        return preview(args, st, getattr(module, "_diff", False))
    os.environ.update(w.client_env(args))  # the client reads its knobs at import
    result = w.fetch(args)
    return dict(w.evaluate(Path(p["dir"]), p["model_id"], p["revision"], p["allow_patterns"], p["ignore_patterns"]),
                **result, fetch_files=result.get("fetched_paths") or [], fetch_bytes=result.get("total_bytes"))


def verified(module, p: dict) -> dict:
    args = tool_args(p)
    if module.check_mode:
        args.delete_bad = False
    try:
        out = w.verify(args)
    except w.WeightsError as exc:
        if not (module.check_mode and p["delete_bad"] and exc.rc == w.EXIT_INTEGRITY):
            raise
        bad = exc.details.get("bad", [])
        out = {"changed": True, "ok": False, "bad": bad, "removed": [b["path"] for b in bad],
               "msg": f"check mode: would remove {len(bad)} bad file(s) and the marker: {exc.msg}"}
    out.setdefault("removed", [])
    if getattr(module, "_diff", False) and out["removed"]:
        out["diff"] = {"before": "".join(r + "\n" for r in out["removed"]), "after": "",
                       "before_header": f"{p['dir']} (files failing the manifest)", "after_header": "deleted"}
    return dict(status_of(p), **out)


def run(module) -> dict:
    """The module's work, on a (fake or real) AnsibleModule; returns the result dict."""
    p = module.params
    if p["token"]:
        os.environ[w.TOKEN_ENV] = p["token"]
    try:
        if p["state"] == "status":
            return dict(status_of(p), changed=False)
        if p["state"] == "verified":
            return verified(module, p)
        return present(module, p)
    except w.WeightsError as exc:
        raise ModuleError(exc.msg, **dict(exc.details, rc=exc.rc)) from None


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        module.exit_json(**run(module))
    except ModuleError as exc:
        module.fail_json(msg=str(exc), **exc.details)


if __name__ == "__main__":
    main()
