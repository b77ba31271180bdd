"""What a world holds: its size, agent count and layers, checked up front.

A :class:`WorldSpec` is plain, frozen data. It is validated when built, so an
invalid world is refused before any file is touched, and it round-trips
through JSON-able dictionaries (the file stores it as attributes).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

from .errors import LayerNotFoundError, SpecError

Scalar = Union[bool, int, float]

#: The five grid classes, in the order a world lists them.
GRID_CLASSES = ("resource", "environment", "temporal", "agent", "observation")
#: Storage kinds: ``mapped`` and ``memory`` are dense; ``sparse`` (COO) is for temporal layers.
STORAGE_KINDS = ("mapped", "memory", "sparse")
#: Dense storage kinds.
DENSE_KINDS = ("mapped", "memory")
#: ``switch_density`` of the agentfarm signal channels. benchmarks/temporal.py
#: measured sparse steps faster than dense ones up to 30% density (8192^2,
#: 10,000 deposits a step), and a float32 layer's sparse form (12 bytes a cell)
#: is smaller than its dense one below 33%: so sparse until 25%, dense above,
#: back to sparse at 12.5%.
DEFAULT_SWITCH_DENSITY = 0.25
#: Dtypes a layer may have (native byte order; bool is stored as HDF5's enum).
LAYER_DTYPES = (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
    "float16", "float32", "float64",
)
#: Names that the file format uses for dimension scales beside the layers.
RESERVED_NAMES = frozenset({"y", "x", "agent", "yx"})

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_DEFAULT_DECAY = 0.9
_DEFAULT_THRESHOLD = 1e-3


def _plain_scalar(value: Any, dtype: np.dtype, what: str, layer: str) -> Scalar:
    """Return ``value`` as a Python scalar that ``dtype`` holds exactly."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (bool, int, float)):
        raise SpecError(f"layer {layer!r}: {what} must be a number or bool, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"layer {layer!r}: {what} must be finite, got {value!r}")
    if dtype.kind == "b":
        if value not in (0, 1):
            raise SpecError(f"layer {layer!r}: {what} of a bool layer must be True or False, got {value!r}")
        return bool(value)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if isinstance(value, float) and not value.is_integer():
            raise SpecError(f"layer {layer!r}: {what} {value!r} is not an integer, but the dtype is {dtype.name}")
        if not info.min <= value <= info.max:
            raise SpecError(f"layer {layer!r}: {what} {value!r} does not fit in {dtype.name} "
                            f"({info.min}..{info.max})")
        return int(value)
    stored = float(np.asarray(value, dtype=dtype))
    if not math.isfinite(stored):
        raise SpecError(f"layer {layer!r}: {what} {value!r} overflows {dtype.name}")
    return stored


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer of a world.

    ``grid_class`` decides the shape: ``(H, W)`` for resource, environment and
    temporal layers, ``(agents, H, W)`` for agent layers and
    ``(agents, len(channels), 2*radius+1, 2*radius+1)`` for observation
    layers. ``pad_value`` is what an observation sees outside the world
    (defaults to ``fill_value``).

    >>> LayerSpec("OBSTACLES", "environment", dtype="bool", pad_value=True).pad_value
    True
    """

    name: str
    grid_class: str
    dtype: str = "float32"
    fill_value: Scalar = 0
    pad_value: Scalar | None = None
    storage: str = "mapped"
    long_name: str = ""
    units: str = ""
    description: str = ""
    #: temporal layers: ``v <- v * decay`` each step, in [0, 1] (0: a cell lasts one step)
    decay: float | None = None
    #: temporal layers: cells with ``|v| < threshold`` become 0 after decay (subnormal values always do)
    threshold: float | None = None
    #: temporal layers: switch automatically between dense and sparse storage:
    #: to sparse when density <= switch_density / 2, to dense when > switch_density
    switch_density: float | None = None
    #: observation layers: the layer names gathered, in order
    channels: tuple[str, ...] = ()
    #: observation layers: window radius R (window side 2R+1)
    radius: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise SpecError(f"layer name {self.name!r} is invalid: use 1-63 letters, digits or '_', "
                            "starting with a letter")
        if self.name in RESERVED_NAMES or self.name in GRID_CLASSES:
            raise SpecError(f"layer name {self.name!r} is reserved (dimension or class name); choose another")
        if self.grid_class not in GRID_CLASSES:
            raise SpecError(f"layer {self.name!r}: unknown grid class {self.grid_class!r}; "
                            f"expected one of {', '.join(GRID_CLASSES)}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError as exc:
            raise SpecError(f"layer {self.name!r}: {self.dtype!r} is not a dtype") from exc
        if dtype.name not in LAYER_DTYPES:
            raise SpecError(f"layer {self.name!r}: dtype {dtype.name} is not supported; "
                            f"use one of {', '.join(LAYER_DTYPES)}")
        set_(self, "dtype", dtype.name)
        if self.storage not in STORAGE_KINDS:
            raise SpecError(f"layer {self.name!r}: unknown storage kind {self.storage!r}; "
                            f"expected one of {', '.join(STORAGE_KINDS)}")
        set_(self, "fill_value", _plain_scalar(self.fill_value, dtype, "fill_value", self.name))
        pad = self.fill_value if self.pad_value is None else self.pad_value
        set_(self, "pad_value", _plain_scalar(pad, dtype, "pad_value", self.name))
        for attr in ("long_name", "units", "description"):
            if not isinstance(getattr(self, attr), str):
                raise SpecError(f"layer {self.name!r}: {attr} must be a string")
        self._check_class_fields()

    def _check_class_fields(self) -> None:
        set_ = object.__setattr__
        if self.grid_class == "temporal":
            decay = _DEFAULT_DECAY if self.decay is None else self.decay
            threshold = _DEFAULT_THRESHOLD if self.threshold is None else self.threshold
            if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
                raise SpecError(f"layer {self.name!r}: decay must be in [0, 1], got {decay!r}")
            if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                    or not math.isfinite(threshold) or threshold < 0):
                raise SpecError(f"layer {self.name!r}: threshold must be a finite number >= 0, got {threshold!r}")
            if np.dtype(self.dtype).kind != "f":
                raise SpecError(f"layer {self.name!r}: a temporal layer decays, so its dtype must be a float, "
                                f"not {self.dtype}")
            if self.fill_value != 0:
                raise SpecError(f"layer {self.name!r}: a temporal layer decays towards 0, so its fill_value "
                                f"must be 0, not {self.fill_value!r}")
            set_(self, "decay", float(decay))
            set_(self, "threshold", float(threshold))
            switch = self.switch_density
            if switch is not None:
                if (isinstance(switch, bool) or not isinstance(switch, (int, float))
                        or not 0 < switch <= 1):
                    raise SpecError(f"layer {self.name!r}: switch_density must be in (0, 1], got {switch!r}")
                set_(self, "switch_density", float(switch))
        elif self.decay is not None or self.threshold is not None or self.switch_density is not None:
            raise SpecError(f"layer {self.name!r}: decay, threshold and switch_density apply to temporal "
                            f"layers only, not to {self.grid_class} layers")
        if self.storage == "sparse" and self.grid_class != "temporal":
            raise SpecError(f"layer {self.name!r}: sparse storage is for temporal layers only, "
                            f"not for {self.grid_class} layers")
        if self.grid_class == "observation":
            if isinstance(self.channels, str) or not isinstance(self.channels, Sequence) or not self.channels:
                raise SpecError(f"layer {self.name!r}: an observation layer needs a non-empty list of channels")
            set_(self, "channels", tuple(self.channels))
            if len(set(self.channels)) != len(self.channels):
                raise SpecError(f"layer {self.name!r}: channels repeat a name: {list(self.channels)}")
            if isinstance(self.radius, bool) or not isinstance(self.radius, int) or self.radius < 0:
                raise SpecError(f"layer {self.name!r}: an observation layer needs an integer radius >= 0, "
                                f"got {self.radius!r}")
        elif self.channels or self.radius is not None:
            raise SpecError(f"layer {self.name!r}: channels and radius apply to observation layers only")

    @property
    def np_dtype(self) -> np.dtype:
        """The layer's dtype as a ``numpy.dtype``."""
        return np.dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary; :meth:`from_dict` reverses it."""
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerSpec":
        """Build a layer spec from :meth:`to_dict` output (unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(data) - known
        if extra:
            raise SpecError(f"unknown layer spec keys: {sorted(extra)}")
        fields = dict(data)
        if "channels" in fields and fields["channels"] is not None:
            fields["channels"] = tuple(fields["channels"])
        try:
            return cls(**fields)
        except TypeError as exc:  # a missing required field
            raise SpecError(f"invalid layer spec {dict(data)!r}: {exc}") from exc


def _positive_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpecError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class WorldSpec:
    """The size of a world and its layers.

    >>> spec = WorldSpec(64, 64, 4, [LayerSpec("RESOURCES", "resource")])
    >>> spec.shape_of("RESOURCES")
    (64, 64)
    >>> spec.with_storage({"resource": "memory"}).layer("RESOURCES").storage
    'memory'
    """

    height: int
    width: int
    agents: int
    layers: tuple[LayerSpec, ...]

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "height", _positive_int(self.height, "height", 1))
        set_(self, "width", _positive_int(self.width, "width", 1))
        set_(self, "agents", _positive_int(self.agents, "agents", 0))
        layers = tuple(self.layers)
        if not layers:
            raise SpecError("a world needs at least one layer")
        for layer in layers:
            if not isinstance(layer, LayerSpec):
                raise SpecError(f"layers must be LayerSpec objects, got {layer!r}")
        set_(self, "layers", layers)
        names = [layer.name for layer in layers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"duplicate layer names: {', '.join(dupes)}")
        by_name = {layer.name: layer for layer in layers}
        dim_names = {dim for layer in layers for dim in self.dims_of(layer.name)}
        dim_names |= {aux for layer in layers for aux in self.coo_names_of(layer.name)}
        clashes = sorted(dim_names & set(names))
        if clashes:
            raise SpecError(f"layer names {clashes} clash with dimension names of the file; rename them")
        for layer in layers:
            if layer.grid_class in ("agent", "observation") and self.agents < 1:
                raise SpecError(f"layer {layer.name!r} is an {layer.grid_class} layer, so the world needs "
                                f"agents >= 1 (got {self.agents})")
            for channel in layer.channels:
                if channel not in by_name:
                    raise SpecError(f"observation layer {layer.name!r}: channel {channel!r} is not a layer "
                                    f"of this world")
                if by_name[channel].grid_class == "observation":
                    raise SpecError(f"observation layer {layer.name!r}: channel {channel!r} is itself an "
                                    "observation layer")

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Layer names in the order the spec lists them."""
        return tuple(layer.name for layer in self.layers)

    def layer(self, name: str) -> LayerSpec:
        """The spec of layer ``name`` (``LayerNotFoundError`` if absent)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise LayerNotFoundError(f"no layer named {name!r}; this world has: {', '.join(self.layer_names)}")

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The array shape of layer ``name``."""
        layer = self.layer(name)
        if layer.grid_class == "agent":
            return (self.agents, self.height, self.width)
        if layer.grid_class == "observation":
            side = 2 * int(layer.radius) + 1  # type: ignore[arg-type]
            return (self.agents, len(layer.channels), side, side)
        return (self.height, self.width)

    def dims_of(self, name: str) -> tuple[str, ...]:
        """Dimension names of layer ``name`` (netCDF-style, one per axis).

        >>> WorldSpec(4, 4, 2, [LayerSpec("TRAILS", "temporal")]).dims_of("TRAILS")
        ('y', 'x')
        """
        layer = self.layer(name)
        if layer.grid_class == "agent":
            return ("agent", "y", "x")
        if layer.grid_class == "observation":
            return ("agent", f"{name}_channel", f"{name}_dy", f"{name}_dx")
        return ("y", "x")

    def coo_names_of(self, name: str) -> tuple[str, ...]:
        """Datasets that hold temporal layer ``name`` when it is sparse: coords, values, nnz scale."""
        if self.layer(name).grid_class != "temporal":
            return ()
        return (f"{name}_coords", f"{name}_values", f"{name}_nnz")

    def nbytes_of(self, name: str) -> int:
        """Bytes the dense array of layer ``name`` takes."""
        return math.prod(self.shape_of(name)) * self.layer(name).np_dtype.itemsize

    def with_storage(self, choices: Mapping[str, str] | None) -> "WorldSpec":
        """Return a copy with storage kinds chosen per class or per layer.

        Keys are grid class names (``"agent"``) or layer names
        (``"RESOURCES"``); a layer name wins over its class.
        """
        if not choices:
            return self
        for key, kind in choices.items():
            if key not in GRID_CLASSES and key not in self.layer_names:
                raise SpecError(f"storage choice {key!r}={kind!r}: {key!r} is neither a grid class "
                                f"({', '.join(GRID_CLASSES)}) nor a layer of this world")
            if kind not in STORAGE_KINDS:
                raise SpecError(f"storage choice {key!r}={kind!r}: unknown kind; expected one of "
                                f"{', '.join(STORAGE_KINDS)}")
        layers = []
        for layer in self.layers:
            kind = choices.get(layer.name, choices.get(layer.grid_class, layer.storage))
            layers.append(dataclasses.replace(layer, storage=kind))
        return dataclasses.replace(self, layers=tuple(layers))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary; :meth:`from_dict` reverses it."""
        return {"height": self.height, "width": self.width, "agents": self.agents,
                "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorldSpec":
        """Build a world spec from :meth:`to_dict` output."""
        try:
            layers = [LayerSpec.from_dict(item) for item in data["layers"]]
            return cls(data["height"], data["width"], data["agents"], tuple(layers))
        except (KeyError, TypeError) as exc:
            raise SpecError(f"invalid world spec: {exc}") from exc


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (``"1024x1024"``) into ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise SpecError(f"size {text!r} is not of the form HxW (for example 1024x1024)")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 1 or width < 1:
        raise SpecError(f"size {text!r}: height and width must be >= 1")
    return height, width
