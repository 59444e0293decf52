"""Loader of the real RGB-D frames in ``data/real_rgbd`` (tests and ``bench_lift_real.py``).

Each frame gives its depth in metres (NaN invalid), the intrinsics and the hand-drawn boxes with
the ids a model would use; ``checks`` holds the per-object reference values written down in the
scene's ``scene.json`` (see ``data/real_rgbd/README.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from spatialthinker_ros.core.camera import CameraIntrinsics, depth_to_metres

REAL_RGBD_DIR = Path(__file__).parent / "data" / "real_rgbd"


@dataclass(frozen=True)
class RealFrame:
    """One real frame with its boxes.

    Attributes:
        name: ``"<scene>/<frame>"``.
        depth_m: ``HxW`` float32 metres, NaN invalid.
        raw_depth: The 16-bit depth as stored.
        depth_scale: Metres per unit of ``raw_depth``.
        intrinsics: Pinhole intrinsics of the (registered, rectified) images.
        ids: Object ids, e.g. ``"chair.1"``.
        boxes: ``(x0, y0, x1, y1)`` per object, colour pixels (edges).
        checks: Reference values per object id (from ``scene.json``).
    """

    name: str
    depth_m: np.ndarray
    raw_depth: np.ndarray
    depth_scale: float
    intrinsics: CameraIntrinsics
    ids: list[str]
    boxes: list[tuple[float, float, float, float]]
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def box(self, object_id: str) -> tuple[float, float, float, float]:
        """The box of ``object_id``."""
        return self.boxes[self.ids.index(object_id)]


def _intrinsics(path: Path) -> CameraIntrinsics:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    k = data["camera_matrix"]["data"]
    return CameraIntrinsics(k[0], k[4], k[2], k[5], data["image_width"], data["image_height"])


def load_real_frames(root: Path = REAL_RGBD_DIR) -> list[RealFrame]:
    """Every frame of every scene under ``root``, in a stable order."""
    frames = []
    for scene_file in sorted(root.glob("*/scene.json")):
        scene = json.loads(scene_file.read_text(encoding="utf-8"))
        folder = scene_file.parent
        cam = _intrinsics(folder / scene["camera_info"])
        scale = float(scene["depth_scale_m"])
        for key, frame in sorted(scene["frames"].items()):
            raw = cv2.imread(str(folder / frame["depth"]), cv2.IMREAD_UNCHANGED)
            if raw is None or raw.dtype != np.uint16:
                raise ValueError(f"{folder / frame['depth']} is not a 16-bit depth image")
            frames.append(
                RealFrame(
                    name=f"{scene['name']}/{key}",
                    depth_m=depth_to_metres(raw, "16UC1", scale),
                    raw_depth=raw,
                    depth_scale=scale,
                    intrinsics=cam,
                    ids=[o["id"] for o in frame["objects"]],
                    boxes=[tuple(float(v) for v in o["bbox"]) for o in frame["objects"]],
                    checks=scene.get("checks", {}),
                )
            )
    return frames


def jittered_boxes(
    box: tuple[float, float, float, float], trials: int, amplitude: float, seed: int = 0
) -> np.ndarray:
    """``trials x 4`` copies of ``box`` with each edge moved by a uniform ``+-amplitude`` px."""
    rng = np.random.default_rng(seed)
    return np.asarray(box, dtype=np.float64)[None, :] + rng.uniform(
        -amplitude, amplitude, (trials, 4)
    )
