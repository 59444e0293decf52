"""Synthetic RGB-D scenes with known ground truth, for tests and the demo.

Axis-aligned boxes and planes (a box with one zero size) float in front of a background wall at
known poses. Every pixel's ray is cast against every shape (vectorised slab test, no per-pixel
Python), so depth is exact before noise; colour gets flat per-object colours with per-face
shading. Depth then receives depth-proportional Gaussian noise (``noise_base + noise_rel * z``
metres, ToF / structured-light like) and holes (random dropouts plus a few rectangular patches),
and is delivered in both ROS encodings: ``depth_mm`` (16UC1, uint16 mm, 0 invalid) and ``depth_m``
(32FC1, float32 m, NaN invalid). Depth can be rendered at another resolution than colour (a
registered depth image of the same view), by ray-casting again with the rescaled intrinsics.

:func:`room_view` renders the depth of an empty room (floor, walls, ceiling) seen by a pitched
and rolled camera, with the room's true up in the camera frame, for the up estimate.

Each :class:`SyntheticObject` carries the true 3D centre and size of the *whole* object and the 2D
box (colour pixels, edge coordinates) of its *visible* pixels, plus how much of it is occluded or
cut by the image border, so tests can compare only what is measurable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spatialthinker_ros.core.camera import CameraIntrinsics

__all__ = [
    "DEMO_INTRINSICS",
    "ObjectSpec",
    "RoomView",
    "SyntheticObject",
    "SyntheticScene",
    "demo_objects",
    "demo_scene",
    "render_scene",
    "room_view",
]

#: 640x480 camera with an off-centre principal point (so centre/principal-point mix-ups show).
DEMO_INTRINSICS = CameraIntrinsics(fx=525.0, fy=525.0, cx=341.3, cy=229.7, width=640, height=480)


@dataclass(frozen=True)
class ObjectSpec:
    """An axis-aligned box (or a plane: one size zero) to render.

    Attributes:
        label: Human-readable label.
        center: True centre ``(x, y, z)`` in metres, camera optical frame.
        size: ``(dx, dy, dz)`` in metres; a zero entry makes a plane.
        colour: RGB uint8 colour.
    """

    label: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    colour: tuple[int, int, int] = (200, 60, 60)

    @property
    def kind(self) -> str:
        """``"plane"`` when a size is zero, else ``"box"``."""
        return "plane" if min(self.size) == 0 else "box"


@dataclass(frozen=True)
class SyntheticObject:
    """Ground truth of one rendered object.

    Attributes:
        id: Stable id (``"obj<index>"``).
        label: Its label.
        bbox: ``(x1, y1, x2, y2)`` of its visible pixels in colour-image pixels (edges), or
            ``None`` when nothing of it is visible.
        center: True 3D centre of the whole object (metres, optical frame).
        size: True ``(dx, dy, dz)``.
        kind: ``"box"`` or ``"plane"``.
        visible_pixels: Colour pixels where it is the nearest surface.
        occluded_fraction: Share of its in-image projection hidden by nearer objects.
        truncated: Whether its projection crosses the image border.
    """

    id: str
    label: str
    bbox: tuple[float, float, float, float] | None
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    kind: str = "box"
    visible_pixels: int = 0
    occluded_fraction: float = 0.0
    truncated: bool = False


@dataclass(frozen=True)
class SyntheticScene:
    """A rendered scene.

    Attributes:
        rgb: ``HxWx3`` uint8 RGB colour image.
        depth_m: Depth in metres (float32, NaN holes), at the depth resolution.
        depth_mm: Depth in millimetres (uint16, 0 holes), at the depth resolution.
        intrinsics: Colour-camera intrinsics (``intrinsics.scaled(*depth size)`` for depth).
        objects: Ground truth, one per spec, in order.
        depth_exact: Noise- and hole-free depth in metres at the depth resolution.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    depth_mm: np.ndarray
    intrinsics: CameraIntrinsics
    objects: list[SyntheticObject]
    depth_exact: np.ndarray

    @property
    def depth_intrinsics(self) -> CameraIntrinsics:
        """Intrinsics of the depth image."""
        h, w = self.depth_m.shape
        return self.intrinsics.scaled(w, h)


