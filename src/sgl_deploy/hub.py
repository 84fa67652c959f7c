"""ModelScope hub listings: parse the `repo/files` answer and size what will be downloaded.

The listing (``GET {ep}/api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=True``)
is fetched on the host (the controller may not reach the hub); this module only interprets it,
with the client's own matching rules (fnmatch on the full path; ``*`` crosses ``/``; a pattern
containing ``.*`` is also tried with ``*``; reference/modelscope.md §1).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Iterable


def listing_files(listing: dict[str, Any] | list[Any]) -> list[dict[str, Any]]:
    """Files (not trees) of a listing answer, as ``{path, size, sha256}``."""
    data: Any = listing.get("Data", listing) if isinstance(listing, dict) else listing
    if isinstance(data, dict):
        data = data.get("Files", [])
    files = []
    for entry in data or []:
        if entry.get("Type") == "tree":
            continue
        path = entry.get("Path") or entry.get("path") or entry.get("Name")
        files.append({"path": path, "size": int(entry.get("Size") or 0), "sha256": entry.get("Sha256")})
    return files


def _matches(path: str, patterns: Iterable[str]) -> bool:
    for pat in patterns:
        if fnmatchcase(path, pat) or (".*" in pat and fnmatchcase(path, pat.replace(".*", "*"))):
            return True
    return False


def select_files(
    files: list[dict[str, Any]], allow: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    allow, ignore = list(allow or []), list(ignore or [])
    return [
        f for f in files
        if (not allow or _matches(f["path"], allow)) and not (ignore and _matches(f["path"], ignore))
    ]


def listing_total_gb(
    listing: dict[str, Any] | list[Any], allow: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> float:
    """Decimal GB the selected files of a listing add up to."""
    return sum(f["size"] for f in select_files(listing_files(listing), allow, ignore)) / 1e9
