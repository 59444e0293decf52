"""The bundled RGB-D sample (``samples/`` at the repository root): layout, writing, reading.

The sample is the synthetic demo scene (``synthetic_scene.demo_scene``), so its geometry is
known: ``scene.json`` records the question, the options, the correct answer and every object's
true 3D centre and size next to the file names. Files:

* ``color_NNN.png``: 8-bit RGB colour frames;
* ``depth_NNN.png``: 16-bit depth in millimetres (0 = no reading), registered to the colour;
* ``camera_info.yaml``: the colour camera in the ROS camera_info YAML format;
* ``scene.json``: the manifest described above.

``scripts/make_sample.py`` writes it; ``scripts/demo.py`` plays it to the node, or a folder of your
own frames in the same layout (``make demo SAMPLE=DIR``, see :func:`load_sample`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spatialthinker_ros.cli.files import (
    InputFileError,
    load_rgb,
    read_camera_info_yaml,
    write_camera_info_yaml,
)
from spatialthinker_ros.core.camera import CameraIntrinsics

__all__ = ["SAMPLE_DIR", "Sample", "SampleFrame", "load_sample", "write_sample"]

#: The bundled sample of a source checkout (repository root / samples).
SAMPLE_DIR = Path(__file__).resolve().parents[3] / "samples"

QUESTION = "Is the small red box in front of or behind the green box?"
OPTIONS = ["in front of", "behind"]
ANSWER = "A"


@dataclass(frozen=True)
class SampleFrame:
    """One RGB-D frame.

    Attributes:
        rgb: ``HxWx3`` uint8 RGB.
        depth_mm: ``HxW`` uint16 millimetres, 0 invalid.
    """

    rgb: np.ndarray
    depth_mm: np.ndarray


@dataclass(frozen=True)
class Sample:
    """The sample sequence with its question and ground truth.

    Attributes:
        frames: The frames, in order.
        intrinsics: Colour camera intrinsics.
        question: The question.
        options: Its options.
        answer: Correct option letter ("" when the folder gives none).
        objects: Ground truth per object (label, bbox, center, size) from the renderer; empty
            for frames of your own.
    """

    frames: list[SampleFrame]
    intrinsics: CameraIntrinsics
    question: str
    options: list[str]
    answer: str
    objects: list[dict[str, Any]]


def write_sample(directory: str | Path, frames: int = 1, seed: int = 0) -> list[Path]:
    """Render the demo scene ``frames`` times (new noise each) and write the sample files.

    Args:
        directory: Output folder (created).
        frames: Number of frames; each 640x480 pair is about 0.85 MB of PNG (sensor noise
            does not compress), so the bundled sample keeps one.
        seed: Seed of the first frame; frame ``i`` uses ``seed + i``.

    Returns:
        The files written.
    """
    import cv2

    from spatialthinker_ros.core.synthetic_scene import demo_scene

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries = []
    scene = None
    for i in range(frames):
        scene = demo_scene(seed=seed + i)
        colour, depth = folder / f"color_{i:03d}.png", folder / f"depth_{i:03d}.png"
        png = [cv2.IMWRITE_PNG_COMPRESSION, 9]
        cv2.imwrite(str(colour), cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR), png)
        cv2.imwrite(str(depth), scene.depth_mm, png)
        written += [colour, depth]
        entries.append({"color": colour.name, "depth": depth.name})
    assert scene is not None, "frames must be at least 1"
    info = folder / "camera_info.yaml"
    write_camera_info_yaml(info, scene.intrinsics, camera_name="demo_camera")
    manifest = {
        "description": "Synthetic RGB-D scene from"
        " spatialthinker_ros.core.synthetic_scene.demo_scene (regenerate with"
        " scripts/make_sample.py); optical frame x right, y down, z forward.",
        "question": QUESTION,
        "options": OPTIONS,
        "answer": ANSWER,
        "camera_info": info.name,
        "depth_unit": "mm",
        "frames": entries,
        "objects": [
            {
                "label": obj.label,
                "bbox": None if obj.bbox is None else [round(float(v), 2) for v in obj.bbox],
                "center": [round(float(v), 4) for v in obj.center],
                "size": [round(float(v), 4) for v in obj.size],
            }
            for obj in scene.objects
        ],
    }
    scene_json = folder / "scene.json"
    scene_json.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return [*written, info, scene_json]


def load_sample(directory: str | Path = SAMPLE_DIR) -> Sample:
    """Read a sample folder: the bundled one, one written by :func:`write_sample`, or your own.

    Your own frames need only a ``scene.json`` with ``question``, ``options`` (``[]`` for an
    open question), ``camera_info`` (a camera_info YAML file) and ``frames`` (``[{"color":
    "a.png", "depth": "a_depth.png"}, ...]``, 16-bit depth registered to the colour); the
    ground truth (``answer``, ``objects``) is optional.

    Raises:
        FileNotFoundError: The folder has no ``scene.json``.
        InputFileError: A file is missing or unusable, or the manifest lacks a field (a
            ``ValueError``; the file and the problem named).
    """
    import cv2

    folder = Path(directory)
    manifest_path = folder / "scene.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no sample at {folder} (scene.json missing)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(f"{manifest_path} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise InputFileError(f"{manifest_path} is not a JSON object")
    missing = [
        key for key in ("question", "options", "camera_info", "frames") if key not in manifest
    ]
    if missing:
        raise InputFileError(f"{manifest_path} lacks {', '.join(missing)}")
    if not isinstance(manifest["frames"], list) or not manifest["frames"]:
        raise InputFileError(f"{manifest_path}: 'frames' must list at least one frame")
    frames = []
    for entry in manifest["frames"]:
        if not isinstance(entry, dict) or not {"color", "depth"} <= entry.keys():
            raise InputFileError(f"{manifest_path}: frame {entry!r} needs 'color' and 'depth'")
        rgb = load_rgb(folder / entry["color"])
        depth_path = folder / entry["depth"]
        depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.dtype != np.uint16 or depth.ndim != 2:
            raise InputFileError(f"depth {depth_path} is missing or not a 16-bit depth image")
        frames.append(SampleFrame(rgb, depth))
    return Sample(
        frames=frames,
        intrinsics=read_camera_info_yaml(folder / manifest["camera_info"]),
        question=str(manifest["question"]),
        options=[str(option) for option in manifest["options"]],
        answer=str(manifest.get("answer") or ""),
        objects=list(manifest.get("objects") or []),
    )