def _cast(
    specs: Sequence[ObjectSpec], cam: CameraIntrinsics, wall_depth: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Ray-cast the shapes: depth, index of the nearest object (-1 wall), hit axis, own masks."""
    u = (np.arange(cam.width) - cam.cx) / cam.fx
    v = (np.arange(cam.height) - cam.cy) / cam.fy
    # Ray direction (u, v, 1): the ray parameter t equals the depth z.
    dirs = [u[None, :], v[:, None], np.ones((1, 1))]
    depth = np.full((cam.height, cam.width), float(wall_depth))
    index = np.full((cam.height, cam.width), -1, dtype=np.intp)
    axis = np.full((cam.height, cam.width), 2, dtype=np.intp)
    own: list[np.ndarray] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, spec in enumerate(specs):
            lo_t, hi_t = [], []
            for a in range(3):
                lo = spec.center[a] - spec.size[a] / 2.0
                hi = spec.center[a] + spec.size[a] / 2.0
                t1, t2 = lo / dirs[a], hi / dirs[a]
                lo_t.append(np.minimum(t1, t2))
                hi_t.append(np.maximum(t1, t2))
            near = np.stack(np.broadcast_arrays(*lo_t))
            far = np.broadcast_arrays(*hi_t)
            t_near = near.max(axis=0)
            t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
            hit = (t_near <= t_far) & (t_near > 0) & np.isfinite(t_near)
            own.append(hit)
            closer = hit & (t_near < depth)
            depth[closer] = t_near[closer]
            index[closer] = i
            axis[closer] = near.argmax(axis=0)[closer]
    return depth, index, axis, own


def render_scene(
    specs: Sequence[ObjectSpec],
    intrinsics: CameraIntrinsics = DEMO_INTRINSICS,
    *,
    depth_size: tuple[int, int] | None = None,
    wall_depth: float = 5.0,
    noise_base: float = 0.001,
    noise_rel: float = 0.0025,
    hole_fraction: float = 0.02,
    hole_patches: int = 4,
    seed: int = 0,
) -> SyntheticScene:
    """Render colour and depth of ``specs`` in front of a wall.

    Args:
        specs: Shapes to render, in the camera optical frame.
        intrinsics: Colour camera.
        depth_size: ``(width, height)`` of the depth image; defaults to the colour size.
        wall_depth: Depth of the fronto-parallel background wall in metres.
        noise_base: Depth noise standard deviation at zero range, metres.
        noise_rel: Depth noise standard deviation per metre of range.
        hole_fraction: Fraction of depth pixels dropped at random.
        hole_patches: Number of small rectangular holes.
        seed: Random seed (rendering is deterministic for a seed).

    Returns:
        The scene with ground truth.
    """
    rng = np.random.default_rng(seed)
    cam = intrinsics
    depth_c, index_c, axis_c, own_c = _cast(specs, cam, wall_depth)
    # The random draws come in this order (colour noise, then depth noise and holes), so a
    # seed renders the same scene as it always has.
    rgb = _colour(specs, cam, index_c, axis_c, rng)
    objects = [
        _ground_truth(i, spec, cam, index_c == i, int(own_c[i].sum()))
        for i, spec in enumerate(specs)
    ]
    # Depth: same view, possibly another resolution (registered depth).
    if depth_size is None or tuple(depth_size) == cam.size:
        exact = depth_c
    else:
        exact, _, _, _ = _cast(specs, cam.scaled(*depth_size), wall_depth)
    depth_m, depth_mm = _sensor_depth(
        exact,
        rng,
        noise_base=noise_base,
        noise_rel=noise_rel,
        hole_fraction=hole_fraction,
        hole_patches=hole_patches,
    )
    return SyntheticScene(rgb, depth_m, depth_mm, cam, objects, exact.astype(np.float32))


def _colour(
    specs: Sequence[ObjectSpec],
    cam: CameraIntrinsics,
    index: np.ndarray,
    axis: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Flat colours, shaded per face so box edges are visible, a little sensor noise."""
    palette = np.array([s.colour for s in specs] + [(170, 170, 160)], dtype=np.float64)
    shade = np.array([0.7, 0.85, 1.0])[axis]
    rgb = palette[index] * shade[:, :, None]
    wall = index < 0
    rgb[wall] *= (0.8 + 0.2 * np.linspace(0, 1, cam.width))[None, :, None].repeat(cam.height, 0)[
        wall
    ]
    rgb += rng.normal(0.0, 3.0, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _ground_truth(
    i: int, spec: ObjectSpec, cam: CameraIntrinsics, mask: np.ndarray, unoccluded: int
) -> SyntheticObject:
    """What is true and measurable of object ``i``, from its visible ``mask`` and the pixel
    count ``unoccluded`` its shape would cover alone."""
    visible = int(mask.sum())
    bbox = None
    if visible:
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        bbox = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    corners = np.array(
        [
            [spec.center[a] + sgn[a] * spec.size[a] / 2.0 for a in range(3)]
            for sgn in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).T.reshape(-1, 3)
        ]
    )
    uv = cam.project(corners)
    truncated = bool(
        (uv[:, 0] < -0.5).any()
        or (uv[:, 0] > cam.width - 0.5).any()
        or (uv[:, 1] < -0.5).any()
        or (uv[:, 1] > cam.height - 0.5).any()
    )
    return SyntheticObject(
        id=f"obj{i}",
        label=spec.label,
        bbox=bbox,
        center=tuple(float(c) for c in spec.center),
        size=tuple(float(s) for s in spec.size),
        kind=spec.kind,
        visible_pixels=visible,
        occluded_fraction=1.0 - visible / unoccluded if unoccluded else 0.0,
        truncated=truncated,
    )


def _sensor_depth(
    exact: np.ndarray,
    rng: np.random.Generator,
    *,
    noise_base: float,
    noise_rel: float,
    hole_fraction: float,
    hole_patches: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact depth as a sensor delivers it: noisy, with holes, in metres and in millimetres."""
    noisy = exact + rng.normal(0.0, 1.0, exact.shape) * (noise_base + noise_rel * exact)
    holes = rng.random(exact.shape) < hole_fraction
    h, w = exact.shape
    for _ in range(hole_patches):
        ph, pw = rng.integers(2, max(3, h // 40)), rng.integers(2, max(3, w // 40))
        y0, x0 = rng.integers(0, h - ph), rng.integers(0, w - pw)
        holes[y0 : y0 + ph, x0 : x0 + pw] = True
    depth_m = noisy.astype(np.float32)
    depth_m[holes] = np.nan
    depth_mm = np.clip(np.round(noisy * 1000.0), 0, 65535).astype(np.uint16)
    depth_mm[holes] = 0
    return depth_m, depth_mm


def demo_objects() -> list[ObjectSpec]:
    """The demo scene's shapes: boxes and planes from 0.5 m to 4 m, one partly occluded.

    Every box has ``dz == min(dx, dy)``, so the lifting's default ``"box"`` depth policy holds
    for them; the poster (a plane facing the camera) needs the ``"visible"`` policy and the table
    top (a horizontal plane) recedes in depth. The white pillar hides part of the blue box.
    """
    return [
        ObjectSpec("small red box", (-0.02, 0.0, 0.55), (0.08, 0.10, 0.08), (210, 40, 40)),
        ObjectSpec("green box", (-0.45, 0.10, 1.5), (0.30, 0.25, 0.25), (40, 170, 60)),
        ObjectSpec("blue box", (0.45, -0.20, 2.5), (0.40, 0.40, 0.40), (40, 70, 200)),
        ObjectSpec("yellow box", (-0.90, -0.60, 3.8), (0.50, 0.50, 0.50), (220, 200, 40)),
        ObjectSpec("poster", (1.00, 0.50, 3.0), (0.50, 0.40, 0.0), (200, 120, 200)),
        ObjectSpec("table top", (0.00, 0.55, 2.0), (0.60, 0.0, 0.50), (150, 100, 60)),
        ObjectSpec("white pillar", (0.56, -0.15, 1.85), (0.16, 0.60, 0.16), (235, 235, 235)),
    ]


def demo_scene(
    intrinsics: CameraIntrinsics = DEMO_INTRINSICS,
    depth_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> SyntheticScene:
    """The demo scene (see :func:`demo_objects`), rendered with default noise and holes.

    Args:
        intrinsics: Colour camera.
        depth_size: Depth resolution; defaults to the colour resolution.
        seed: Random seed.

    Returns:
        The scene.
    """
    return render_scene(demo_objects(), intrinsics, depth_size=depth_size, seed=seed)


@dataclass(frozen=True)
class RoomView:
    """An empty room's depth as a pitched and rolled camera sees it.

    Attributes:
        depth_m: ``HxW`` float32 depth in metres, NaN where no surface lies within 8 m.
        depth_mm: The same in millimetres (uint16, 0 invalid), as a 16UC1 camera sends it.
        up: The room's up direction in the camera's optical frame (a unit vector).
    """

    depth_m: np.ndarray
    depth_mm: np.ndarray
    up: tuple[float, float, float]


def room_view(
    intrinsics: CameraIntrinsics = DEMO_INTRINSICS,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
    *,
    floor: float = 1.2,
    ahead: float | None = 4.0,
    left: float | None = None,
    right: float | None = None,
    ceiling: float | None = None,
) -> RoomView:
    """Render the room around a camera pitched down by ``pitch_deg`` and then rolled about its
    optical axis by ``roll_deg`` (positive: the image turns clockwise; at 90 degrees the
    camera's -y points to the room's right).

    The room's frame has a level camera's axes (x right, y down, z forward) and the camera at its
    origin; every distance is from the camera, in metres, and None leaves that surface out.

    Args:
        intrinsics: The camera.
        pitch_deg: Downward pitch.
        roll_deg: Roll about the optical axis, after the pitch.
        floor: Height of the camera above the floor.
        ahead: Distance to the wall ahead.
        left: Distance to the wall on the left.
        right: Distance to the wall on the right.
        ceiling: Height of the ceiling above the camera.

    Returns:
        The depth and the true up.
    """
    p, r = np.radians(pitch_deg), np.radians(roll_deg)
    pitch = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    roll = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    to_room = pitch @ roll  # camera -> room rotation
    k = intrinsics
    rows, cols = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    # Pixel centres at whole coordinates (CameraInfo's K); rays with z = 1 in the camera frame.
    rays = np.stack([(cols - k.cx) / k.fx, (rows - k.cy) / k.fy, np.ones_like(cols)], axis=-1)
    room = rays @ to_room.T
    depth = np.full(rows.shape, np.inf)
    # Each plane: (axis, signed distance along it); a ray meets it where it heads that way.
    planes = [(1, floor), (2, ahead), (0, None if left is None else -left), (0, right)]
    planes.append((1, None if ceiling is None else -ceiling))
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, distance in planes:
            if distance is None:
                continue
            t = distance / room[..., axis]
            depth = np.minimum(depth, np.where(t > 0, t, np.inf))
    depth[~np.isfinite(depth) | (depth > 8.0)] = np.nan
    depth_m = depth.astype(np.float32)
    depth_mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype(np.uint16)
    up = to_room.T @ np.array([0.0, -1.0, 0.0])
    return RoomView(depth_m, depth_mm, (float(up[0]), float(up[1]), float(up[2])))
