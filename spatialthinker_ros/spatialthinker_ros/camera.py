"""Pinhole intrinsics and depth units (ROS-free numpy).

Conventions follow ROS (REP 103/117, sensor_msgs/CameraInfo): the camera optical frame has x
right, y down, z forward; in ``K`` the pixel *centres* sit at integer coordinates; depth images are
``16UC1``/``mono16`` millimetres with 0 invalid, or ``32FC1`` metres with NaN/inf invalid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_ASPECT_TOLERANCE",
    "CameraIntrinsics",
    "aspect_mismatch",
    "check_camera_info",
    "depth_to_metres",
]

#: Relative tolerance on width/height aspect ratios before two images count as different crops.
DEFAULT_ASPECT_TOLERANCE = 0.01


def aspect_mismatch(
    size_a: tuple[int, int], size_b: tuple[int, int], tolerance: float = DEFAULT_ASPECT_TOLERANCE
) -> str | None:
    """Say why two image sizes cannot be related by a proportional scale, or ``None`` if they can.

    Args:
        size_a: ``(width, height)`` of the first image.
        size_b: ``(width, height)`` of the second image.
        tolerance: Relative tolerance on the aspect ratio.

    Returns:
        A human-readable reason, or ``None`` when the aspect ratios agree within ``tolerance``.
    """
    (wa, ha), (wb, hb) = size_a, size_b
    if min(wa, ha, wb, hb) <= 0:
        return f"image size {wa}x{ha} or {wb}x{hb} is empty"
    ra, rb = wa / ha, wb / hb
    if abs(ra - rb) > tolerance * max(ra, rb):
        return (
            f"aspect ratios disagree: {wa}x{ha} ({ra:.3f}) vs {wb}x{hb} ({rb:.3f}); the images "
            f"are not proportional crops of one view (is the depth registered to colour?)"
        )
    return None


def check_camera_info(msg: Any) -> None:
    """Validate a ``sensor_msgs/CameraInfo`` for use as pinhole intrinsics.

    Args:
        msg: A ``sensor_msgs.msg.CameraInfo``.

    Raises:
        ValueError: Naming the problem: zero size, ``K`` all zeros (an uncalibrated camera),
            a zero, negative or non-finite focal length or principal point.
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise ValueError(f"CameraInfo has zero size ({width}x{height})")
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise ValueError(f"CameraInfo K has {k.size} elements, expected 9")
    if not np.any(k):
        raise ValueError("CameraInfo K is all zeros (camera not calibrated)")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"CameraInfo K has non-finite values: {k.tolist()}")
    fx, fy = k[0], k[4]
    if fx <= 0 or fy <= 0:
        raise ValueError(f"CameraInfo focal length must be positive, got fx={fx}, fy={fy}")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one image resolution.

    Attributes:
        fx: Focal length along x in pixels.
        fy: Focal length along y in pixels.
        cx: Principal point x in pixels (pixel centres at integers, as in CameraInfo ``K``).
        cy: Principal point y in pixels.
        width: Image width in pixels.
        height: Image height in pixels.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ValueError(f"focal lengths must be positive and finite: {self.fx}, {self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"intrinsics have zero size ({self.width}x{self.height})")

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)

    @property
    def K(self) -> np.ndarray:
        """3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_camera_info(cls, msg: Any, *, use_projection: bool = False) -> CameraIntrinsics:
        """Read intrinsics from a ``sensor_msgs/CameraInfo``.

        A region of interest and binning are applied as image_geometry applies them (binning with
        the pixel-centre offset kept exact), so the result describes the image actually published
        with this CameraInfo.

        Args:
            msg: The CameraInfo message.
            use_projection: Use ``P`` (the rectified camera) instead of ``K``; right for images
                that come from ``image_proc``'s rectification (``image_rect*``).

        Returns:
            The intrinsics.

        Raises:
            ValueError: See :func:`check_camera_info`.
        """
        check_camera_info(msg)
        if use_projection:
            p = np.asarray(msg.p, dtype=np.float64).reshape(-1)
            if p.size != 12 or p[0] <= 0 or p[5] <= 0:
                raise ValueError(f"CameraInfo P has no positive focal length: {p.tolist()}")
            fx, fy, cx, cy = p[0], p[5], p[2], p[6]
        else:
            k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
            fx, fy, cx, cy = k[0], k[4], k[2], k[5]
        width, height = int(msg.width), int(msg.height)
        roi = getattr(msg, "roi", None)
        if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
            cx -= int(roi.x_offset)
            cy -= int(roi.y_offset)
            width, height = int(roi.width), int(roi.height)
        bx = max(int(getattr(msg, "binning_x", 0)), 1)
        by = max(int(getattr(msg, "binning_y", 0)), 1)
        if bx > 1 or by > 1:
            fx, cx, width = fx / bx, (cx + 0.5) / bx - 0.5, width // bx
            fy, cy, height = fy / by, (cy + 0.5) / by - 0.5, height // by
        return cls(float(fx), float(fy), float(cx), float(cy), width, height)

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics of the same view resampled to ``width x height``.

        The scale maps pixel *edges* proportionally (what ``cv2.resize`` does), so a pixel-centre
        coordinate ``c`` becomes ``(c + 0.5) * s - 0.5``.

        Args:
            width: New width in pixels.
            height: New height in pixels.

        Returns:
            The rescaled intrinsics (``self`` when the size is unchanged).
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            int(width),
            int(height),
        )

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project ``Nx3`` optical-frame points to ``Nx2`` pixel-centre coordinates."""
        p = np.asarray(points, dtype=np.float64)
        return np.stack(
            [self.fx * p[..., 0] / p[..., 2] + self.cx, self.fy * p[..., 1] / p[..., 2] + self.cy],
            axis=-1,
        )

    def back_project(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Back-project pixel-centre coordinates at depth ``z`` to optical-frame points."""
        z = np.asarray(z)
        return np.stack([(u - self.cx) * z / self.fx, (v - self.cy) * z / self.fy, z], axis=-1)


def depth_to_metres(array: np.ndarray, encoding: str, scale: float | None = None) -> np.ndarray:
    """Convert a depth image to float32 metres with NaN for invalid pixels.

    ``16UC1``/``mono16`` are millimetres with 0 invalid; ``32FC1`` is metres with NaN/inf invalid
    (zero and negative values are also treated as invalid, which some drivers emit).

    Args:
        array: Depth pixels as returned by :func:`spatialthinker_ros.images.image_to_numpy`.
        encoding: ``"16UC1"``, ``"mono16"`` or ``"32FC1"``.
        scale: Metres per unit, overriding the convention (e.g. ``0.0001`` for a sensor that
            publishes 0.1 mm units in 16UC1).

    Returns:
        A new float32 array in metres.

    Raises:
        ValueError: Non-depth encoding, non-positive scale, or a dtype that does not match.
    """
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"depth scale must be positive and finite, got {scale}")
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if encoding in ("16UC1", "mono16"):
        if arr.dtype.kind not in "ui":
            raise ValueError(f"{encoding} depth must be an integer array, got {arr.dtype}")
        out = arr.astype(np.float32) * np.float32(0.001 if scale is None else scale)
        out[arr == 0] = np.nan
        return out
    if encoding == "32FC1":
        if arr.dtype.kind != "f":
            raise ValueError(f"32FC1 depth must be a float array, got {arr.dtype}")
        out = arr.astype(np.float32, copy=True)
        if scale is not None:
            out *= np.float32(scale)
        with np.errstate(invalid="ignore"):
            out[~(np.isfinite(out) & (out > 0))] = np.nan
        return out
    raise ValueError(f"unsupported depth encoding {encoding!r}; supported: 16UC1, mono16, 32FC1")
