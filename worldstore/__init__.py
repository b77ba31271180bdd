"""worldstore: grid worlds of multi-agent simulations in one memory-mapped HDF5 file.

>>> import worldstore, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "farm.h5")
>>> spec = worldstore.presets.agentfarm(128, 128, agents=8)
>>> with worldstore.create(path, spec) as world:
...     resources = world["RESOURCES"].numpy()     # an ndarray over the file
...     resources[:64] = 1.0
...     world.step()
1
>>> with worldstore.open(path) as world:
...     float(world["RESOURCES"].numpy().sum())
8192.0
"""

from . import presets
from ._version import __version__
from .errors import (AgentSlotError, DecayError, DepositError, DetachedWorldError, DiskFullError, HistoryError,
                     LayerDtypeError, LayerNotFoundError, LayerShapeError, ManagerError, MissingExtraError,
                     ObserveError, ReadOnlyWorldError, RenderError, SpecError, UnknownAgentError, ViewError,
                     WorldClosedError, WorldExistsError, WorldFormatError, WorldLockedError, WorldNotFoundError,
                     WorldPermissionError, WorldReplacedError, WorldstoreError, WorldVersionError)
from .layer import Layer
from .slots import AgentSlots
from .spec import (DEFAULT_SWITCH_DENSITY, GRID_CLASSES, LAYER_DTYPES, STORAGE_KINDS, LayerSpec, WorldSpec,
                   parse_size)
from ._schema import HISTORY_CODECS
from .analysis import to_xarray
from .compaction import compact
from .demo import run_demo
from .render import render, render_gif
from .summary import inspect
from .validate import validate
from .world import World, create, open, recover
from . import history, observe  # noqa: F401  (they register World's operations: see world.OPERATIONS)
from . import agentfarm  # noqa: F401  (AgentFarm's managers over a world: worldstore.agentfarm)

__all__ = [
    "__version__", "presets",
    "create", "open", "inspect", "compact", "recover", "render", "render_gif", "parse_size", "run_demo",
    "validate", "to_xarray",
    "World", "Layer", "WorldSpec", "LayerSpec", "AgentSlots", "agentfarm",
    "GRID_CLASSES", "LAYER_DTYPES", "STORAGE_KINDS", "DEFAULT_SWITCH_DENSITY", "HISTORY_CODECS",
    "WorldstoreError", "SpecError", "DepositError", "ObserveError", "HistoryError", "RenderError",
    "LayerNotFoundError", "LayerShapeError", "LayerDtypeError",
    "ReadOnlyWorldError", "WorldClosedError", "WorldExistsError", "WorldNotFoundError",
    "WorldFormatError", "WorldVersionError", "WorldLockedError", "DiskFullError", "WorldReplacedError",
    "DetachedWorldError", "WorldPermissionError", "MissingExtraError", "DecayError", "AgentSlotError",
    "UnknownAgentError", "ManagerError", "ViewError",
]
