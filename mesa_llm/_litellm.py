"""Lazy, offline-safe import of litellm (about 4 s, and it fetches a cost map unless told not to)."""

from __future__ import annotations

import os
from types import ModuleType


def import_litellm() -> ModuleType:
    """Import litellm on first use, without letting it download its model cost map."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm
