"""Optional dependencies: imported when a feature first needs them, with the install hint.

Extras (``pip install '.[talk]'``, ``'.[cluster]'``, …) are not there in a plain install; a
command that needs one says which, in the error the user sees, instead of a bare
``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, hint: str,
                    error: type[Exception] = ImportError) -> ModuleType:
    """``module`` imported, or ``error(hint)`` raised from the ImportError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise error(hint) from exc
