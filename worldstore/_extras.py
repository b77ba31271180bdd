"""Optional dependencies, imported by the features that need them, never by ``import worldstore``.

torch is one (the ``worldstore[torch]`` extra): only the features that hand
out tensors use it (``Layer.tensor()``, ``Layer.sparse_tensor()``,
``observe(tensor=True)`` and ``observe(device=...)``). A storage library
must not make every user download it, several GB where pip picks a CUDA
build.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .errors import MissingExtraError


def has_torch() -> bool:
    """Whether torch is installed (without importing it: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def torch(feature: str) -> Any:
    """The ``torch`` module, for ``feature``; :class:`MissingExtraError` naming the extra where it is missing."""
    try:
        import torch as module
    except ImportError as exc:
        raise MissingExtraError(f"{feature} hands out torch tensors, and torch is not installed: "
                                "pip install 'worldstore[torch]' (or torch itself). Everything else in "
                                "worldstore works without it") from exc
    return module
