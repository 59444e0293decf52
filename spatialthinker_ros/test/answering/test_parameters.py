"""The parameter table, the YAML defaults and the node's declarations agree."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from spatialthinker_ros.answering.parameters import (
    CAMERA_PARAMETERS,
    PARAMETERS,
    PARAMETERS_BY_NAME,
    camera_values,
    split_camera_list,
    split_options,
    validate,
    validate_all,
    validate_camera_value,
)

PACKAGE = Path(__file__).resolve().parents[2]
CONFIG = PACKAGE / "config" / "spatialthinker.yaml"


def _yaml_parameters() -> dict:
    document = yaml.safe_load(CONFIG.read_text())
    return document["/**"]["ros__parameters"]


def test_yaml_keys_are_exactly_the_declared_parameters() -> None:
    declared = {spec.name for spec in PARAMETERS}
    in_yaml = set(_yaml_parameters())
    assert in_yaml - declared == set(), "YAML keys the node does not declare"
    # An empty list cannot be written (ROS 2's YAML parser refuses an empty sequence): such a
    # parameter is shown as a commented example instead.
    empty_lists = {spec.name for spec in PARAMETERS if spec.default == []}
    assert declared - in_yaml == empty_lists, "declared parameters missing from the YAML"
    for name in empty_lists:
        assert f"\n    # {name}: [" in CONFIG.read_text(), name


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


def test_every_numeric_parameter_refuses_non_finite_and_out_of_range_values() -> None:
    numeric = [s for s in PARAMETERS if isinstance(s.default, int | float)]
    numeric = [s for s in numeric if not isinstance(s.default, bool)]
    assert numeric
    for spec in numeric:
        # NaN passes every `value < minimum` check: finiteness is checked on its own.
        for value in (math.nan, math.inf, -math.inf):
            reason = validate(spec.name, value)
            assert reason and spec.name in reason and "finite" in reason, spec.name
        assert spec.minimum is not None and spec.maximum is not None, f"{spec.name}: no range"
        below = spec.minimum - (1 if isinstance(spec.default, int) else spec.minimum or 0.001)
        if not (spec.zero_means_off and below <= 0 < spec.minimum):
            assert validate(spec.name, type(spec.default)(below)) is not None, spec.name
        assert validate(spec.name, type(spec.default)(spec.maximum * 2 + 1)) is not None


def test_rate_hz_is_off_or_a_usable_rate() -> None:
    assert validate("rate_hz", 0.0) is None
    assert "rate_hz must be 0 (off) or between 0.001 and 30" in validate("rate_hz", 1e-10)
    assert "finite" in validate("rate_hz", math.inf)


def test_ordered_pairs_are_checked_together() -> None:
    values = {spec.name: spec.default for spec in PARAMETERS}
    assert validate_all(values) is None
    reason = validate_all({**values, "depth.min_depth": 20.0})
    assert reason == "depth.min_depth (20) must be below depth.max_depth (10)"
    reason = validate_all({**values, "min_pixels": values["max_pixels"] + 1})
    assert reason and reason.startswith("min_pixels") and "at most max_pixels" in reason


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ([], None),
        (["front", "wrist_2"], None),
        (["front", "front"], "cameras lists a name twice"),
        (["front/left"], "is not a name"),
        (["2nd"], "is not a name"),
        ([""], "is not a name"),
        (["c"] * 17, "at most 16"),
        ("front", "must be a list of names"),
    ],
)
def test_camera_names_are_checked(names, problem) -> None:
    reason = validate_all({"cameras": names})
    assert (reason is None) if problem is None else (problem in reason), reason


@pytest.mark.parametrize("text", ["front,wrist", "front wrist", " [front, wrist] "])
def test_camera_lists_are_written_as_people_write_them(text) -> None:
    assert split_camera_list(text) == ["front", "wrist"]
    assert split_camera_list("") == split_camera_list(" ") == []


@pytest.mark.parametrize(
    ("cameras", "continuous", "problem"),
    [
        (["front", "wrist"], "", None),
        (["front", "wrist"], "wrist", None),
        (["front", "wrist"], "wrist, front", None),
        (
            ["front", "wrist"],
            "rear",
            "continuous_cameras names 'rear': the cameras are front, wrist",
        ),
        ([], "front", "continuous_cameras names 'front': 'cameras' is empty"),
        ([], "", None),
    ],
)
def test_continuous_cameras_are_cameras_the_node_serves(cameras, continuous, problem) -> None:
    reason = validate_all({"cameras": cameras, "continuous_cameras": continuous})
    assert reason == problem


def test_a_cameras_own_parameters_override_the_nodes_or_inherit_them() -> None:
    values = {spec.name: spec.default for spec in PARAMETERS}
    inherit = {spec.name: spec.default for spec in CAMERA_PARAMETERS}
    assert camera_values(values, inherit) == values
    own = {**inherit, "depth.scale": 0.0002, "depth_transport": "compressedDepth"}
    merged = camera_values(values, own)
    assert merged["depth.scale"] == 0.0002 and merged["depth_transport"] == "compressedDepth"
    assert merged["sync_slop"] == values["sync_slop"]  # -1: the node's
    # An override is checked by the node parameter's own rules; the inheriting value passes.
    assert validate_camera_value("sync_wait", -1.0) is None
    assert "sync_wait" in validate_camera_value("sync_wait", 99.0)
    assert "depth_transport" in validate_camera_value("depth_transport", "jpeg")
