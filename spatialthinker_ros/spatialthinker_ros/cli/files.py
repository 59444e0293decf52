"""The files of the tools (ROS-free): colour images, depth images, camera_info YAML, outputs.

Used by ``spatialthinker ask``, ``replay`` and ``eval``, by the demo and by the bundled sample
(:mod:`spatialthinker_ros.cli.sample_data`). A file that cannot be used raises
:class:`InputFileError`, one that cannot be written :class:`OutputFileError`; both are
``ValueError`` with a message naming the file and the problem (the command line prints it as
its one error line). Output files are confined to their output folder (:func:`output_path`).
OpenCV and PyYAML are imported only when a file is read or written.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    from spatialthinker_ros.core.camera import CameraIntrinsics

__all__ = [
    "InputFileError",
    "OutputFileError",
    "Progress",
    "finite",
    "json_line",
    "load_depth",
    "load_rgb",
    "output_path",
    "read_camera_info_yaml",
    "write_annotated",
    "write_camera_info_yaml",
    "write_json",
]


class InputFileError(ValueError):
    """An input file is missing or unusable; the message names it and the problem."""


class OutputFileError(ValueError):
    """An output file or folder cannot be written; the message names it and the problem."""


# ---------------------------------------------------------------------------- input files


def _existing_file(path: str | Path, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.exists():
        raise InputFileError(f"{what} not found: {path}")
    if not file.is_file():
        raise InputFileError(f"{what} is not a file: {path}")
    return file


def load_rgb(path: str | Path) -> np.ndarray:
    """Read a colour image file (PNG, JPEG, TIFF, ...) as ``HxWx3`` uint8 RGB.

    Raises:
        InputFileError: Missing file, not a readable image, or larger than 4096x4096.
    """
    import cv2

    from spatialthinker_ros.core.images import (
        DEFAULT_MAX_DECODE_SIZE,
        ImageTooLarge,
        check_encoded_size,
    )

    file = _existing_file(path, "image")
    # PNG, JPEG and TIFF sizes are checked from their headers before decoding (decompression
    # bombs); a damaged header is left to OpenCV to report.
    try:
        check_encoded_size(file.read_bytes(), DEFAULT_MAX_DECODE_SIZE)
    except ImageTooLarge as error:
        raise InputFileError(f"cannot use image {path}: {error}") from None
    except (OSError, ValueError):
        pass  # unreadable or a damaged header: OpenCV says what is wrong below
    image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputFileError(f"cannot read image {path}: not a valid image file")
    if image.dtype == np.uint16:  # 16-bit colour: keep the top 8 bits
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise InputFileError(f"cannot use image {path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_depth(path: str | Path, scale: float | None = None) -> tuple[np.ndarray, float | None]:
    """Read a depth image as float32 metres (NaN invalid), by the rules of a depth message
    (:func:`spatialthinker_ros.core.images.depth_message_to_metres`).

    A 16-bit PNG is millimetres with 0 invalid (the 16UC1 convention), or ``scale`` metres per
    unit; a ``.npy`` file or a 32-bit float TIFF is metres (the 32FC1 convention) whatever
    ``scale`` says.

    Returns:
        ``(depth_m, scale)``: the depth, and the scale that applied (None for metres), which
        the implausible-depth warning names.

    Raises:
        InputFileError: Missing file, unreadable or not a single-channel depth image.
    """
    import cv2

    from spatialthinker_ros.core.camera import depth_to_metres

    file = _existing_file(path, "depth image")
    if file.suffix.lower() == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except Exception as error:
            raise InputFileError(f"cannot read depth {path}: {error}") from None
    else:
        array = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise InputFileError(f"cannot read depth {path}: not a valid image file")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise InputFileError(f"depth {path} must be single-channel, got shape {array.shape}")
    if array.dtype == np.uint16:
        return depth_to_metres(array, "16UC1", scale), scale
    if array.dtype.kind == "f":
        return depth_to_metres(array.astype(np.float32), "32FC1"), None
    raise InputFileError(
        f"depth {path} must be 16-bit millimetres or float metres, got {array.dtype}"
    )


def read_camera_info_yaml(path: str | Path, rectified: bool = False) -> CameraIntrinsics:
    """Read intrinsics from a camera_info YAML file, by the node's rules for a CameraInfo
    message (:meth:`CameraIntrinsics.from_camera_info`: the same checks, region of interest
    and binning), so a file gives the 3D its message gives the node.

    With ``rectified`` the projection matrix ``P`` is used and the distortion ignored (images
    from ``image_rect*``; a file without ``P`` uses ``K``); otherwise ``K`` and the distortion
    ``D``, which lifting undoes.

    Accepts the camera_calibration_parsers format (``image_width``, ``image_height``,
    ``camera_matrix: {rows, cols, data}``) and a CameraInfo message dumped as YAML
    (``width``, ``height``, ``k``, ``roi``, ``binning_x`` ..., e.g. from ``ros2 topic echo
    --once``).

    Raises:
        InputFileError: Missing file, not YAML, or no usable intrinsics (the problem named).
    """
    from types import SimpleNamespace

    import yaml

    from spatialthinker_ros.core.camera import CameraIntrinsics

    file = _existing_file(path, "camera info")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputFileError(f"cannot read camera info {path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"camera info {path} is not a YAML mapping")
    try:
        if "camera_matrix" in data:
            width, height = int(data["image_width"]), int(data["image_height"])
            matrix = data["camera_matrix"]
            k = matrix["data"] if isinstance(matrix, dict) else matrix
        else:
            width, height, k = int(data["width"]), int(data["height"]), data["k"]
        k = [float(v) for v in k]
    except (KeyError, TypeError, ValueError) as error:
        raise InputFileError(
            f"camera info {path} lacks image_width/image_height/camera_matrix ({error})"
        ) from None
    if len(k) != 9:
        raise InputFileError(f"camera info {path}: camera matrix has {len(k)} values, expected 9")

    def matrix_data(file_key: str, message_key: str) -> list[float]:
        value = data.get(file_key, data.get(message_key))
        value = value.get("data") if isinstance(value, dict) else value
        return [float(v) for v in value or []]

    try:
        # Only what the chosen camera uses is read: P when rectified, else D (as before).
        proj = matrix_data("projection_matrix", "p") if rectified else []
        roi = data.get("roi") or {}
        info = SimpleNamespace(
            width=width,
            height=height,
            k=k,
            p=proj or [k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0],
            d=[] if rectified else matrix_data("distortion_coefficients", "d"),
            distortion_model=str(data.get("distortion_model") or ""),
            binning_x=int(data.get("binning_x") or 0),
            binning_y=int(data.get("binning_y") or 0),
            roi=SimpleNamespace(
                **{
                    key: int(roi.get(key) or 0)
                    for key in ("x_offset", "y_offset", "width", "height")
                }
            ),
        )
    except (AttributeError, TypeError, ValueError) as error:
        raise InputFileError(
            f"camera info {path}: unreadable P, D, roi or binning ({error})"
        ) from None
    try:
        return CameraIntrinsics.from_camera_info(info, use_projection=rectified)
    except ValueError as error:
        raise InputFileError(f"camera info {path} is unusable: {error}") from None


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


# ---------------------------------------------------------------------------- output files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_path(root: str | Path, name: str) -> Path:
    """A path for ``name`` inside ``root``, never outside it.

    ``name`` is reduced to one safe file name (no separators, no leading dots), so names built
    from bag topics or dataset ids cannot escape the output folder.

    Raises:
        OutputFileError: ``root`` cannot be created.
    """
    folder = Path(root).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFileError(f"cannot create output folder {root}: {error.strerror}") from None
    safe = _UNSAFE.sub("_", name).lstrip(".") or "output"
    path = (folder / safe).resolve()
    if path.parent != folder.resolve():  # defence in depth; the name has no separators
        raise OutputFileError(f"refusing to write outside {root}: {name}")
    return path


def write_annotated(root: str | Path, name: str, rgb: np.ndarray, answer: dict[str, Any]) -> Path:
    """Draw an answer's boxes (with distances) on ``rgb`` and write it as PNG in ``root``.

    Args:
        root: Output folder.
        name: File name (made safe by :func:`output_path`).
        rgb: The colour image the boxes refer to.
        answer: The answer as JSON data (:func:`spatialthinker_ros.ros.answer_json.answer_to_json`).

    Raises:
        OutputFileError: The file cannot be written.
    """
    import cv2

    from spatialthinker_ros.core.annotate import confidence_text, draw_annotations

    objects = [
        (
            obj["id"],
            # A coordinate JSON could not hold (null) is skipped by the drawing, not an error.
            tuple(math.nan if v is None else v for v in obj["bbox"]),
            f"{obj['distance']:.2f} m" if obj.get("distance") is not None else None,
        )
        for obj in answer["objects"]
    ]
    confidence = confidence_text(
        len(answer.get("options") or []),
        answer.get("option_probabilities") or [],
        answer.get("confidence"),
        answer.get("choice") or "",
        answer.get("confidence_note") or "",
    )
    image = draw_annotations(
        rgb,
        objects,
        answer=answer.get("answer") or None,
        question=answer.get("question"),
        confidence=confidence,
    )
    path = output_path(root, name)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OutputFileError(f"cannot write {path}")
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
    """Write ``data`` as indented strict JSON to ``root/name`` (non-finite numbers: null).

    Raises:
        OutputFileError: The file cannot be written.
    """
    path = output_path(root, name)
    text = json.dumps(finite(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise OutputFileError(f"cannot write {path}: {error.strerror or error}") from None
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
