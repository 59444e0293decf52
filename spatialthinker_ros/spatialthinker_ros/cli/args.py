"""Argument helpers of the ``spatialthinker`` command line (a leaf: stdlib, the parameter table
and the backend registry only, so every subcommand module can import it).

The tools answer with the same engine, backends and parameters as the node: the engine/backend
and lifting options are flags named after the node's parameters (``--model``,
``--max-new-tokens``, ``--openai-base-url``, ``--depth-shrink`` ...) with the parameter table's
defaults, and :func:`parameter_values` turns the parsed flags back into parameter values by the
node's names, which is what
:class:`~spatialthinker_ros.answering.pipeline.AnsweringPipeline` takes. A result reproduced
offline therefore matches what the robot would see.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spatialthinker_ros.answering.parameters import (
    PARAMETERS,
    PARAMETERS_BY_NAME,
    validate,
    validate_all,
)
from spatialthinker_ros.core.backends import BACKEND_NAMES

__all__ = [
    "ENGINE_FLAGS",
    "FRAME_FLAGS",
    "CommandError",
    "EngineFlag",
    "add_engine_arguments",
    "add_frame_arguments",
    "options_list",
    "parameter_values",
    "positive_float",
    "positive_int",
]


class CommandError(Exception):
    """A user-facing error: its message is printed as the one error line (exit status 2)."""


def options_list(value: str) -> list[str]:
    """``--options`` parser: comma-separated, no empty entries."""
    options = [part.strip() for part in value.split(",")]
    if not all(options):
        raise argparse.ArgumentTypeError(f"empty option in {value!r}")
    return options


def positive_int(value: str) -> int:
    """Argument parser for a positive integer."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def positive_float(value: str) -> float:
    """Argument parser for a positive, finite number."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def _on_off(value: str) -> bool:
    """Argument parser for a switch that defaults on: true/false, yes/no, on/off, 1/0."""
    text = value.strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"not true or false: {value!r}")


@dataclass(frozen=True)
class EngineFlag:
    """One command-line flag that sets one node parameter.

    Attributes:
        parameter: The node parameter's name (``openai.base_url``).
        flag: The flag (``--openai-base-url``).
        type: Argument parser of the value (None: text, or a switch for a bool parameter).
        help: Help text ("" for none).
    """

    parameter: str
    flag: str
    type: Callable[[str], Any] | None = None
    help: str = ""

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value in."""
        return self.flag.removeprefix("--").replace("-", "_")


