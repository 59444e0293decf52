"""Which way is up, measured from the depth image (numpy only, no ROS).

A robot's camera is rarely level: a head camera looks down at the table by 20-40 degrees. Words
like "above", "below" and "on" are about gravity, not about the image's rows, so the relation
check compares heights along the scene's up direction. Without TF (the package runs with no tf2
at all), the depth itself says where up is: floors, table tops, seats and shelves are the large
horizontal surfaces of an indoor scene, and their normals point up.

The estimate: surface normals on a coarse grid (cross products of neighbouring back-projected
points, only where the depth is continuous), each turned to the side of a prior direction; then
a mean shift from that prior (the camera's own up, ``-y``) through narrowing cones (45, 25, 12
and 8 degrees), so it settles on the dominant family of horizontal surfaces. Walls (normals 90
degrees from up) stay outside the first cone while the camera is pitched or rolled by less than
about 40 degrees. The estimate counts only when enough of the image supports it; otherwise there
is none and the caller keeps the camera's ``-y`` (a level camera). A camera looking straight
down searches around its ``-z`` instead (:data:`UP_POLICIES`, the ``relations.up`` parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialthinker_ros.core.camera import MAX_DEPTH_M, CameraIntrinsics

# Grid cells along the longer image side (a 640x480 frame: every 7th pixel).
GRID = 96
# Cone half-angles (degrees) of the mean shift, widest first.
CONES_DEG = (45.0, 25.0, 12.0, 8.0)
# Least share of the valid grid whose normal lies within the last cone of the estimate, and the
# least count of such normals: a table top filling a tenth of a frame is plenty.
MIN_SUPPORT = 0.05
MIN_NORMALS = 60
# Neighbours closer in depth than this fraction (plus 1 cm) count as one surface.
CONTINUITY = 0.05


@dataclass(frozen=True)
class UpEstimate:
    """The scene's up direction in the camera's optical frame.

    Attributes:
        vector: Unit vector ``(x, y, z)``; ``(0, -1, 0)`` for a level camera.
        tilt_deg: Angle between it and the camera's ``-y``.
        support: Share of the valid depth grid on surfaces facing this way (0 when not
            measured).
        measured: Whether it was measured from the depth (else it is the camera's -z of a
            camera looking straight down, see :data:`UP_POLICIES`).
    """

    vector: tuple[float, float, float]
    tilt_deg: float
    support: float
    measured: bool = True

    def describe(self) -> str:
        """One line for evidence and logs."""
        if not self.measured:
            return "up is the camera's -z (relations.up 'down': the camera looks straight down)"
        return (
            f"up measured from the horizontal surfaces, {self.tilt_deg:.0f} deg from the"
            " camera's -y"
        )


CAMERA_UP = (0.0, -1.0, 0.0)
# Up for a camera looking straight down: towards it, its -z.
LOOKING_DOWN_UP = (0.0, 0.0, -1.0)
#: Where up comes from (the ``relations.up`` parameter): ``measured`` searches the depth around
#: the camera's -y and keeps the camera's -y when it finds too little horizontal surface;
#: ``level`` takes the camera's -y as it is (a level camera); ``down`` searches around the
#: camera's -z, for a camera that looks straight down on a table, and keeps -z when unsure.
UP_POLICIES = ("measured", "level", "down")


def check_up_policy(policy: str) -> None:
    """Raise ``ValueError`` naming the choices unless ``policy`` is one of :data:`UP_POLICIES`."""
    if policy not in UP_POLICIES:
        raise ValueError(f"relations.up must be one of {', '.join(UP_POLICIES)}, not {policy!r}")


def _normals(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Unit normals (N x 3, either sign) of the continuous surfaces on a coarse grid."""
    height, width = depth_m.shape
    k = intrinsics.scaled(width, height)
    step = max(1, round(max(width, height) / GRID))
    z = np.asarray(depth_m[::step, ::step], dtype=np.float64)
    # Invalid depth (NaN, inf, <= 0, beyond any sensor) reads 0 and is never continuous.
    z = np.where(np.isfinite(z) & (z > 0) & (z < MAX_DEPTH_M), z, 0.0)
    rows, cols = np.mgrid[0:height:step, 0:width:step].astype(np.float64)
    # Pixel centres at whole coordinates, as CameraInfo's K has them.
    points = np.stack([(cols - k.cx) / k.fx * z, (rows - k.cy) / k.fy * z, z], axis=-1)
    normals = np.cross(points[1:-1, 2:] - points[1:-1, :-2], points[2:, 1:-1] - points[:-2, 1:-1])
    centre = z[1:-1, 1:-1]
    ok = centre > 0
    tolerance = CONTINUITY * centre + 0.01
    for neighbour in (z[1:-1, 2:], z[1:-1, :-2], z[2:, 1:-1], z[:-2, 1:-1]):
        ok &= (neighbour > 0) & (np.abs(neighbour - centre) < tolerance)
    length = np.linalg.norm(normals, axis=-1)
    ok &= (length > 0) & np.isfinite(length)
    return normals[ok] / length[ok][:, None]


