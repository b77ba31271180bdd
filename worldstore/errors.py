"""Exception types raised by worldstore.

Every error derives from :class:`WorldstoreError` and also from the builtin
exception a user would catch anyway (``KeyError`` for unknown names,
``ValueError`` for bad shapes, ``OSError`` for file problems), so code written
against numpy or h5py keeps working.
"""

from __future__ import annotations

import io


class WorldstoreError(Exception):
    """Base class of every error raised by worldstore."""


class SpecError(WorldstoreError, ValueError):
    """A world or layer specification is invalid (sizes, names, dtypes...)."""


class LayerNotFoundError(WorldstoreError, KeyError):
    """A layer name that the world does not have."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class LayerShapeError(WorldstoreError, ValueError):
    """Values written to a layer have the wrong shape."""


class LayerDtypeError(WorldstoreError, TypeError):
    """Values written to a layer cannot be stored in its dtype without loss."""


class DepositError(WorldstoreError, ValueError):
    """A deposit with bad coordinates, values or mode, or into a non-temporal layer."""


class DecayError(WorldstoreError, ValueError):
    """A decay that cannot apply: a rate outside [0, 1], a negative threshold, or a layer in
    ``set_decay``/``step(layers=...)`` that is not temporal."""


class ObserveError(WorldstoreError, ValueError):
    """Bad arguments to observe() or remember(): positions, radius, channels, buffers, agent ids."""


class AgentSlotError(WorldstoreError, ValueError):
    """An agent-slot map cannot do that: it is full, the id is there already, or the id is not a str or int."""


class UnknownAgentError(WorldstoreError, KeyError):
    """An agent id that the agent-slot map does not hold (never added, or removed)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class ManagerError(WorldstoreError, ValueError):
    """A call on a :mod:`worldstore.agentfarm` manager that its world cannot serve: an array created twice,
    a shape other than the world's, a mode or config value it does not know."""


class HistoryError(WorldstoreError, LookupError):
    """A snapshot that is not there (unknown step), or a file without history."""


class RenderError(WorldstoreError, ValueError):
    """A picture that cannot be drawn as asked: no agent for an agent layer, an unknown colormap..."""


class ViewError(WorldstoreError, ValueError):
    """A request ``worldstore view`` cannot answer as asked: a bad step, agent, cell, zoom level, tile or port."""


class ReadOnlyWorldError(WorldstoreError, io.UnsupportedOperation):
    """A write was attempted on a world opened read-only."""


class WorldClosedError(WorldstoreError, ValueError):
    """An operation on a world (or one of its layers) after ``close()``."""


class WorldExistsError(WorldstoreError, FileExistsError):
    """``create`` would overwrite an existing file."""


class WorldNotFoundError(WorldstoreError, FileNotFoundError):
    """The path given to ``open`` does not exist."""


class WorldFormatError(WorldstoreError, OSError):
    """The file is not a readable worldstore world (foreign, corrupt, truncated)."""


class WorldVersionError(WorldFormatError):
    """The file was written by a newer worldstore format than this library reads."""


class DiskFullError(WorldstoreError, OSError):
    """Not enough disk space to reserve the world's blocks."""


class WorldLockedError(WorldstoreError, OSError):
    """Another process holds the world open for writing (HDF5's file lock)."""


class WorldReplacedError(WorldstoreError, OSError):
    """The world's path now names another file (``create --overwrite``, ``compact``, a copy over it)."""


class DetachedWorldError(WorldstoreError, RuntimeError):
    """A world used for writing in a process that did not open it (a forked child)."""


class MissingExtraError(WorldstoreError, ImportError):
    """A feature needs an optional dependency that is not installed (the message names the extra)."""


class WorldPermissionError(WorldstoreError, PermissionError):
    """This user may not do that to the world's file (open it for writing, recover it)."""
