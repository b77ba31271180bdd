"""A layer of a world: a thin, checked wrapper over one storage.

``layer.numpy()`` is the live ``ndarray`` (a view over the file for mapped
layers) and ``layer.tensor()`` a zero-copy ``torch.Tensor`` over the same
memory. ``layer[index] = values`` checks shape and dtype first and writes
nothing when they do not fit; writing through ``numpy()`` views is plain
numpy, unchecked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _extras
from .errors import (DepositError, DetachedWorldError, LayerDtypeError, LayerShapeError, ReadOnlyWorldError,
                     WorldClosedError)
from .spec import LayerSpec
from .temporal import as_array

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .storage import LayerStorage


def _fits(array: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every value of ``array`` is representable in ``dtype``."""
    src = array.dtype
    if dtype.kind == "b":
        return src.kind == "b"
    if src.kind not in "biuf":
        return False
    if dtype.kind in "iu":
        if src.kind == "f":
            return False
        if np.can_cast(src, dtype, "safe") or array.size == 0:
            return True
        info = np.iinfo(dtype)
        return bool(array.min() >= info.min and array.max() <= info.max)
    return True  # any bool/int/float into a float layer, as numpy's same_kind casting


def check_values(name: str, values: Any, selection_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Return ``values`` as an array that can be written to the selection, or raise.

    Values must be a scalar or have exactly the selection's shape; they must be
    representable in the layer's dtype (no floats into integer layers, no
    out-of-range integers, only bools into bool layers).
    """
    array = as_array(values)
    if array.dtype.kind not in "biuf":
        raise LayerDtypeError(f"layer {name!r}: cannot store values of dtype {array.dtype} in a "
                              f"{dtype.name} layer; nothing was written")
    if not _fits(array, dtype):
        raise LayerDtypeError(f"layer {name!r}: values of dtype {array.dtype} do not fit the layer's dtype "
                              f"{dtype.name} without loss; convert them (for example "
                              f".astype('{dtype.name}')) after checking the range. Nothing was written")
    if array.ndim and array.shape != selection_shape:
        raise LayerShapeError(f"layer {name!r}: values of shape {array.shape} do not match the selection's "
                              f"shape {selection_shape}; nothing was written")
    if dtype.kind == "f" and array.size and not np.can_cast(array.dtype, dtype, "safe"):
        with np.errstate(over="ignore", invalid="ignore"):
            converted = array.astype(dtype)
        if np.isinf(converted).any() and not np.isinf(array).any():
            raise LayerDtypeError(f"layer {name!r}: values overflow {dtype.name} "
                                  f"(largest {np.finfo(dtype).max}); nothing was written")
        if array.dtype.kind in "iu":
            _check_exact(name, array, converted, dtype)
        return converted
    return array


def _check_exact(name: str, array: np.ndarray, converted: np.ndarray, dtype: np.dtype) -> None:
    """Raise unless every integer of ``array`` survived its conversion to the float ``converted``.

    Floats hold every integer up to ``2**(nmant + 1)`` exactly (16,777,216 for
    float32); beyond that only some, and numpy rounds the rest silently
    (``2**25 + 1`` becomes ``33554432.0``). Those few are compared as Python ints.
    """
    exact = 2 ** (np.finfo(dtype).nmant + 1)
    big = np.flatnonzero((array.reshape(-1) > exact) | (array.reshape(-1) < -exact))
    for index in big.tolist():
        value = int(array.reshape(-1)[index])
        if int(converted.reshape(-1)[index]) != value:
            raise LayerDtypeError(f"layer {name!r}: the integer {value} has no exact {dtype.name} value (it would "
                                  f"be stored as {converted.reshape(-1)[index]!r}); {dtype.name} holds every "
                                  f"integer up to {exact} exactly. Nothing was written")


def coo_of(storage: Any) -> tuple[np.ndarray, np.ndarray]:
    """A storage's non-zero cells as ``(coords, values)``, row-major: its own COO form when it is sparse."""
    if storage.kind == "sparse":
        return storage.coo()
    array = storage.array
    coords = np.argwhere(array)
    return coords, array[tuple(coords.T)]

