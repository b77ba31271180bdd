"""Built-in world specifications.

``agentfarm`` is the world of an AgentFarm simulation (GitHub
``Dooders/AgentFarm``): its world grids, its temporal channels with its decay
rates and no threshold, every pad 0, and an observation layer whose 13
channels come in the order of AgentFarm's channel registry
(``farm/core/channels.py``). :mod:`worldstore.agentfarm` builds its managers
over it.

``classic`` is worldstore's own showcase: every grid class with sensible
fills and pads (OBSTACLES pads as wall), sparse signal channels that switch
to dense when they fill up, one memory layer per agent, and an 8-channel
observation. It was called ``agentfarm`` before AgentFarm's own layout was
matched; the demo and the CLI's ``create`` use it by default.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import SpecError
from .spec import DEFAULT_SWITCH_DENSITY, LayerSpec, WorldSpec

#: AgentFarm's observation channels, in the order of its registry (``_register_core_channels``).
AGENTFARM_CHANNELS = (
    "SELF_HP", "ALLIES_HP", "ENEMIES_HP", "RESOURCES", "OBSTACLES", "TERRAIN_COST", "VISIBILITY",
    "KNOWN_EMPTY", "DAMAGE_HEAT", "TRAILS", "ALLY_SIGNAL", "GOAL", "LANDMARKS",
)
#: AgentFarm's decay rates (``ObservationConfig.gamma_*`` defaults) of its decaying channels.
AGENTFARM_GAMMAS = {"KNOWN_EMPTY": 0.98, "DAMAGE_HEAT": 0.85, "TRAILS": 0.90, "ALLY_SIGNAL": 0.92}
#: Channels the classic observation gathers, in order.
CLASSIC_CHANNELS = (
    "RESOURCES", "OBSTACLES", "TERRAIN_COST", "VISIBILITY",
    "DAMAGE_HEAT", "TRAILS", "ALLY_SIGNAL", "AGENT_MEMORY",
)

_AGENTFARM_WORLD = (
    ("RESOURCES", "resource", 0.0, "resource amount",
     "Resource per cell (AgentFarm's ResourceManager grid); windows are divided by the maximum amount."),
    ("OBSTACLES", "environment", 0.0, "obstacle", "1 where a cell cannot be entered (binary or passability)."),
    ("TERRAIN_COST", "environment", 0.0, "terrain movement cost", "Cost of moving into a cell (0..1)."),
    ("VISIBILITY", "environment", 1.0, "visibility",
     "1 where a cell can be seen; remember() copies only those cells."),
)
_AGENTFARM_TEMPORAL = (
    ("KNOWN_EMPTY", "known empty cells", "Cells observed empty; gamma_known."),
    ("DAMAGE_HEAT", "damage heat", "Recent combat damage; gamma_dmg."),
    ("TRAILS", "movement trails", "Where agents walked recently; gamma_trail."),
    ("ALLY_SIGNAL", "ally signal", "Signals agents broadcast to allies; gamma_sig."),
)
_AGENTFARM_AGENT = (
    ("SELF_HP", "own health", "The agent's health (0..1) at its own cell."),
    ("ALLIES_HP", "allies' health", "Health of the allies the agent sees, at their cells."),
    ("ENEMIES_HP", "enemies' health", "Health of the enemies the agent sees, at their cells."),
    ("GOAL", "goal", "1 at the agent's goal or waypoint."),
    ("LANDMARKS", "landmarks", "Landmarks the agent keeps (persistent)."),
)


def agentfarm(height: int, width: int, agents: int, *, obs_radius: int = 6, dtype: str = "float32",
              gammas: Mapping[str, float] | None = None, storage: Mapping[str, str] | None = None) -> WorldSpec:
    """The world of an AgentFarm simulation, laid out as AgentFarm's registry and config say.

    Layers (all ``dtype``, float32 like AgentFarm's ``MemmapConfig.dtype``;
    every pad 0, as AgentFarm's ``get_zero_padded_window_2d``):

    - RESOURCES (resource), OBSTACLES, TERRAIN_COST, VISIBILITY
      (environment; VISIBILITY is filled with 1, the others with 0): the
      grids of AgentFarm's ``ResourceManager`` and ``EnvironmentalGridManager``;
    - KNOWN_EMPTY, DAMAGE_HEAT, TRAILS, ALLY_SIGNAL (temporal, dense): decay
      ``v *= gamma`` with AgentFarm's gammas 0.98, 0.85, 0.90, 0.92
      (``gammas`` overrides them by name) and threshold 0 (worldstore still
      flushes subnormals to 0); KNOWN_EMPTY is one shared map here, where
      AgentFarm keeps one per agent;
    - SELF_HP, ALLIES_HP, ENEMIES_HP, GOAL, LANDMARKS (agent class,
      ``(agents, H, W)``): what AgentFarm builds per agent from its lists,
      each agent's own layer (``agents`` is the number of agent slots);
    - OBSERVATION ``(agents, 13, 2R+1, 2R+1)``: those 13 channels in the
      order of :data:`AGENTFARM_CHANNELS` (AgentFarm's registry), radius
      ``obs_radius`` (``ObservationConfig.R``, default 6).

    ``storage`` chooses kinds per class or layer, as in
    :meth:`WorldSpec.with_storage` (``{"agent": "memory"}`` keeps the agent
    layers in RAM). A bad name or value raises :class:`SpecError`.

    >>> spec = agentfarm(100, 100, 8)
    >>> spec.shape_of("OBSERVATION"), spec.layer("DAMAGE_HEAT").decay, spec.layer("OBSTACLES").pad_value
    ((8, 13, 13, 13), 0.85, 0.0)
    """
    rates = dict(AGENTFARM_GAMMAS)
    for name, gamma in (gammas or {}).items():
        if name not in rates:
            raise SpecError(f"gammas: {name!r} is not a decaying AgentFarm channel; they are {', '.join(rates)}")
        rates[name] = gamma
    layers = [LayerSpec(name, grid_class, dtype, fill, pad_value=0.0, long_name=long_name, units="1",
                        description=description)
              for name, grid_class, fill, long_name, description in _AGENTFARM_WORLD]
    layers += [LayerSpec(name, "temporal", dtype, 0.0, long_name=long_name, units="1",
                         description=description + " Decays each step; no threshold.", decay=rates[name],
                         threshold=0.0)
               for name, long_name, description in _AGENTFARM_TEMPORAL]
    layers += [LayerSpec(name, "agent", dtype, 0.0, long_name=long_name, units="1", description=description)
               for name, long_name, description in _AGENTFARM_AGENT]
    layers.append(LayerSpec("OBSERVATION", "observation", "float32", 0.0, long_name="observation windows",
                            description="Each agent slot's (13, 2R+1, 2R+1) AgentFarm observation.",
                            channels=AGENTFARM_CHANNELS, radius=obs_radius))
    return WorldSpec(height, width, agents, tuple(layers)).with_storage(storage)


#: Signal channels are mostly empty: start sparse, turn dense if they fill up.
_SIGNAL_STORAGE = {"storage": "sparse", "switch_density": DEFAULT_SWITCH_DENSITY}


def classic(height: int, width: int, agents: int, *, obs_radius: int = 6,
            storage: Mapping[str, str] | None = None) -> WorldSpec:
    """worldstore's showcase world: every grid class, sensible fills and pads.

    The temporal channels start sparse and switch to dense storage (mapped)
    when their density passes ``DEFAULT_SWITCH_DENSITY``.

    ``storage`` chooses kinds per class or layer, as in
    :meth:`WorldSpec.with_storage`.

    >>> spec = classic(128, 128, 8, storage={"agent": "memory"})
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
                  channels=CLASSIC_CHANNELS, radius=obs_radius),
    )
    return WorldSpec(height, width, agents, layers).with_storage(storage)


#: Preset name -> function(height, width, agents, **options) -> WorldSpec
PRESETS = {"agentfarm": agentfarm, "classic": classic}


def preset(name: str, height: int, width: int, agents: int, **options) -> WorldSpec:
    """The spec of preset ``name`` (``SpecError`` naming the known presets if unknown)."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise SpecError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return factory(height, width, agents, **options)