def estimate_up(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    prior: tuple[float, float, float] = CAMERA_UP,
) -> UpEstimate | None:
    """The scene's up direction from a depth image, or None when the frame does not show
    enough horizontal surface to tell.

    Args:
        depth_m: ``HxW`` depth in metres, NaN (or <= 0) where invalid.
        intrinsics: Pinhole intrinsics of the depth image, at any resolution with its aspect
            ratio.
        prior: Camera-frame direction up is searched around (within 45 degrees): the
            camera's -y for a camera roughly level, its -z for one looking straight down.
    """
    if depth_m.ndim != 2 or min(depth_m.shape) < 8:
        return None
    normals = _normals(depth_m, intrinsics)
    if len(normals) < MIN_NORMALS:
        return None
    up = np.asarray(prior, dtype=np.float64) / np.linalg.norm(prior)
    normals[normals @ up < 0] *= -1.0  # each surface's normal on the prior's side
    for cone in CONES_DEG:
        near = normals[normals @ up > np.cos(np.radians(cone))]
        if len(near) < MIN_NORMALS:
            return None
        mean = near.mean(axis=0)
        up = mean / np.linalg.norm(mean)
    supporting = int(np.count_nonzero(normals @ up > np.cos(np.radians(CONES_DEG[-1]))))
    support = supporting / len(normals)
    if supporting < MIN_NORMALS or support < MIN_SUPPORT:
        return None
    tilt = float(np.degrees(np.arccos(np.clip(-up[1], -1.0, 1.0))))
    return UpEstimate((float(up[0]), float(up[1]), float(up[2])), tilt, float(support))


def scene_up(depth_m: np.ndarray, intrinsics: CameraIntrinsics, policy: str) -> UpEstimate | None:
    """The up direction ``policy`` (one of :data:`UP_POLICIES`) gives for a frame; None: the
    camera's -y.

    Raises:
        ValueError: An unknown policy.
    """
    check_up_policy(policy)
    if policy == "level":
        return None
    if policy == "measured":
        return estimate_up(depth_m, intrinsics)
    found = estimate_up(depth_m, intrinsics, prior=LOOKING_DOWN_UP)
    return found or UpEstimate(LOOKING_DOWN_UP, 90.0, 0.0, measured=False)


def levelling_rotation(up: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """The rotation (3x3) from the camera's optical frame to a levelled one: ``y`` points down
    along ``-up``, ``x`` is the camera's ``x`` made horizontal, ``z`` horizontal and forward.
    The identity for ``up = (0, -1, 0)``."""
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    down = -u
    x = np.array([1.0, 0.0, 0.0]) - u[0] * u
    if np.linalg.norm(x) < 1e-6:  # camera rolled by 90 degrees: its z made horizontal
        x = np.cross(down, np.array([0.0, 0.0, 1.0]))
    x = x / np.linalg.norm(x)
    forward = np.cross(x, down)
    return np.stack([x, down, forward])
