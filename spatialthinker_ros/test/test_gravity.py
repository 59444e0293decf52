"""The scene's up direction measured from depth (core/gravity.py): on rendered rooms seen by a
pitched and rolled camera, and on the real frames (five views of one room agree once carried into
one world frame by their poses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from real_rgbd import REAL_RGBD_DIR, load_real_frames

from spatialthinker_ros.core.camera import CameraIntrinsics
from spatialthinker_ros.core.gravity import UpEstimate, estimate_up, levelling_rotation, scene_up

K = CameraIntrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)


def _rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Camera -> world rotation of a camera pitched down by ``pitch`` and rolled by ``roll``
    (world and a level camera share axes: x right, y down, z forward)."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    pitch = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return pitch @ roll


def _room(rotation: np.ndarray, height: float = 1.2, wall: float | None = 4.0) -> np.ndarray:
    """Depth (metres) of a floor ``height`` below the camera and a wall ``wall`` ahead."""
    rows, cols = np.mgrid[0 : K.height, 0 : K.width].astype(np.float64)
    rays = np.stack([(cols - K.cx) / K.fx, (rows - K.cy) / K.fy, np.ones_like(cols)], axis=-1)
    world = rays @ rotation.T
    depth = np.full(rows.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where(world[..., 1] > 1e-6, height / world[..., 1], np.inf)
        depth = np.minimum(depth, floor)
        if wall is not None:
            depth = np.minimum(depth, np.where(world[..., 2] > 1e-6, wall / world[..., 2], np.inf))
    depth[~np.isfinite(depth) | (depth > 8.0)] = np.nan
    return depth.astype(np.float32)


def _angle(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(np.clip(cos, -1.0, 1.0)))


@pytest.mark.parametrize(("pitch", "roll"), [(0, 0), (15, 0), (30, 0), (40, 0), (25, 10), (0, -15)])
def test_up_of_a_rendered_room_for_a_pitched_and_rolled_camera(pitch: float, roll: float) -> None:
    rotation = _rotation(pitch, roll)
    up = estimate_up(_room(rotation), K)
    assert isinstance(up, UpEstimate)
    truth = rotation.T @ np.array([0.0, -1.0, 0.0])
    assert _angle(up.vector, truth) < 1.0
    assert up.tilt_deg == pytest.approx(_angle(truth, (0, -1, 0)), abs=1.0)
    # Noise of a structured-light camera (1.5 mm at 1 m, growing with z^2) changes little.
    noisy = _room(rotation)
    rng = np.random.default_rng(0)
    noisy = noisy + rng.normal(0.0, 1.5e-3, noisy.shape) * noisy**2
    assert _angle(estimate_up(noisy, K).vector, truth) < 2.0


def test_no_estimate_without_a_horizontal_surface() -> None:
    # A camera facing a wall, nothing else: no way to tell, so no estimate (the caller keeps
    # the camera's -y); all-invalid depth likewise.
    wall = np.full((K.height, K.width), 2.0, np.float32)
    assert estimate_up(wall, K) is None
    assert estimate_up(np.full((K.height, K.width), np.nan, np.float32), K) is None
    # A floor seen at a grazing sliver only: too little support.
    sliver = _room(_rotation(0, 0), height=1.2, wall=1.5)
    sliver[: int(K.height * 0.97)] = 2.0
    assert estimate_up(sliver, K) is None


def test_depth_at_another_resolution_than_the_intrinsics() -> None:
    rotation = _rotation(20, 0)
    half = _room(rotation)[::2, ::2]
    up = estimate_up(half, K)  # K is for 640x480; the depth is 320x240
    assert up is not None
    assert _angle(up.vector, rotation.T @ np.array([0.0, -1.0, 0.0])) < 1.0


@pytest.mark.parametrize("up", [(0, -1, 0), (0, -0.87, -0.5), (0.2, -0.9, -0.3), (1, 0, 0)])
def test_levelling_rotation_turns_up_to_minus_y(up) -> None:
    rotation = levelling_rotation(up)
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    unit = np.asarray(up, float) / np.linalg.norm(up)
    assert np.allclose(rotation @ unit, (0, -1, 0), atol=1e-9)
    if up == (0, -1, 0):
        assert np.allclose(rotation, np.eye(3))


def _quaternion_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    x, y, z, w = qx, qy, qz, qw
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_five_views_of_a_real_room_agree_on_up_in_the_world_frame() -> None:
    # Each view measures up in its own camera frame; the poses (camera -> world) carry them into
    # one frame, where one room has one up: the views agree within 2 degrees although the camera
    # moved 1.6 m and turned between them.
    frames = [f for f in load_real_frames() if f.name.startswith("dining")]
    poses = np.loadtxt(REAL_RGBD_DIR / "dining_5frames" / "pose.txt")
    world = []
    for frame, pose in zip(frames, poses, strict=True):
        up = estimate_up(frame.depth_m, frame.intrinsics)
        assert up is not None, frame.name
        assert 5.0 < up.tilt_deg < 30.0  # a hand-held Kinect looking a little down
        world.append(_quaternion_matrix(*pose[3:]) @ np.asarray(up.vector))
    mean = np.mean(world, axis=0)
    assert max(_angle(w, mean) for w in world) < 2.0


def test_the_tum_office_camera_looks_down_at_the_desks() -> None:
    (frame,) = [f for f in load_real_frames() if f.name.startswith("tum")]
    up = estimate_up(frame.depth_m, frame.intrinsics)
    assert up is not None
    # Pitched down (up leans towards the camera's -z), hardly rolled.
    assert 20.0 < up.tilt_deg < 40.0
    assert up.vector[2] < -0.3 and abs(up.vector[0]) < 0.1


def test_a_camera_looking_straight_down_needs_the_down_policy() -> None:
    # A manipulation camera over a table: the table's normal points at the camera (-z), 90 deg
    # from the -y a level camera assumes, so 'measured' finds nothing and keeps -y; 'down'
    # searches around -z and finds the table's normal, 8 deg off for a camera pitched 82 deg.
    rotation = _rotation(82, 0)
    table = _room(rotation, height=0.8, wall=None)
    truth = rotation.T @ np.array([0.0, -1.0, 0.0])
    assert scene_up(table, K, "measured") is None
    down = scene_up(table, K, "down")
    assert down is not None and down.measured
    assert _angle(down.vector, truth) < 1.0
    assert "deg from the camera's -y" in down.describe()
    # Nothing to measure: 'down' keeps the camera's -z and says so.
    blank = scene_up(np.full((K.height, K.width), np.nan, np.float32), K, "down")
    assert blank == UpEstimate((0.0, 0.0, -1.0), 90.0, 0.0, measured=False)
    assert "relations.up 'down'" in blank.describe()
    # 'level' never measures: a pitched room keeps the camera's -y.
    assert scene_up(_room(_rotation(30, 0)), K, "level") is None
    with pytest.raises(ValueError, match=r"relations\.up must be one of measured, level, down"):
        scene_up(table, K, "sideways")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    depth=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
        elements=st.one_of(
            st.floats(-5, 20, width=32),
            st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e-30, 3e38]),
        ),
    ),
    policy=st.sampled_from(["measured", "level", "down"]),
)
def test_any_depth_gives_a_unit_up_or_none_and_never_raises(depth, policy) -> None:
    # The camera sends what it sends: NaN, inf, negative, tiny or huge values, odd sizes.
    up = scene_up(depth, CameraIntrinsics(30.0, 30.0, 20.0, 15.0, 40, 30), policy)
    if up is not None:
        assert np.linalg.norm(up.vector) == pytest.approx(1.0)
        assert all(math.isfinite(v) for v in up.vector) and 0.0 <= up.tilt_deg <= 180.0
    if policy == "level":
        assert up is None
    if policy == "down":
        assert up is not None  # measured, or the camera's -z
