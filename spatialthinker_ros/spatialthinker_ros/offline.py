"""Shared plumbing of the offline tools (``spatialthinker ask``, ``replay``, ``eval``, the demo).

The offline tools answer with the same engine, backends and parameters as the node: the
engine/backend options are command-line flags named after the node's parameters (``--model``,
``--max-new-tokens``, ``--openai-base-url`` ...), with the node's defaults taken from
``parameters.PARAMETERS``, so a result reproduced offline matches what the robot would see.

Also here: reading images, depth and camera_info YAML files, lifting boxes to 3D, the result
JSON (the fields of ``SpatialAnswer``), and writing files confined to an output folder. The
``ask`` and ``tiny-model`` subcommands live here too (``replay.py`` and ``evaluate.py`` hold
the larger ones). Heavy imports (torch, transformers, cv2) happen only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from spatialthinker_ros.camera import CameraIntrinsics
from spatialthinker_ros.cli import CommandError, options_list, positive_int
from spatialthinker_ros.parameters import PARAMETERS_BY_NAME

__all__ = [
    "OfflineEngine",
    "Progress",
    "add_ask_command",
    "add_engine_arguments",
    "add_tiny_model_command",
    "answer_to_json",
    "depth_units_warning",
    "lift",
    "lift_params_from_args",
    "load_depth",
    "load_rgb",
    "output_path",
    "read_camera_info_yaml",
    "write_annotated",
    "write_camera_info_yaml",
]

# Offline runs have no real-time deadline: a 7B model on a CPU may take minutes per answer, and
# replay/eval keep several requests queued, so a request never expires in the queue.
_NO_DEADLINE_S = 1e9


def _default(name: str) -> Any:
    return PARAMETERS_BY_NAME[name].default


def _choices(name: str) -> tuple[str, ...]:
    return PARAMETERS_BY_NAME[name].choices


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


# ---------------------------------------------------------------------------- engine options


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the node's engine/backend/lifting parameters as flags (same names, same defaults)."""
    group = parser.add_argument_group("model and backend (the node's parameters)")
    group.add_argument(
        "--backend", choices=_choices("backend"), default=_default("backend"), help="backend"
    )
    group.add_argument(
        "--model",
        default=_default("model"),
        help="hub id or local directory (transformers), or served model name (openai)",
    )
    group.add_argument("--device", default=_default("device"), help="auto, cpu, cuda:N")
    group.add_argument("--dtype", choices=_choices("dtype"), default=_default("dtype"))
    group.add_argument(
        "--attn-implementation",
        choices=_choices("attn_implementation"),
        default=_default("attn_implementation"),
    )
    group.add_argument("--max-new-tokens", type=positive_int, default=_default("max_new_tokens"))
    group.add_argument(
        "--coordinate-policy",
        choices=_choices("coordinate_policy"),
        default=_default("coordinate_policy"),
    )
    group.add_argument("--min-pixels", type=positive_int, default=_default("min_pixels"))
    group.add_argument("--max-pixels", type=positive_int, default=_default("max_pixels"))
    group.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=_default("max_batch_size"),
        help="requests answered together in one model call (replay/eval keep this many queued)",
    )
    group.add_argument("--openai-base-url", default=_default("openai.base_url"))
    group.add_argument("--openai-api-key-env", default=_default("openai.api_key_env"))
    group.add_argument("--openai-timeout", type=positive_float, default=_default("openai.timeout"))
    group.add_argument("--openai-max-retries", type=int, default=_default("openai.max_retries"))
    group.add_argument(
        "--openai-max-in-flight", type=positive_int, default=_default("openai.max_in_flight")
    )
    group.add_argument(
        "--openai-image-format",
        choices=_choices("openai.image_format"),
        default=_default("openai.image_format"),
    )
    group.add_argument(
        "--openai-jpeg-quality", type=positive_int, default=_default("openai.jpeg_quality")
    )
    lifting = parser.add_argument_group("3D lifting (the node's depth.* parameters)")
    lifting.add_argument("--depth-shrink", type=float, default=_default("depth.shrink"))
    lifting.add_argument("--depth-min", type=float, default=_default("depth.min_depth"))
    lifting.add_argument("--depth-max", type=float, default=_default("depth.max_depth"))
    lifting.add_argument(
        "--depth-min-valid-pixels", type=positive_int, default=_default("depth.min_valid_pixels")
    )
    lifting.add_argument("--depth-min-size", type=float, default=_default("depth.min_size"))
    lifting.add_argument(
        "--depth-scale",
        type=positive_float,
        default=_default("depth.scale"),
        help="metres per unit of 16-bit depth (0.001: mm; 0.0002: TUM's 1/5000 m)",
    )
    lifting.add_argument(
        "--camera-rectified",
        action="store_true",
        default=_default("camera.rectified"),
        help="the images are rectified: use camera_info P and ignore D (else K and D)",
    )


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor options of the backend, as node.py builds them from its parameters."""
    if args.backend == "openai":
        return {
            "model": args.model,
            "base_url": args.openai_base_url,
            "api_key_env": args.openai_api_key_env,
            "timeout_s": float(args.openai_timeout),
            "max_retries": int(args.openai_max_retries),
            "max_in_flight": int(args.openai_max_in_flight),
            "image_format": args.openai_image_format,
            "jpeg_quality": int(args.openai_jpeg_quality),
            # Offline there is no "later": a server that is down is an error now.
            "check_on_load": True,
        }
    return {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
        "min_pixels": int(args.min_pixels),
        "max_pixels": int(args.max_pixels),
        "progress": lambda line: print(f"{line}", file=sys.stderr, flush=True),
    }


def lift_params_from_args(args: argparse.Namespace) -> Any:
    """``LiftParams`` from the ``--depth-*`` flags (one-line error when out of range)."""
    from spatialthinker_ros.lifting import LiftParams

    try:
        return LiftParams(
            shrink=float(args.depth_shrink),
            min_depth=float(args.depth_min),
            max_depth=float(args.depth_max),
            min_valid_pixels=int(args.depth_min_valid_pixels),
            min_size=float(args.depth_min_size),
        )
    except ValueError as error:
        raise CommandError(f"bad depth option: {error}") from None


class OfflineEngine:
    """A started ``InferenceEngine`` built from the command-line flags.

    Args:
        args: Parsed arguments (see :func:`add_engine_arguments`).

    Raises:
        CommandError: The backend could not be created or loaded (the reason, one line).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from spatialthinker_ros.backends import BackendError, GenerationSettings, create_backend
        from spatialthinker_ros.engine import EngineConfig, InferenceEngine

        for name, value in (
            ("max_new_tokens", args.max_new_tokens),
            ("min_pixels", args.min_pixels),
            ("max_pixels", args.max_pixels),
        ):
            spec = PARAMETERS_BY_NAME[name]
            if spec.minimum is not None and value < spec.minimum:
                flag = "--" + name.replace("_", "-")
                raise CommandError(f"{flag} must be at least {spec.minimum:g} (got {value})")
        self.window = int(args.max_batch_size)
        config = EngineConfig(
            max_queue_size=max(16, 2 * self.window),
            max_batch_size=self.window,
            default_timeout_s=_NO_DEADLINE_S,
            frame_policy=args.coordinate_policy,
            min_pixels=int(args.min_pixels),
            max_pixels=int(args.max_pixels),
            generation=GenerationSettings(max_new_tokens=int(args.max_new_tokens)),
        )
        try:
            backend = create_backend(args.backend, **_backend_options(args))
            self.engine = InferenceEngine(backend, config)
            self.engine.start()
        except BackendError as error:
            raise CommandError(f"cannot load the model: {error.reason}") from None
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.model_name = backend.model_name

    def submit(self, rgb: np.ndarray, question: str, options: Sequence[str]) -> Any:
        """Queue one question (returns the engine's ``RequestHandle``)."""
        return self.engine.submit(rgb, question, list(options))

    def answer(self, rgb: np.ndarray, question: str, options: Sequence[str]) -> Any:
        """Answer one question; returns an ``EngineResult``.

        Raises:
            CommandError: The request failed (its reason).
        """
        from spatialthinker_ros.engine import RequestFailed

        try:
            return self.submit(rgb, question, options).result()
        except RequestFailed as failed:
            raise CommandError(f"the model did not answer: {failed.reason}") from None

    def close(self) -> None:
        """Stop the engine and unload the model."""
        self.engine.shutdown("offline run finished")

    def __enter__(self) -> OfflineEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- input files


