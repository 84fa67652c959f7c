"""Fleet topology shared by the firewall and monitoring: a host's replica group.

This is the piece ``firewall`` and ``monitoring`` both need, moved below them so the import goes one
way (``topology`` <- ``firewall`` <- ``monitoring``; issue 29 broke their circle here). It imports
nothing from the package. Issue 29 makes ``sgl_deploy.topology`` the one home of a host's replica
group and rank, URL, ports and peers; this module is where that grows.
"""

from __future__ import annotations

from typing import Iterable, Mapping


def replica_group(host: str, replicas: Mapping[str, Iterable[str]] | None) -> list[str]:
    """The host's replica group in rank order (``[host]`` when it is in none)."""
    for members in (replicas or {}).values():
        members = list(members)
        if host in members:
            return members
    return [host]
