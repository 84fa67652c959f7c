"""The toolkit's one exception base (issue 29).

Every exception class defined in ``sgl_deploy`` derives from :class:`SglDeployError`, keeping its
other bases (``ValueError``, ``RuntimeError``), so ``except SglDeployError`` catches any error the
toolkit raises on purpose and ``except ValueError`` callers keep working. This module imports
nothing from the package, so every module may import it.
"""

from __future__ import annotations


class SglDeployError(Exception):
    """Base of the errors the toolkit raises on purpose."""
