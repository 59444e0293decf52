"""Pinhole intrinsics and depth units (ROS-free numpy).

Conventions follow ROS (REP 103/117, sensor_msgs/CameraInfo): the camera optical frame has x
right, y down, z forward; in ``K`` the pixel *centres* sit at integer coordinates; depth images are
``16UC1``/``mono16`` millimetres with 0 invalid (another unit through ``scale``), or ``32FC1``
metres with NaN/inf invalid.

Lens distortion: an *unrectified* image (``image_raw``) is described by ``K`` and ``D``; its pixels
lie on distorted rays, so :meth:`CameraIntrinsics.rays` undoes ``D`` (OpenCV's
``undistortPoints`` for ``plumb_bob`` and ``rational_polynomial``, ``cv2.fisheye`` for
``equidistant``). A *rectified* image (``image_rect*``) is described by ``P`` and has no
distortion left: read it with ``from_camera_info(msg, use_projection=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_ASPECT_TOLERANCE",
    "CameraIntrinsics",
    "aspect_mismatch",
    "check_camera_info",
    "depth_range_warning",
    "depth_to_metres",
]

#: Distortion models whose ``D`` is undone before back-projection, and their OpenCV lengths.
DISTORTION_MODELS = {"plumb_bob": (4, 5), "rational_polynomial": (8,), "equidistant": (4,)}

#: Relative tolerance on width/height aspect ratios before two images count as different crops.
DEFAULT_ASPECT_TOLERANCE = 0.01
#: A focal length below ``max(width, height) / MIN_FOCAL_FRACTION`` pixels is refused (a field
#: of view within a hair of 180 degrees; real fisheyes calibrated as pinholes stay far above).
MIN_FOCAL_FRACTION = 1000.0
#: Farthest depth any sensor reports usefully, metres.
MAX_DEPTH_M = 1000.0


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
            a zero, negative, non-finite or implausibly small focal length, a principal point
            far outside the image, or a region of interest that does not fit in the image.
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
    # Values that pass the checks above can still put every point light-years away: a focal
    # length far below the image size (fx = 1e-30) is a field of view beyond 180 degrees.
    least = max(width, height) / MIN_FOCAL_FRACTION
    if fx < least or fy < least:
        raise ValueError(
            f"CameraInfo focal length fx={fx:g}, fy={fy:g} is implausible for a {width}x{height}"
            f" image (at least {least:g} px, a field of view under 180 degrees)"
        )
    cx, cy = k[2], k[5]
    if not (-width <= cx <= 2 * width and -height <= cy <= 2 * height):
        raise ValueError(
            f"CameraInfo principal point ({cx:g}, {cy:g}) lies far outside the {width}x{height}"
            " image"
        )
    roi = getattr(msg, "roi", None)
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
        x0, y0, rw, rh = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
        if x0 + rw > width or y0 + rh > height:
            raise ValueError(
                f"CameraInfo region of interest {rw}x{rh} at ({x0}, {y0}) does not fit in the"
                f" {width}x{height} image"
            )


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
        distortion_model: CameraInfo's model name (``plumb_bob``, ``rational_polynomial``,
            ``equidistant``); ignored while ``distortion`` is all zero.
        distortion: CameraInfo ``D`` of an unrectified image; empty or all zero for a rectified
            or distortion-free one.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ValueError(f"focal lengths must be positive and finite: {self.fx}, {self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"intrinsics have zero size ({self.width}x{self.height})")
        d = tuple(float(v) for v in self.distortion)
        object.__setattr__(self, "distortion", d)
        if not all(math.isfinite(v) for v in d):
            raise ValueError(f"distortion coefficients must be finite: {list(d)}")
        if any(d):
            lengths = DISTORTION_MODELS.get(self.distortion_model)
            if lengths is None:
                raise ValueError(
                    f"unsupported distortion model {self.distortion_model!r} with non-zero D; "
                    f"supported: {', '.join(DISTORTION_MODELS)} (or rectify the image and use P)"
                )
            if len(d) not in lengths and not (
                self.distortion_model == "rational_polynomial" and len(d) in (5, 8, 12, 14)
            ):
                raise ValueError(
                    f"{self.distortion_model} distortion needs {' or '.join(map(str, lengths))}"
                    f" coefficients, got {len(d)}"
                )

    @property
    def has_distortion(self) -> bool:
        """Whether ``D`` is non-zero (the image is not rectified)."""
        return any(self.distortion)

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

        A region of interest and binning are applied, so the result describes the image actually
        published with this CameraInfo. The region of interest shifts the principal point by its
        offset, as in image_geometry. Binning differs from image_geometry on purpose: it divides
        the principal point by the binning factor ``b`` (``cx / b``, which treats a pixel's
        corner as its coordinate); we keep pixel centres exact, ``(cx + 0.5) / b - 0.5``, so
        the two differ by ``(b - 1) / (2 b)`` pixel (a quarter pixel at ``b = 2``).

        Args:
            msg: The CameraInfo message.
            use_projection: Use ``P`` (the rectified camera) instead of ``K``, without ``D``;
                right for images that come from ``image_proc``'s rectification
                (``image_rect*``). Otherwise ``K`` and ``D`` are used: right for unrectified
                images (``image_raw``), and the same as ``P`` when ``D`` is zero.

        Returns:
            The intrinsics, carrying ``D`` and the distortion model unless ``use_projection``.

        Raises:
            ValueError: See :func:`check_camera_info`; also a non-zero ``D`` of an unsupported
                model or length.
        """
        check_camera_info(msg)
        model, dist = "", ()
        if use_projection:
            p = np.asarray(msg.p, dtype=np.float64).reshape(-1)
            if p.size != 12 or p[0] <= 0 or p[5] <= 0:
                raise ValueError(f"CameraInfo P has no positive focal length: {p.tolist()}")
            fx, fy, cx, cy = p[0], p[5], p[2], p[6]
        else:
            k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
            fx, fy, cx, cy = k[0], k[4], k[2], k[5]
            model = str(getattr(msg, "distortion_model", "") or "")
            dist = tuple(float(v) for v in np.asarray(getattr(msg, "d", ()), np.float64))
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
        return cls(float(fx), float(fy), float(cx), float(cy), width, height, model, dist)

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
            self.distortion_model,  # D acts on normalised coordinates: unchanged by scaling
            self.distortion,
        )

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project ``Nx3`` optical-frame points to ``Nx2`` pixel-centre coordinates (with ``D``)."""
        p = np.asarray(points, dtype=np.float64)
        if self.has_distortion:
            import cv2

            flat = p.reshape(-1, 1, 3)
            zero = np.zeros(3)
            if self.distortion_model == "equidistant":
                uv, _ = cv2.fisheye.projectPoints(flat, zero, zero, self.K, self._d())
            else:
                uv, _ = cv2.projectPoints(flat, zero, zero, self.K, self._d())
            return uv.reshape(*p.shape[:-1], 2)
        return np.stack(
            [self.fx * p[..., 0] / p[..., 2] + self.cx, self.fy * p[..., 1] / p[..., 2] + self.cy],
            axis=-1,
        )

    def rays(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ray coordinates ``(x/z, y/z)`` of pixel-centre coordinates, ``D`` undone."""
        u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
        if not self.has_distortion:
            return (u - self.cx) / self.fx, (v - self.cy) / self.fy
        import cv2

        pts = np.stack([u.ravel(), v.ravel()], axis=-1).reshape(-1, 1, 2)
        # Enough iterations for wide-angle lenses near the corners (OpenCV's default is 5).
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(pts, self.K, self._d(), criteria=criteria)
        else:
            out = cv2.undistortPoints(pts, self.K, self._d(), criteria=criteria)
        out = out.reshape(-1, 2)
        return out[:, 0].reshape(u.shape), out[:, 1].reshape(u.shape)

    def ray_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x/z, y/z)`` of every pixel centre as two ``HxW`` float32 maps (cached per camera)."""
        return _ray_maps(self)

    def back_project(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Back-project pixel-centre coordinates at depth ``z`` to optical-frame points."""
        z = np.asarray(z)
        xn, yn = self.rays(u, v)
        return np.stack([xn * z, yn * z, z], axis=-1)

    def _d(self) -> np.ndarray:
        return np.asarray(self.distortion, dtype=np.float64)


