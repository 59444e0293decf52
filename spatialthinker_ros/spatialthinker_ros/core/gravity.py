"""Which way is up: from TF when a gravity-aligned frame is known, else measured from the depth
image (numpy only, no ROS).

With ``relations.up: tf`` and a ``gravity_frame`` (z up per REP 103: base_link, odom, map) the
node hands in that frame's z in the camera frame at the image's stamp (:func:`tf_up`): exact,
where the depth can only estimate. Without the transform, or without a gravity frame, the
estimate below is the fallback.

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

Past 45 degrees of pitch or roll a wall's normal enters the first cone and can win. A floor or
table top is seen from above, the side its normal points up to; a wall that passes for one is
mostly seen from the other side (the camera pitched steeply down at a wall ahead sees it facing
back towards it, away from the up it would give). So the estimate stands only when most of its
surfaces are seen from the side it calls up; else it is *unsure*: up is taken as the prior
direction (the camera's ``-y``), and the estimate says why. A ceiling seen alone is unsure too,
and right in direction: a small loss. A camera rolled by 90 degrees beside a wall below its image
centre sees that wall as a floor is seen, exactly: depth alone cannot tell, and only a camera
held within about 45 degrees of level (or ``relations.up: down`` for one looking down steeply)
gets a measured up.
"""

from __future__ import annotations

import math
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
# Least share of those normals whose surface is seen from the side the estimate calls up (a
# floor from above): a family seen mostly from below is a wall or a ceiling (see the module
# docstring).
MIN_SEEN_FROM_ABOVE = 0.5
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
        measured: Whether it was measured from the depth (else it is the direction searched
            around: the camera's -z of a camera looking straight down, see
            :data:`UP_POLICIES`, or the camera's -y when the estimate was unsure).
        unsure: Why the depth's estimate was not used (then ``vector`` is the direction searched
            around); empty otherwise.
        tf_frame: The gravity-aligned frame whose z this is (up from TF), or "".
    """

    vector: tuple[float, float, float]
    tilt_deg: float
    support: float
    measured: bool = True
    unsure: str = ""
    tf_frame: str = ""

    @property
    def source(self) -> str:
        """Where it came from: ``tf:<frame>``, ``depth`` or ``camera`` (an axis taken as up)."""
        if self.tf_frame:
            return f"tf:{self.tf_frame}"
        return "depth" if self.measured and not self.unsure else "camera"

    def describe(self) -> str:
        """One line for evidence and logs."""
        if self.tf_frame:
            return f"up from TF ('{self.tf_frame}' z), {self.tilt_deg:.0f} deg from the camera's -y"
        if self.unsure:
            axis = "-z" if self.vector == LOOKING_DOWN_UP else "-y"
            return f"up taken as the camera's {axis}, not measured: {self.unsure}"
        if not self.measured:
            return "up is the camera's -z (relations.up 'down': the camera looks straight down)"
        return (
            f"up measured from the horizontal surfaces, {self.tilt_deg:.0f} deg from the"
            " camera's -y"
        )


CAMERA_UP = (0.0, -1.0, 0.0)
# Up for a camera looking straight down: towards it, its -z.
LOOKING_DOWN_UP = (0.0, 0.0, -1.0)
#: Where up comes from (the ``relations.up`` parameter): ``tf`` takes the z of ``gravity_frame``
#: from TF when the node has it for the image's stamp, else does as ``measured``;
#: ``measured`` searches the depth around the camera's -y and keeps the camera's -y when it
#: finds too little horizontal surface (or only surfaces seen from below: a wall before a camera
#: pitched past 45 degrees); ``level`` takes the camera's -y as it is (a level camera); ``down``
#: searches around the camera's -z, for a camera that looks straight down on a table, and keeps
#: -z when unsure.
UP_POLICIES = ("tf", "measured", "level", "down")


def check_up_policy(policy: str) -> None:
    """Raise ``ValueError`` naming the choices unless ``policy`` is one of :data:`UP_POLICIES`."""
    if policy not in UP_POLICIES:
        raise ValueError(f"relations.up must be one of {', '.join(UP_POLICIES)}, not {policy!r}")


def _normals(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (N x 3, either sign) of the continuous surfaces on a coarse grid, and
    whether each points back towards the camera (N, the side of its surface the camera sees)."""
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
    towards = np.einsum("ijk,ijk->ij", normals, points[1:-1, 1:-1]) < 0
    return normals[ok] / length[ok][:, None], towards[ok]


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

    Returns:
        The estimate; one with ``unsure`` set (and ``prior`` as its vector) when the surfaces
        found are mostly seen from below: walls or a ceiling, not floors (see the module
        docstring); None when too little surface faces near ``prior``.
    """
    if depth_m.ndim != 2 or min(depth_m.shape) < 8:
        return None
    normals, towards = _normals(depth_m, intrinsics)
    if len(normals) < MIN_NORMALS:
        return None
    start = np.asarray(prior, dtype=np.float64) / np.linalg.norm(prior)
    flip = normals @ start < 0
    normals[flip] *= -1.0  # each surface's normal on the prior's side
    towards ^= flip  # ... and whether that side is the one the camera sees
    up = _mean_shift(normals, start)
    if up is None:
        return None
    supporting = normals @ up > np.cos(np.radians(CONES_DEG[-1]))
    support = int(np.count_nonzero(supporting)) / len(normals)
    if np.count_nonzero(supporting) < MIN_NORMALS or support < MIN_SUPPORT:
        return None
    # Seen from above: the normal on up's side points back towards the camera.
    from_above = float(np.mean(towards[supporting]))
    if from_above <= MIN_SEEN_FROM_ABOVE:
        return _unsure(start, support, from_above)
    return UpEstimate((float(up[0]), float(up[1]), float(up[2])), _tilt(up), float(support))


def _mean_shift(normals: np.ndarray, up: np.ndarray) -> np.ndarray | None:
    """The mean direction of ``normals`` that a mean shift from ``up`` through the narrowing
    cones settles on, or None when a cone holds too few of them."""
    for cone in CONES_DEG:
        near = normals[normals @ up > np.cos(np.radians(cone))]
        if len(near) < MIN_NORMALS:
            return None
        mean = near.mean(axis=0)
        up = mean / np.linalg.norm(mean)
    return up


def _tilt(up: np.ndarray) -> float:
    """Degrees between ``up`` and the camera's -y."""
    return float(np.degrees(np.arccos(np.clip(-up[1], -1.0, 1.0))))


