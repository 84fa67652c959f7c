"""ModelScope hub listings: parse the `repo/files` answer and size what will be downloaded.

The listing (``GET {ep}/api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=True``)
is fetched on the host (the controller may not reach the hub); this module only interprets it,
with the client's own matching rules (fnmatch on the full path; ``*`` crosses ``/``; a pattern
containing ``.*`` is also tried with ``*``; reference/modelscope.md §1).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from sgl_deploy import weights as _weights

# one listing parser and one pattern matcher: the weights code's (plugins/module_utils/sgl_weights.py)
listing_files = _weights.listing_entries
select_files = _weights.select_files


def listing_total_gb(
    listing: dict[str, Any] | list[Any], allow: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> float:
    """Decimal GB the selected files of a listing add up to."""
    return sum(f["size"] for f in select_files(listing_files(listing), allow, ignore)) / 1e9


def _hub_down_reason(result: dict[str, Any]) -> str | None:
    """Why a hub listing request (Ansible ``uri`` result) got no usable answer; None when the hub answered.

    Only a hub that does not answer at all (connection refused, DNS, timeout: ``status`` -1) or
    answers 5xx counts as down; a 4xx may be a private repo the listing has no token for (the
    download sends one), so the weights role decides about those.
    """
    status = int(result.get("status") or -1)
    if 0 < status < 500:
        return None
    if status >= 500:
        return f"HTTP {status}"
    msg = str(result.get("msg") or "no answer")
    match = re.search(r"Request failed: (.*)", msg) or re.search(r"Status code was -1 and not \[\d+\]: (.*)", msg)
    reason = (match.group(1) if match else msg).strip()
    reason = re.sub(r"^<urlopen error (.*)>$", r"\1", reason)
    return reason[:200]


def hub_problem(
    result: dict[str, Any], endpoint: str, model_id: str, revision: str, weights_dir: str
) -> dict[str, str] | None:
    """The problem of a host that must download ``model_id@revision`` while the hub does not answer.

    ``result``: the ``uri`` result of the listing request the host made (the plan role's size
    listing). Callers ask only for hosts without complete weights that download from the hub.
    """
    reason = _hub_down_reason(result)
    if reason is None:
        return None
    return {
        "check": "hub",
        "found": f"the model hub {endpoint} does not answer ({reason}), and {weights_dir} has no complete weights",
        "needed": f"the hub answering this host, to download {model_id}@{revision} (or complete weights already there)",
        "fix": f"start or repair the hub, or point model_weights_endpoint (and sglang_plan_hub_endpoint, if set) at one "
        f"that answers; check the host's route, DNS, proxy and firewall (`curl -sS {endpoint}` on the host); or put "
        "complete weights there first (model_weights_source: shared, or fanout from a host that has them)",
    }
