"""Facade over the geometry of the pipeline: model frame, camera intrinsics, 2D-to-3D lifting
and the scene's up direction.

The public API for 3D (``lift_boxes``, ``CameraIntrinsics``, ``estimate_up`` ...); the
implementation lives in :mod:`spatialthinker_ros.core.model_frame`,
:mod:`spatialthinker_ros.core.camera`, :mod:`spatialthinker_ros.core.lifting` and
:mod:`spatialthinker_ros.core.gravity`.
"""

from __future__ import annotations

from spatialthinker_ros.core.camera import (
    DEFAULT_ASPECT_TOLERANCE,
    CameraIntrinsics,
    aspect_mismatch,
    check_camera_info,
    depth_to_metres,
)
from spatialthinker_ros.core.gravity import UpEstimate, estimate_up, levelling_rotation
from spatialthinker_ros.core.lifting import Lifted3D, LiftParams, lift_boxes
from spatialthinker_ros.core.model_frame import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    ModelFrame,
    model_input_size,
    plan_model_frame,
    prepare_image,
    scale_boxes,
)

__all__ = [
    "DEFAULT_ASPECT_TOLERANCE",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "CameraIntrinsics",
    "LiftParams",
    "Lifted3D",
    "ModelFrame",
    "UpEstimate",
    "aspect_mismatch",
    "check_camera_info",
    "depth_to_metres",
    "estimate_up",
    "levelling_rotation",
    "lift_boxes",
    "model_input_size",
    "plan_model_frame",
    "prepare_image",
    "scale_boxes",
]