def _unsure(prior: np.ndarray, support: float, from_above: float) -> UpEstimate:
    """The prior direction, saying why the estimate found around it was not used."""
    advice = (
        "; a camera looking down steeply needs relations.up 'down'"
        if tuple(prior) == CAMERA_UP
        else ""
    )
    reason = (
        f"the surfaces found are seen from below ({100 * (1 - from_above):.0f} %; a wall before"
        " a camera pitched or rolled past about 45 deg, or a ceiling), not from above as floors"
        f" and table tops are{advice}"
    )
    vector = (float(prior[0]), float(prior[1]), float(prior[2]))
    return UpEstimate(vector, _tilt(prior), float(support), measured=False, unsure=reason)


def tf_up(vector: tuple[float, float, float] | np.ndarray, frame: str) -> UpEstimate:
    """Up from TF: ``vector`` is ``frame``'s z axis expressed in the camera's optical frame.

    Raises:
        ValueError: A vector that is not finite or has no length.
    """
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v)) if v.shape == (3,) else math.nan
    if not (math.isfinite(norm) and norm > 1e-9):
        raise ValueError(f"TF's up from '{frame}' must be a finite 3-vector, got {vector!r}")
    v = v / norm
    return UpEstimate((float(v[0]), float(v[1]), float(v[2])), _tilt(v), 0.0, False, "", frame)


def scene_up(
    depth_m: np.ndarray | None,
    intrinsics: CameraIntrinsics | None,
    policy: str,
    from_tf: UpEstimate | None = None,
) -> UpEstimate | None:
    """The up direction ``policy`` (one of :data:`UP_POLICIES`) gives for a frame; None: the
    camera's -y.

    Args:
        depth_m: The depth in metres (None: nothing to measure; the camera's -y or TF's up).
        intrinsics: The depth's intrinsics.
        policy: One of :data:`UP_POLICIES`.
        from_tf: Up from TF (:func:`tf_up`) when the node has it; used by ``tf``.

    Raises:
        ValueError: An unknown policy.
    """
    check_up_policy(policy)
    if policy == "tf" and from_tf is not None:
        return from_tf
    if policy == "level" or depth_m is None or intrinsics is None:
        return None
    if policy in ("measured", "tf"):
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
