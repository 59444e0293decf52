"""The parameter table, the YAML defaults and the node's declarations agree."""

from __future__ import annotations

from pathlib import Path

import yaml

from spatialthinker_ros.parameters import PARAMETERS, PARAMETERS_BY_NAME, split_options, validate

PACKAGE = Path(__file__).resolve().parents[1]
CONFIG = PACKAGE / "config" / "spatialthinker.yaml"


def _yaml_parameters() -> dict:
    document = yaml.safe_load(CONFIG.read_text())
    return document["/**"]["ros__parameters"]


def test_yaml_keys_are_exactly_the_declared_parameters() -> None:
    declared = {spec.name for spec in PARAMETERS}
    in_yaml = set(_yaml_parameters())
    assert in_yaml - declared == set(), "YAML keys the node does not declare"
    assert declared - in_yaml == set(), "declared parameters missing from the YAML"


def test_yaml_defaults_match_the_table_in_value_and_type() -> None:
    for name, value in _yaml_parameters().items():
        default = PARAMETERS_BY_NAME[name].default
        assert type(value) is type(default), name
        assert value == default, name


def test_every_parameter_has_a_description_and_valid_default() -> None:
    assert len(PARAMETERS_BY_NAME) == len(PARAMETERS), "duplicate parameter names"
    for spec in PARAMETERS:
        assert len(spec.description) > 15, spec.name
        assert validate(spec.name, spec.default) is None, spec.name


def test_validate_names_the_problem() -> None:
    assert "backend must be one of transformers, openai" in validate("backend", "onnx")
    assert "max_queue_size must be between 1 and 1000" in validate("max_queue_size", 0)
    assert validate("rate_hz", 2.0) is None


def test_split_options() -> None:
    assert split_options("") == []
    assert split_options("left | right|behind") == ["left", "right", "behind"]