#: The flags of the engine and backend (the node's model/backend parameters), in help order.
_MODEL_FLAGS: tuple[EngineFlag, ...] = (
    EngineFlag("backend", "--backend", help="inference backend"),
    EngineFlag(
        "model",
        "--model",
        help="hub id or local directory (transformers), or served model name (openai)",
    ),
    EngineFlag("device", "--device", help="auto, cpu, cuda:N"),
    EngineFlag("dtype", "--dtype"),
    EngineFlag("attn_implementation", "--attn-implementation"),
    EngineFlag("max_new_tokens", "--max-new-tokens", positive_int),
    EngineFlag(
        "stream",
        "--stream",
        _on_off,
        "read the model's output as it is written (true/false; false for servers that"
        " cannot stream)",
    ),
    EngineFlag("coordinate_policy", "--coordinate-policy"),
    EngineFlag("min_pixels", "--min-pixels", positive_int),
    EngineFlag("max_pixels", "--max-pixels", positive_int),
    EngineFlag(
        "max_batch_size",
        "--max-batch-size",
        positive_int,
        "requests answered together in one model call (replay/eval keep this many queued)",
    ),
    EngineFlag("openai.base_url", "--openai-base-url"),
    EngineFlag("openai.api_key_env", "--openai-api-key-env"),
    EngineFlag("openai.timeout", "--openai-timeout", positive_float),
    EngineFlag("openai.max_retries", "--openai-max-retries", int),
    EngineFlag("openai.max_in_flight", "--openai-max-in-flight", positive_int),
    EngineFlag("openai.image_format", "--openai-image-format"),
    EngineFlag("openai.jpeg_quality", "--openai-jpeg-quality", positive_int),
)
#: The flags of 3D lifting (the node's depth.* and camera.* parameters).
_LIFTING_FLAGS: tuple[EngineFlag, ...] = (
    EngineFlag("depth.shrink", "--depth-shrink", float),
    EngineFlag("depth.min_depth", "--depth-min", float),
    EngineFlag("depth.max_depth", "--depth-max", float),
    EngineFlag("depth.min_valid_pixels", "--depth-min-valid-pixels", positive_int),
    EngineFlag("depth.min_size", "--depth-min-size", float),
    EngineFlag(
        "depth.scale",
        "--depth-scale",
        positive_float,
        "metres per unit of 16-bit depth (0.001: mm; 0.0002: TUM's 1/5000 m)",
    ),
    EngineFlag(
        "camera.rectified",
        "--camera-rectified",
        help="the images are rectified: use camera_info P and ignore D (else K and D)",
    ),
    EngineFlag(
        "relations.up",
        "--relations-up",
        help="up for above/below/on: TF's (tf: --gravity-frame's z, where the tool has a"
        " transform; else measured), measured from the depth, the camera's -y (level), or its"
        " -z for a camera looking straight down (down)",
    ),
)
#: The flags of the answers' confidence (the node's confidence parameters).
_CONFIDENCE_FLAGS: tuple[EngineFlag, ...] = (
    EngineFlag(
        "confidence_temperature",
        "--confidence-temperature",
        positive_float,
        "temperature applied to the option probabilities (the value eval --fit-temperature"
        " fitted; 1: the model's own)",
    ),
    EngineFlag(
        "min_confidence",
        "--min-confidence",
        float,
        "warn 'low confidence' below this confidence (0: off)",
    ),
)
#: Every flag :func:`add_engine_arguments` adds.
ENGINE_FLAGS: tuple[EngineFlag, ...] = _MODEL_FLAGS + _LIFTING_FLAGS + _CONFIDENCE_FLAGS
#: The robot-frame flags of the tools that have transforms (:func:`add_frame_arguments`).
FRAME_FLAGS: tuple[EngineFlag, ...] = (
    EngineFlag(
        "target_frame",
        "--target-frame",
        help="TF frame to report the 3D in, looked up at each image's stamp ('' = the camera's"
        " optical frame; without the transform: the camera frame and a warning)",
    ),
    EngineFlag(
        "gravity_frame",
        "--gravity-frame",
        help="a z-up TF frame (base_link, odom, map) whose z is up for above/below/on",
    ),
)


def _add(group: argparse._ArgumentGroup, entry: EngineFlag) -> None:
    spec = PARAMETERS_BY_NAME[entry.parameter]
    options: dict[str, Any] = {"default": spec.default, "dest": entry.dest}
    if entry.help:
        options["help"] = entry.help
    if isinstance(spec.default, bool) and entry.type is None:
        options["action"] = "store_true"
    else:
        if entry.type is not None:
            options["type"] = entry.type
        # The registry, not a copy, names the backends.
        choices = BACKEND_NAMES if entry.parameter == "backend" else spec.choices
        if choices:
            options["choices"] = choices
    group.add_argument(entry.flag, **options)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the node's engine/backend/lifting parameters as flags (same names, same defaults)."""
    model = parser.add_argument_group("model and backend (the node's parameters)")
    for entry in _MODEL_FLAGS:
        _add(model, entry)
    lifting = parser.add_argument_group(
        "3D lifting and relation checks (depth.*, camera.*, relations.*)"
    )
    for entry in _LIFTING_FLAGS:
        _add(lifting, entry)
    confidence = parser.add_argument_group(
        "confidence (the option probabilities read from the model's tokens)"
    )
    for entry in _CONFIDENCE_FLAGS:
        _add(confidence, entry)


def add_frame_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--target-frame`` and ``--gravity-frame`` (the node's parameters of those names)."""
    frames = parser.add_argument_group("robot frames (the node's target_frame, gravity_frame)")
    for entry in FRAME_FLAGS:
        _add(frames, entry)


def parameter_values(args: argparse.Namespace) -> dict[str, Any]:
    """Every node parameter's value: the flags of :func:`add_engine_arguments` as given, the
    parameter table's defaults for the rest. Checked with the node's rules.

    Raises:
        CommandError: A value the node would refuse (the flag and the rule named).
    """
    values = {spec.name: spec.default for spec in PARAMETERS}
    given = [entry for entry in FRAME_FLAGS if hasattr(args, entry.dest)]
    for entry in (*ENGINE_FLAGS, *given):
        value = getattr(args, entry.dest)
        values[entry.parameter] = value
        reason = validate(entry.parameter, value)
        if reason:
            raise CommandError(f"{entry.flag}: {reason}")
    reason = validate_all(values)
    if reason:
        raise CommandError(f"bad option: {reason}")
    return values
