"""Built-in world specifications.

``agentfarm`` gives the layers an AgentFarm-style simulation keeps: resources,
the static environment, three decaying signal channels, one memory layer per
agent and the batch of observation windows fed to the model.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import SpecError
from .spec import DEFAULT_SWITCH_DENSITY, LayerSpec, WorldSpec

#: Channels the agentfarm observation gathers, in order.
AGENTFARM_CHANNELS = (
    "RESOURCES", "OBSTACLES", "TERRAIN_COST", "VISIBILITY",
    "DAMAGE_HEAT", "TRAILS", "ALLY_SIGNAL", "AGENT_MEMORY",
)


#: Signal channels are mostly empty: start sparse, turn dense if they fill up.
_SIGNAL_STORAGE = {"storage": "sparse", "switch_density": DEFAULT_SWITCH_DENSITY}


def agentfarm(height: int, width: int, agents: int, *, obs_radius: int = 6,
              storage: Mapping[str, str] | None = None) -> WorldSpec:
    """The AgentFarm-style world: every grid class, sensible fills and pads.

    The temporal channels start sparse and switch to dense storage (mapped)
    when their density passes ``DEFAULT_SWITCH_DENSITY``.

    ``storage`` chooses kinds per class or layer, as in
    :meth:`WorldSpec.with_storage`.

    >>> spec = agentfarm(128, 128, 8, storage={"agent": "memory"})
    >>> spec.shape_of("OBSERVATION")
    (8, 8, 13, 13)
    """
    layers = (
        LayerSpec("RESOURCES", "resource", "float32", 0.0, long_name="resource amount",
                  units="1", description="Harvestable resource per cell; agents consume it, it regrows."),
        LayerSpec("OBSTACLES", "environment", "bool", False, pad_value=True, long_name="obstacle",
                  description="True where a cell cannot be entered; outside the world counts as obstacle."),
        LayerSpec("TERRAIN_COST", "environment", "float32", 1.0, long_name="terrain movement cost",
                  units="1", description="Cost multiplier for moving into a cell."),
        LayerSpec("VISIBILITY", "environment", "bool", True, pad_value=False, long_name="visibility",
                  description="True where a cell can be seen; agents remember only visible cells."),
        LayerSpec("DAMAGE_HEAT", "temporal", "float32", 0.0, long_name="damage heat", units="1",
                  description="Recent combat damage; decays each step.", decay=0.9, threshold=0.01,
                  **_SIGNAL_STORAGE),
        LayerSpec("TRAILS", "temporal", "float32", 0.0, long_name="movement trails", units="1",
                  description="Where agents walked recently; decays each step.", decay=0.95, threshold=0.01,
                  **_SIGNAL_STORAGE),
        LayerSpec("ALLY_SIGNAL", "temporal", "float32", 0.0, long_name="ally signal", units="1",
                  description="Signals agents broadcast to allies; decays each step.", decay=0.8,
                  threshold=0.01, **_SIGNAL_STORAGE),
        LayerSpec("AGENT_MEMORY", "agent", "float16", 0.0, long_name="remembered resources", units="1",
                  description="Each agent's own map of the resources it has seen."),
        LayerSpec("OBSERVATION", "observation", "float32", 0.0, long_name="observation windows",
                  description="The batch of per-agent windows fed to the model.",
                  channels=AGENTFARM_CHANNELS, radius=obs_radius),
    )
    return WorldSpec(height, width, agents, layers).with_storage(storage)


#: Preset name -> function(height, width, agents, **options) -> WorldSpec
PRESETS = {"agentfarm": agentfarm}


def preset(name: str, height: int, width: int, agents: int, **options) -> WorldSpec:
    """The spec of preset ``name`` (``SpecError`` naming the known presets if unknown)."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise SpecError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return factory(height, width, agents, **options)