def _existing_file(path: str | Path, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise CommandError(f"{what} not found: {path}")
    if not file.is_file():
        raise CommandError(f"{what} is not a file: {path}")
    return file


def load_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image file (PNG, JPEG, ...) as ``HxWx3`` uint8 RGB.

    Raises:
        CommandError: Missing file or not a readable image.
    """
    import contextlib

    import cv2

    from spatialthinker_ros.images import (
        DEFAULT_MAX_DECODE_SIZE,
        ImageTooLarge,
        check_encoded_size,
    )

    file = _existing_file(path, "image")
    # PNG and JPEG sizes are checked from their headers before decoding (decompression bombs);
    # a damaged header is left to OpenCV to report.
    with contextlib.suppress(OSError, ValueError), file.open("rb") as handle:
        try:
            check_encoded_size(handle.read(), DEFAULT_MAX_DECODE_SIZE)
        except ImageTooLarge as error:
            raise CommandError(f"cannot use image {path}: {error}") from None
    image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise CommandError(f"cannot read image {path}: not a valid image file")
    if image.dtype == np.uint16:  # 16-bit colour: keep the top 8 bits
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise CommandError(f"cannot use image {path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_depth(path: str | Path, scale: float | None = None) -> np.ndarray:
    """Read a depth image as float32 metres (NaN invalid).

    A 16-bit PNG is millimetres with 0 invalid (the 16UC1 convention), or ``scale`` metres per
    unit; a ``.npy`` file or a 32-bit float TIFF is metres (the 32FC1 convention).

    Raises:
        CommandError: Missing file, unreadable or not a single-channel depth image.
    """
    import cv2

    from spatialthinker_ros.camera import depth_to_metres

    file = _existing_file(path, "depth image")
    if file.suffix.lower() == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except Exception as error:
            raise CommandError(f"cannot read depth {path}: {error}") from None
    else:
        array = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise CommandError(f"cannot read depth {path}: not a valid image file")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise CommandError(f"depth {path} must be single-channel, got shape {array.shape}")
    if array.dtype == np.uint16:
        return depth_to_metres(array, "16UC1", scale)
    if array.dtype.kind == "f":
        return depth_to_metres(array.astype(np.float32), "32FC1")
    raise CommandError(
        f"depth {path} must be 16-bit millimetres or float metres, got {array.dtype}"
    )


def read_camera_info_yaml(path: str | Path, rectified: bool = False) -> CameraIntrinsics:
    """Read intrinsics from a camera_info YAML file.

    With ``rectified`` the projection matrix ``P`` is used and the distortion ignored (images
    from ``image_rect*``); otherwise ``K`` and the distortion ``D``, which lifting undoes.

    Accepts the camera_calibration_parsers format (``image_width``, ``image_height``,
    ``camera_matrix: {rows, cols, data}``) and a CameraInfo message dumped as YAML
    (``width``, ``height``, ``k``, e.g. from ``ros2 topic echo --once``).

    Raises:
        CommandError: Missing file, not YAML, or no usable intrinsics (the problem named).
    """
    import yaml

    file = _existing_file(path, "camera info")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CommandError(f"cannot read camera info {path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise CommandError(f"camera info {path} is not a YAML mapping")
    try:
        if "camera_matrix" in data:
            width, height = int(data["image_width"]), int(data["image_height"])
            matrix = data["camera_matrix"]
            k = matrix["data"] if isinstance(matrix, dict) else matrix
        else:
            width, height, k = int(data["width"]), int(data["height"]), data["k"]
        k = [float(v) for v in k]
    except (KeyError, TypeError, ValueError) as error:
        raise CommandError(
            f"camera info {path} lacks image_width/image_height/camera_matrix ({error})"
        ) from None
    if len(k) != 9:
        raise CommandError(f"camera info {path}: camera matrix has {len(k)} values, expected 9")
    model, dist = "", ()
    try:
        if rectified:
            proj = data.get("projection_matrix", data.get("p"))
            proj = proj["data"] if isinstance(proj, dict) else proj
            if proj:
                k = [float(proj[0]), 0, float(proj[2]), 0, float(proj[5]), float(proj[6])]
        else:
            model = str(data.get("distortion_model") or "")
            coeffs = data.get("distortion_coefficients", data.get("d")) or []
            coeffs = coeffs.get("data", []) if isinstance(coeffs, dict) else coeffs
            dist = tuple(float(v) for v in coeffs)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise CommandError(f"camera info {path}: unreadable P or D ({error})") from None
    try:
        return CameraIntrinsics(k[0], k[4], k[2], k[5], width, height, model, dist)
    except ValueError as error:
        raise CommandError(f"camera info {path} is unusable: {error}") from None


def write_camera_info_yaml(
    path: str | Path, intrinsics: CameraIntrinsics, camera_name: str = "camera"
) -> None:
    """Write intrinsics in the standard ROS camera_info YAML format (no distortion)."""
    k = intrinsics
    lines = [
        f"image_width: {k.width}",
        f"image_height: {k.height}",
        f"camera_name: {camera_name}",
        "camera_matrix:",
        "  rows: 3",
        "  cols: 3",
        f"  data: [{k.fx}, 0.0, {k.cx}, 0.0, {k.fy}, {k.cy}, 0.0, 0.0, 1.0]",
        "distortion_model: plumb_bob",
        "distortion_coefficients:",
        "  rows: 1",
        "  cols: 5",
        "  data: [0.0, 0.0, 0.0, 0.0, 0.0]",
        "rectification_matrix:",
        "  rows: 3",
        "  cols: 3",
        "  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]",
        "projection_matrix:",
        "  rows: 3",
        "  cols: 4",
        f"  data: [{k.fx}, 0.0, {k.cx}, 0.0, 0.0, {k.fy}, {k.cy}, 0.0, 0.0, 0.0, 1.0, 0.0]",
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- lifting and JSON


def lift(
    boxes: Sequence[Sequence[float]],
    depth_m: np.ndarray | None,
    intrinsics: CameraIntrinsics | None,
    image_size: tuple[int, int],
    params: Any = None,
    labels: Sequence[str] | None = None,
) -> tuple[list[Any] | None, str]:
    """Lift colour-pixel boxes to 3D as the node does (``labels``: the objects' ids).

    Returns:
        ``(estimates, "")`` or ``(None, reason)`` when no 3D is possible at all.
    """
    from spatialthinker_ros.lifting import lift_boxes

    if depth_m is None:
        return None, "no depth given"
    if intrinsics is None:
        return None, "no camera info given"
    if not boxes:
        return [], ""
    try:
        lifted = lift_boxes(
            boxes, depth_m, intrinsics, image_size=image_size, params=params, labels=labels
        )
        return lifted, ""
    except ValueError as error:
        return None, str(error)


def depth_units_warning(depth_m: np.ndarray, params: Any, scale: float | None) -> str:
    """The node's implausible-depth warning for a frame ("" when it looks plausible)."""
    from spatialthinker_ros.camera import depth_range_warning

    return depth_range_warning(depth_m, params.min_depth, params.max_depth, scale)


def _rounded(values: Sequence[float] | None, digits: int = 4) -> list[float] | None:
    return None if values is None else [round(float(v), digits) for v in values]


def answer_to_json(
    result: Any,
    question: str,
    options: Sequence[str],
    lifted: Sequence[Any] | None = None,
    no_3d_reason: str = "",
) -> dict[str, Any]:
    """JSON-ready answer with the fields of ``SpatialAnswer`` (objects with 3D when lifted;
    relations with the depth check's verdict and evidence, as the node publishes them).

    Args:
        result: The engine's ``EngineResult``.
        question: The question as asked.
        options: The options as asked.
        lifted: One ``Lifted3D`` per object, or None for no depth.
        no_3d_reason: Why there is no 3D when ``lifted`` is None ("" for a 2D-only request).
    """
    from spatialthinker_ros.relation_check import verdict_name, verify_relations

    parsed = result.result
    objects = []
    warnings = list(parsed.warnings)
    for index, obj in enumerate(parsed.objects):
        item: dict[str, Any] = {
            "id": obj.id,
            "label": obj.label,
            "bbox": _rounded(obj.bbox, 2),
            "has_3d": False,
            "center": None,
            "surface": None,
            "size": None,
            "distance": None,
        }
        estimate = lifted[index] if lifted is not None else None
        if estimate is not None and estimate.has_3d:
            item.update(
                has_3d=True,
                center=_rounded(estimate.center),
                surface=_rounded(estimate.surface),
                size=_rounded(estimate.size),
                distance=round(float(np.linalg.norm(estimate.center)), 4),
                valid_depth_pixels=int(estimate.valid_pixels),
                depth_fill=round(float(estimate.fill), 4),
            )
        elif no_3d_reason or estimate is not None:
            item["no_3d_reason"] = estimate.reason if estimate is not None else no_3d_reason
        objects.append(item)
    if lifted is None and no_3d_reason and parsed.objects:
        warnings.append(f"no 3D: {no_3d_reason}")
    elif lifted:
        missing = [e for e in lifted if not e.has_3d]
        if missing:
            warnings.append(
                f"no 3D for {len(missing)} of {len(lifted)} objects: {missing[0].reason}"
            )
    checked = verify_relations(parsed, lifted)
    warnings += checked.warnings
    return {
        "question": question,
        "options": list(options),
        "answer": parsed.answer,
        "choice": parsed.choice,
        "choice_index": parsed.choice_index,
        "observation": parsed.observation,
        "reasoning": parsed.reasoning,
        "objects": objects,
        "relations": [
            {
                "subject": r.subject,
                "predicate": r.predicate,
                "object": r.object,
                "verdict": verdict_name(check.verdict),
                "evidence": check.evidence,
            }
            for r, check in zip(parsed.relations, checked.checks, strict=True)
        ],
        "relations_contradicted": checked.contradicted,
        "strict_format": parsed.strict,
        "warnings": warnings,
        "raw_output": result.raw_text,
        "model": result.model_name,
        "model_image_size": list(result.model_image_size),
        "stated_size": list(result.stated_size),
        "inference_s": round(result.inference_s, 3),
        "total_s": round(result.total_s, 3),
        "prompt_tokens": result.prompt_tokens,
        "output_tokens": result.output_tokens,
    }


# ---------------------------------------------------------------------------- output files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_path(root: str | Path, name: str) -> Path:
    """A path for ``name`` inside ``root``, never outside it.

    ``name`` is reduced to one safe file name (no separators, no leading dots), so names built
    from bag topics or dataset ids cannot escape the output folder.

    Raises:
        CommandError: ``root`` cannot be created.
    """
    folder = Path(root).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create output folder {root}: {error.strerror}") from None
    safe = _UNSAFE.sub("_", name).lstrip(".") or "output"
    path = (folder / safe).resolve()
    if path.parent != folder.resolve():  # defence in depth; the name has no separators
        raise CommandError(f"refusing to write outside {root}: {name}")
    return path


def write_annotated(root: str | Path, name: str, rgb: np.ndarray, answer: dict[str, Any]) -> Path:
    """Draw the answer's boxes (with distances) on ``rgb`` and write it as PNG in ``root``."""
    import cv2

    from spatialthinker_ros.annotate import draw_annotations

    objects = [
        (
            obj["id"],
            tuple(obj["bbox"]),
            f"{obj['distance']:.2f} m" if obj.get("distance") is not None else None,
        )
        for obj in answer["objects"]
    ]
    image = draw_annotations(
        rgb, objects, answer=answer.get("answer") or None, question=answer.get("question")
    )
    path = output_path(root, name)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise CommandError(f"cannot write {path}")
    return path


def finite(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None: ``json`` would write bare
    ``NaN``/``Infinity``, which strict JSON readers reject."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
    return data


def json_line(data: Any) -> str:
    """One strict-JSON line (results.jsonl): non-finite numbers become null."""
    return json.dumps(finite(data), ensure_ascii=False, allow_nan=False) + "\n"


def write_json(root: str | Path, name: str, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``root/name``."""
    path = output_path(root, name)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """Progress lines on stderr (one per item, so logs stay readable in CI and in files).

    Attributes:
        total: Number of items when known.
        quiet: Print nothing.
        stream: Where to print.
    """

    total: int | None = None
    quiet: bool = False
    stream: TextIO | None = None

    def __post_init__(self) -> None:
        self._started = time.monotonic()
        self._done = 0

    def step(self, text: str) -> None:
        """Count one finished item and print ``[n/total] text (elapsed)``."""
        self._done += 1
        if self.quiet:
            return
        count = f"{self._done}/{self.total}" if self.total else str(self._done)
        elapsed = time.monotonic() - self._started
        print(f"[{count}] {text} ({elapsed:.1f} s)", file=self.stream or sys.stderr, flush=True)


# ---------------------------------------------------------------------------- ask


def add_ask_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spatialthinker ask``."""
    parser = subparsers.add_parser(
        "ask",
        help="answer one question about one image file (JSON on stdout)",
        description=(
            "Answer a spatial question about IMAGE with the same engine and parameters as the "
            "node. Prints the answer as JSON and writes it with an annotated PNG to --output. "
            "With --depth and --camera-info the objects get 3D positions."
        ),
    )
    parser.add_argument("image", help="colour image (PNG, JPEG, ...)")
    parser.add_argument("--question", "-q", required=True, help="the question")
    parser.add_argument(
        "--options", type=options_list, default=[], help="comma-separated options, e.g. 'A,B'"
    )
    parser.add_argument("--depth", help="depth image: 16-bit PNG in mm, or .npy in metres")
    parser.add_argument("--camera-info", help="camera_info YAML of the colour camera")
    parser.add_argument(
        "--output", default="out/ask", help="folder for <image>.json and <image>.annotated.png"
    )
    parser.add_argument("--no-annotate", action="store_true", help="do not write the PNG")
    parser.add_argument("--compact", action="store_true", help="print one line of JSON")
    add_engine_arguments(parser)
    parser.set_defaults(func=run_ask)


def run_ask(args: argparse.Namespace) -> int:
    """``spatialthinker ask``: see :func:`add_ask_command`."""
    if (args.depth is None) != (args.camera_info is None):
        raise CommandError("--depth and --camera-info must be given together")
    if not args.question.strip():
        raise CommandError("--question is empty")
    # Read every input before loading the model: a typo should cost milliseconds, not minutes.
    rgb = load_rgb(args.image)
    depth = load_depth(args.depth, args.depth_scale) if args.depth else None
    intrinsics = (
        read_camera_info_yaml(args.camera_info, args.camera_rectified) if args.camera_info else None
    )
    params = lift_params_from_args(args)
    with OfflineEngine(args) as engine:
        result = engine.answer(rgb, args.question, args.options)
    height, width = rgb.shape[:2]
    boxes = [obj.bbox for obj in result.result.objects]
    labels = [obj.id for obj in result.result.objects]
    lifted, reason = (
        (None, "")
        if depth is None
        else lift(boxes, depth, intrinsics, (width, height), params, labels)
    )
    answer = answer_to_json(result, args.question, args.options, lifted, reason)
    units = "" if depth is None else depth_units_warning(depth, params, args.depth_scale)
    if units:
        answer["warnings"].append(units)
    answer["image"] = str(args.image)
    stem = Path(args.image).stem
    write_json(args.output, f"{stem}.json", answer)
    if not args.no_annotate:
        write_annotated(args.output, f"{stem}.annotated.png", rgb, answer)
    indent = None if args.compact else 2
    sys.stdout.write(json.dumps(answer, indent=indent, ensure_ascii=False) + "\n")
    return 0


# ---------------------------------------------------------------------------- tiny-model


def add_tiny_model_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spatialthinker tiny-model``."""
    parser = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random-weight model for smoke tests (no download)",
        description=(
            "Write a tiny random-weight Qwen2.5-VL with an offline tokenizer to DIR. It answers "
            "nonsense, fast, on a CPU: use it to check an installation end to end without "
            "downloading the 16 GB model (e.g. make demo MODEL=DIR)."
        ),
    )
    parser.add_argument("directory", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    parser.set_defaults(func=run_tiny_model)


def run_tiny_model(args: argparse.Namespace) -> int:
    """``spatialthinker tiny-model``: see :func:`add_tiny_model_command`."""
    from spatialthinker_ros.tiny_model import build_tiny_model

    folder = Path(args.directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"{args.directory} exists and is not a folder")
    try:
        path = build_tiny_model(folder, seed=args.seed)
    except OSError as error:
        raise CommandError(f"cannot write {args.directory}: {error.strerror or error}") from None
    print(f"tiny model written to {path}; try: make demo MODEL={path}")
    return 0
