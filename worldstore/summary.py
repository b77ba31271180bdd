"""What a world holds, as a JSON-able dictionary (``worldstore inspect``).

The dictionary's schema is stable and documented in docs/format.md ("inspect
schema"); ``schema`` names its version. New keys may be added; existing keys
keep their meaning.
"""

from __future__ import annotations

import os
from typing import Any

from . import _schema

from .world import OPERATIONS, World
from .world import open as open_world

INSPECT_SCHEMA = "worldstore.inspect/1"


def describe(world: "World") -> dict[str, Any]:
    """Describe an open world: its size, clock, file and every layer."""
    world._check_open()
    h5file = world._file
    group = h5file[_schema.LAYERS_GROUP]
    stat = os.stat(world.path)
    layers = []
    for name, layer in world.layers.items():
        spec = layer.spec
        entry: dict[str, Any] = {
            "name": name,
            "class": spec.grid_class,
            "dtype": spec.dtype,
            "shape": list(layer.shape),
            "dims": list(world.spec.dims_of(name)),
            "storage": layer.storage,
            "bytes": layer.nbytes,
            "bytes_on_disk": int(group[name].id.get_storage_size()),
            "fill_value": spec.fill_value,
            "pad_value": spec.pad_value,
            "long_name": spec.long_name,
            "units": spec.units,
            "description": spec.description,
        }
        if spec.grid_class == "temporal":
            entry["decay"] = spec.decay
            entry["threshold"] = spec.threshold
            entry["switch_density"] = spec.switch_density
            entry["nnz"] = layer.nnz
            entry["density"] = layer.nnz / (world.height * world.width)
            if layer.storage == "sparse":
                entry["bytes_on_disk"] = sum(int(group[aux].id.get_storage_size())
                                             for aux in world.spec.coo_names_of(name)[:2])
        if spec.grid_class == "observation":
            entry["channels"] = list(spec.channels)
            entry["radius"] = spec.radius
        layers.append(entry)
    library = h5file.attrs.get("library_version", "")
    return {
        "schema": INSPECT_SCHEMA,
        "path": os.path.abspath(world.path),
        "format": _schema.FORMAT_NAME,
        "format_version": int(h5file.attrs[_schema.ROOT_VERSION]),
        "created_by": library.decode() if isinstance(library, bytes) else str(library),
        "height": world.height,
        "width": world.width,
        "agents": world.agents,
        "step": world.current_step,
        "committed_step": world.committed_step,
        "file_bytes": stat.st_size,
        "allocated_bytes": stat.st_blocks * 512,
        "layers": layers,
    }


def inspect(path: str | os.PathLike) -> dict[str, Any]:
    """Describe the world file at ``path`` without changing it.

    >>> import worldstore, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
    >>> worldstore.create(path, worldstore.presets.agentfarm(16, 16, 2)).close()
    >>> info = worldstore.inspect(path)
    >>> info["height"], [layer["name"] for layer in info["layers"]][:2]
    (16, ['RESOURCES', 'OBSTACLES'])
    """
    with open_world(path, "r") as world:
        return describe(world)


OPERATIONS["describe"] = describe  # World.describe hands over to this
