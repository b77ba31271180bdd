"""Where a layer's bytes live, behind one small protocol.

The world and the operations on it only ever see :class:`LayerStorage`: an
``ndarray`` to read and write, a way to get a private writable copy-on-write
array for read-only worlds, the changes a commit must write (``patches``) and
``close``. Which kind a layer uses
is configuration (see ``WorldSpec.with_storage``).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from .mapped import MappedStorage
from .memory import MemoryStorage
from .sparse import SparseStorage


class LayerStorage(Protocol):
    """What every storage kind provides."""

    kind: ClassVar[str]

    @property
    def array(self) -> np.ndarray:
        """The live array: writable in a writable world, read-only otherwise."""

    def private_array(self) -> np.ndarray:
        """A writable array of the same values whose writes never reach the file."""

    def patches(self) -> list[tuple[int, memoryview]] | None:
        """``(file offset, bytes)`` a commit writes so the file holds what the array holds.

        None: the layer cannot be patched (an in-RAM layer chunked in the
        file); the commit then writes it whole with ``flush``.
        """

    def cut_short(self) -> bool:
        """Whether the file was cut shorter under the layer's mapping (its pages past the end now read zeros)."""

    def drop_private(self) -> None:
        """After a commit: give up private copies of pages the file now holds."""

    def close(self) -> None:
        """Release the storage; arrays handed out stay valid (they keep it alive)."""


__all__ = ["LayerStorage", "MappedStorage", "MemoryStorage", "SparseStorage"]
