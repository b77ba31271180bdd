"""World specifications: shapes, storage choices, presets, JSON round trip."""

from __future__ import annotations

import json

import pytest

import worldstore
from worldstore import LayerSpec, SpecError, WorldSpec
from worldstore.presets import AGENTFARM_CHANNELS, AGENTFARM_GAMMAS, CLASSIC_CHANNELS, agentfarm, classic, preset

from conftest import every_class_spec


def test_spec_round_trips_through_json():
    spec = every_class_spec()
    assert WorldSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_storage_choice_by_layer_wins_over_class():
    spec = every_class_spec().with_storage({"agent": "memory", "MEMORY": "mapped", "resource": "memory"})
    kinds = {layer.name: layer.storage for layer in spec.layers}
    assert kinds["MEMORY"] == "mapped" and kinds["SEEN"] == "memory"
    assert kinds["RES_F32"] == kinds["RES_I32"] == "memory"
    assert kinds["OBSTACLES"] == "mapped"


def test_storage_choice_rejects_unknown_keys_and_kinds():
    with pytest.raises(SpecError, match="'NOPE'"):
        every_class_spec().with_storage({"NOPE": "memory"})
    with pytest.raises(SpecError, match="'disk'"):
        every_class_spec().with_storage({"agent": "disk"})


def test_pad_defaults_to_fill_and_values_are_normalised():
    layer = LayerSpec("A", "resource", "float32", fill_value=2)
    assert layer.pad_value == 2.0 and isinstance(layer.fill_value, float)
    assert LayerSpec("B", "environment", "bool", 0, pad_value=1).pad_value is True


def test_classic_preset_has_every_class():
    spec = classic(100, 80, 10)
    classes = {layer.grid_class for layer in spec.layers}
    assert classes == set(worldstore.GRID_CLASSES)
    assert spec.layer("OBSTACLES").pad_value is True
    assert spec.shape_of("AGENT_MEMORY") == (10, 100, 80)
    assert spec.shape_of("OBSERVATION") == (10, len(CLASSIC_CHANNELS), 13, 13)
    assert spec.layer("OBSERVATION").channels == CLASSIC_CHANNELS
    assert all(layer.storage == ("sparse" if layer.grid_class == "temporal" else "mapped")
               for layer in spec.layers)
    assert spec.layer("TRAILS").switch_density == worldstore.spec.DEFAULT_SWITCH_DENSITY
    assert classic(8, 8, 1, storage={"temporal": "memory"}).layer("TRAILS").storage == "memory"


def test_agentfarm_preset_matches_agentfarms_registry_and_config():
    """AgentFarm's channel registry (farm/core/channels.py) and ObservationConfig gammas; every pad 0."""
    spec = agentfarm(100, 80, 10)
    assert spec.layer("OBSERVATION").channels == AGENTFARM_CHANNELS == (
        "SELF_HP", "ALLIES_HP", "ENEMIES_HP", "RESOURCES", "OBSTACLES", "TERRAIN_COST", "VISIBILITY",
        "KNOWN_EMPTY", "DAMAGE_HEAT", "TRAILS", "ALLY_SIGNAL", "GOAL", "LANDMARKS")
    assert spec.shape_of("OBSERVATION") == (10, 13, 13, 13)
    assert {name: spec.layer(name).decay for name in AGENTFARM_GAMMAS} == {
        "KNOWN_EMPTY": 0.98, "DAMAGE_HEAT": 0.85, "TRAILS": 0.90, "ALLY_SIGNAL": 0.92}
    assert all(spec.layer(name).threshold == 0 for name in AGENTFARM_GAMMAS)
    assert all(layer.pad_value == 0 for layer in spec.layers)
    assert spec.shape_of("SELF_HP") == (10, 100, 80) and spec.layer("VISIBILITY").fill_value == 1.0
    assert agentfarm(8, 8, 1, gammas={"TRAILS": 0.5}).layer("TRAILS").decay == 0.5
    assert agentfarm(8, 8, 1, storage={"agent": "memory"}).layer("GOAL").storage == "memory"
    with pytest.raises(SpecError, match="RESOURCES"):
        agentfarm(8, 8, 1, gammas={"RESOURCES": 0.5})
    with pytest.raises(SpecError, match="decay"):
        agentfarm(8, 8, 1, gammas={"TRAILS": 1.5})


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(SpecError, match="agentfarm"):
        preset("sugarscape", 8, 8, 1)


@pytest.mark.parametrize("text, expected", [("1024x768", (1024, 768)), (" 8X9 ", (8, 9))])
def test_parse_size(text, expected):
    assert worldstore.parse_size(text) == expected


@pytest.mark.parametrize("text", ["1024", "0x5", "ax3", "-4x4", ""])
def test_parse_size_rejects(text):
    with pytest.raises(SpecError, match="size"):
        worldstore.parse_size(text)