@lru_cache(maxsize=4)
def _ray_maps(cam: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    # One undistortion of the whole image per camera (tens of ms), then lookups per request.
    u = np.arange(cam.width, dtype=np.float64)
    v = np.arange(cam.height, dtype=np.float64)
    xn, yn = cam.rays(u[None, :], v[:, None])
    return xn.astype(np.float32), yn.astype(np.float32)


#: What depth cameras measure, metres. Readings mostly outside it mean wrong units (a 1/5000 m
#: PNG read as millimetres puts a room 5x too far, 0.1 mm units 10x); readings merely outside
#: ``depth.min_depth..depth.max_depth`` are the range a robot chose (a table-top robot's
#: ``max_depth`` of 1.5 m, the wall behind the table at 3 m).
SENSOR_RANGE_M = (0.1, 10.0)


def depth_range_warning(
    depth_m: np.ndarray, min_depth: float, max_depth: float, scale: float | None = None
) -> str:
    """Say when a depth frame looks like the wrong units or has nothing in range, or ``""``.

    Wrong units: most readings fall outside what depth cameras measure (:data:`SENSOR_RANGE_M`,
    widened to ``[min_depth, max_depth]`` where that is wider). Nothing in range: the readings
    are plausible, but under 1 % lie within ``[min_depth, max_depth]``: the range is named, not
    the scale. A range narrower than the scene is normal and says nothing.

    Args:
        depth_m: Depth in metres, NaN invalid (after the unit conversion).
        min_depth: Nearest depth used, metres.
        max_depth: Farthest depth used, metres.
        scale: The metres-per-unit used, named in the wrong-units warning.

    Returns:
        The warning, or ``""``.
    """
    z = np.asarray(depth_m)[::4, ::4]  # a 1/16 subsample is ample for a frame-wide statistic
    z = z[np.isfinite(z) & (z > 0)]
    if z.size < 16:
        return ""
    nearest, farthest = min(min_depth, SENSOR_RANGE_M[0]), max(max_depth, SENSOR_RANGE_M[1])
    far = float(np.mean(z > farthest))
    near = float(np.mean(z < nearest))
    median = float(np.median(z))
    if far > 0.5 or near > 0.5:
        unit = f" (depth.scale {scale:g} m per unit)" if scale is not None else ""
        return (
            f"depth looks implausible for its units{unit}: median {median:.3g} m, "
            f"{100 * far:.0f}% of readings beyond {farthest:g} m and {100 * near:.0f}% nearer "
            f"than {nearest:g} m; check the depth scale"
        )
    if np.mean((z >= min_depth) & (z <= max_depth)) >= 0.01:
        return ""
    return (
        f"no depth reading lies within depth.min_depth..depth.max_depth ({min_depth:g}.."
        f"{max_depth:g} m): median {median:.3g} m, so no object gets 3D; widen the range if"
        " the objects lie there"
    )


def depth_to_metres(array: np.ndarray, encoding: str, scale: float | None = None) -> np.ndarray:
    """Convert a depth image to float32 metres with NaN for invalid pixels.

    ``16UC1``/``mono16`` are millimetres with 0 invalid; ``32FC1`` is metres with NaN/inf invalid
    (zero and negative values are also treated as invalid, which some drivers emit).

    Args:
        array: Depth pixels as returned by :func:`spatialthinker_ros.core.images.image_to_numpy`.
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