class Layer:
    """One named grid of a :class:`~worldstore.World`.

    >>> import worldstore, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
    >>> spec = worldstore.WorldSpec(8, 8, 0, [worldstore.LayerSpec("RESOURCES", "resource")])
    >>> with worldstore.create(path, spec) as world:
    ...     layer = world["RESOURCES"]
    ...     layer[2:4, 2:4] = 1.5
    ...     float(layer.numpy().sum())
    6.0
    """

    def __init__(self, spec: LayerSpec, shape: tuple[int, ...], storage: "LayerStorage", writable: bool,
                 guard: Any = None):
        self._spec = spec
        self._shape = shape
        self._storage: LayerStorage | None = storage
        self._writable = writable
        # In a reader: runs a read again until no commit landed while it ran (World._consistent_read).
        self._guard = guard
        # Why a writer's layer no longer takes checked writes (a forked child's copy; World._detach).
        self._detached: str | None = None

    # -- what it is -------------------------------------------------------
    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def spec(self) -> LayerSpec:
        return self._spec

    @property
    def grid_class(self) -> str:
        return self._spec.grid_class

    @property
    def dtype(self) -> np.dtype:
        return self._spec.np_dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def storage(self) -> str:
        """The storage kind in use: ``"mapped"``, ``"memory"`` or ``"sparse"``."""
        return self._live().kind

    @property
    def nnz(self) -> int:
        """Number of non-zero cells (O(1) for sparse layers, a scan for dense ones)."""
        storage = self._live()
        if storage.kind == "sparse":
            return storage.nnz  # type: ignore[attr-defined]
        return int(np.count_nonzero(storage.array))

    @property
    def density(self) -> float:
        """Fraction of cells that are non-zero."""
        return self.nnz / max(1, int(np.prod(self._shape, dtype=np.int64)))

    @property
    def fill_value(self):
        return self._spec.fill_value

    @property
    def pad_value(self):
        return self._spec.pad_value

    def __repr__(self) -> str:
        if self._storage is None:
            return f'<worldstore layer "{self.name}" (closed)>'
        return (f'<worldstore layer "{self.name}": {self.grid_class}, shape {self._shape}, '
                f'{self.dtype.name}, {self._storage.kind}>')

    # -- data ---------------------------------------------------------------
    def _live(self) -> "LayerStorage":
        if self._storage is None:
            raise WorldClosedError(f"layer {self.name!r} belongs to a closed world; open the world again")
        return self._storage

    def numpy(self) -> np.ndarray:
        """The live ``ndarray`` (zero-copy; read-only in a read-only world).

        A sparse layer has no dense array: this builds a read-only dense copy.
        """
        return self._live().array

    def tensor(self) -> "torch.Tensor":
        """A zero-copy ``torch.Tensor`` over the layer's memory.

        In a read-only world the tensor is over a private copy-on-write view:
        writing to it never changes the file (or this layer's ``numpy()``).
        """
        storage = self._live()
        array = storage.array if self._writable and storage.kind != "sparse" else storage.private_array()
        return _extras.torch("layer.tensor()").from_numpy(array)

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coords, values)`` of the non-zero cells: ``(nnz, ndim)`` int64 and ``(nnz,)``, row-major order."""
        return coo_of(self._live())

    def sparse_tensor(self) -> "torch.Tensor":
        """The layer as a coalesced ``torch.sparse_coo_tensor`` (O(nnz) for sparse layers).

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> spec = worldstore.WorldSpec(4, 4, 0, [worldstore.LayerSpec("HEAT", "temporal", storage="sparse")])
        >>> with worldstore.create(path, spec) as world:
        ...     world.deposit("HEAT", [0, 3], [1, 2], 1.0)
        ...     world["HEAT"].sparse_tensor().to_dense()[3, 2].item()
        1.0
        """
        torch = _extras.torch("layer.sparse_tensor()")
        coords, values = self.coo()
        return torch.sparse_coo_tensor(torch.from_numpy(coords.T.copy()), torch.from_numpy(values),
                                       self._shape, is_coalesced=True, check_invariants=False)

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """A dense copy of ``[rows, cols]`` of a 2-D layer; a sparse layer touches only that window's cells."""
        storage = self._live()
        if self.ndim != 2:
            raise LayerShapeError(f"layer {self.name!r}: window() reads 2-D layers; this one has shape {self._shape}")
        if storage.kind == "sparse":
            return storage.window(rows, cols)  # type: ignore[attr-defined]
        if self._guard is not None:
            return self._guard(lambda: storage.array[rows, cols].copy())
        return storage.array[rows, cols].copy()

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        if dtype is not None and np.dtype(dtype) != array.dtype:
            return array.astype(dtype)
        return array.copy() if copy else array

    def __len__(self) -> int:
        return self._shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        """numpy indexing of the live array: a view for basic indexing in a writable world.

        In a read-only world the result is a copy of one committed step, even
        while a writer commits beside it (see ``World.read``).
        """
        if self._guard is not None:
            array = self.numpy()
            return self._guard(lambda: np.array(array[index], copy=True))
        return self.numpy()[index]

    def __setitem__(self, index: Any, values: Any) -> None:
        """Checked write: values of the selection's shape (or a scalar) and a fitting dtype."""
        if self._detached is not None:
            raise DetachedWorldError(self._detached)
        if not self._writable:
            raise ReadOnlyWorldError(f"layer {self.name!r} is read-only: open the world with mode='r+' to write")
        if self._live().kind == "sparse":
            raise DepositError(f"layer {self.name!r} is sparse: change it with world.deposit(..., mode='set'), "
                               f"or make it dense first with world.set_storage({self.name!r}, 'mapped')")
        array = self.numpy()
        # The selection's shape, from a zero-stride stand-in: touches no layer data.
        selection = np.broadcast_to(np.zeros((), dtype=array.dtype), self._shape)[index]
        array[index] = check_values(self.name, values, np.shape(selection), array.dtype)

    def _detach(self, message: str) -> None:
        self._detached = message

    def _close(self) -> None:
        if self._storage is not None:
            self._storage.close()
            self._storage = None
