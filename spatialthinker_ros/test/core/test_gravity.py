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
from scipy.spatial.transform import Rotation

from spatialthinker_ros.core.camera import CameraIntrinsics
from spatialthinker_ros.core.gravity import (
    UpEstimate,
    estimate_up,
    levelling_rotation,
    scene_up,
    tf_up,
)
from spatialthinker_ros.core.lifting import Lifted3D
from spatialthinker_ros.core.relation_check import Verdict, check_relation
from spatialthinker_ros.core.synthetic_scene import room_view
from spatialthinker_ros.core.transforms import TransformBuffer

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
    with pytest.raises(ValueError, match=r"relations\.up must be one of tf, measured, level, down"):
        scene_up(table, K, "sideways")


@pytest.mark.parametrize(("pitch", "ahead", "floor"), [(50, 2.0, 1.2), (52, 1.6, 1.0)])
def test_a_wall_before_a_steeply_pitched_camera_is_not_taken_for_the_floor(
    pitch: float, ahead: float, floor: float
) -> None:
    # Issue 26: pitched past 45 deg, the wall ahead's normal (90 - pitch deg from the camera's
    # -y) entered the search and won, 90 deg off, and the evidence said "up measured from the
    # horizontal surfaces". The camera sees that wall facing back at it, not from above as a
    # floor is seen: unsure, the camera's -y kept, and why.
    room = room_view(K, pitch, ahead=ahead, floor=floor)
    up = scene_up(room.depth_m, K, "measured")
    assert up is not None and up.unsure and not up.measured
    assert up.vector == (0.0, -1.0, 0.0)
    assert up.describe().startswith("up taken as the camera's -y, not measured: the surfaces")
    assert "relations.up 'down'" in up.describe()
    assert "measured from the horizontal surfaces" not in up.describe()
    # The setting such a camera needs: 'down' searches around its -z and finds the floor.
    down = scene_up(room.depth_m, K, "down")
    assert down is not None and down.measured and not down.unsure
    assert _angle(down.vector, room.up) < 1.0


@pytest.mark.parametrize(("roll", "side"), [(90, "right"), (-90, "left"), (60, "right")])
def test_a_wall_above_a_rolled_camera_is_not_taken_for_the_floor(roll: float, side: str) -> None:
    # Rolled 90 deg beside a wall on the side its -y points to: the wall, seen from below, was
    # taken for the floor. (A wall on the other side, below the image centre, is seen exactly as
    # a floor is: depth alone cannot tell; see the module docstring.)
    room = room_view(K, 0.0, roll, ahead=4.0, **{side: 1.0})
    up = estimate_up(room.depth_m, K)
    assert up is not None and up.unsure and up.vector == (0.0, -1.0, 0.0)


def test_the_unsure_up_is_named_in_the_evidence_of_relations_about_gravity() -> None:
    from spatialthinker_ros.core.lifting import Lifted3D

    up = estimate_up(room_view(K, 50, ahead=2.0).depth_m, K)
    cup = Lifted3D((0.0, 0.0, 1.0), (0.1, 0.1, 0.1), 50, 1.0, "", 0.95, (0.0, 0.0, 0.95))
    table = Lifted3D((0.0, 0.3, 1.0), (0.8, 0.4, 0.6), 500, 1.0, "", 0.7, (0.0, 0.3, 0.7))
    check = check_relation("cup.1", "above", "table.1", cup, table, up)
    assert check.evidence.endswith(up.describe())
    # Unchanged where the floor is seen from above: a 30 deg pitch is measured.
    level = estimate_up(room_view(K, 30, ahead=2.0).depth_m, K)
    assert level is not None and level.measured and not level.unsure


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
    policy=st.sampled_from(["tf", "measured", "level", "down"]),
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


def _pitched_robot() -> TransformBuffer:
    """base_link -> camera_link (1.2 m up, pitched 30 deg down) -> optical frame (REP 103)."""
    tf = TransformBuffer()
    pitch = Rotation.from_euler("y", 30, degrees=True)  # +y pitch turns base_link's x down
    tf.set_transform("base_link", "camera_link", 0.0, (0.0, 0.0, 1.2), pitch.as_quat(), True)
    optical = Rotation.from_euler("ZX", [-90, -90], degrees=True)  # x right, y down, z forward
    tf.set_transform("camera_link", "optical", 0.0, (0.0, 0.0, 0.0), optical.as_quat(), True)
    return tf


def test_up_from_tf_judges_above_and_below_where_the_depth_cannot() -> None:
    # Issue 21: the robot's camera, pitched 30 deg down, faces a wall with nothing horizontal in
    # view: the depth measures no up and the camera's -y stands in, 30 deg off. The mug is
    # 0.3 m higher than the box but 1.2 m nearer: along the camera's -y the farther box reads
    # higher, so "mug above box" was contradicted. TF knows up exactly.
    tf = _pitched_robot()
    camera_from_base = tf.lookup("optical", "base_link", 0.0)
    world = {"mug.1": (1.0, 0.0, 1.0), "box.1": (2.2, 0.0, 0.7)}  # base_link x forward, z up
    lifted = {
        name: Lifted3D(
            tuple(camera_from_base.apply(np.array(p))), (0.1, 0.1, 0.1), 200, 1.0, "", None, None
        )
        for name, p in world.items()
    }
    wall = np.full((K.height, K.width), 1.5, np.float32)  # a wall square to the camera
    measured = scene_up(wall, K, "tf")  # no gravity frame known: measured, and it finds none
    assert measured is None
    up = tf_up(camera_from_base.rotate(np.array([0.0, 0.0, 1.0])), "base_link")
    assert up.source == "tf:base_link" and "up from TF ('base_link' z)" in up.describe()
    assert abs(up.tilt_deg - 30.0) < 1e-6
    assert scene_up(wall, K, "tf", from_tf=up) is up
    # 'measured' ignores TF: the policy says where up comes from.
    assert scene_up(wall, K, "measured", from_tf=up) is None
    for predicate, subject, obj in (("above", "mug.1", "box.1"), ("below", "box.1", "mug.1")):
        by_camera = check_relation(subject, predicate, obj, lifted[subject], lifted[obj], None)
        by_tf = check_relation(subject, predicate, obj, lifted[subject], lifted[obj], up)
        assert by_camera.verdict == Verdict.CONTRADICTED, by_camera.evidence
        assert by_tf.verdict == Verdict.CONSISTENT, by_tf.evidence
        assert by_tf.evidence.endswith(up.describe())


def test_tf_up_refuses_a_vector_without_direction() -> None:
    with pytest.raises(ValueError, match="TF's up from 'odom' must be a finite 3-vector"):
        tf_up((0.0, 0.0, 0.0), "odom")
    with pytest.raises(ValueError, match="finite"):
        tf_up((np.nan, 0.0, 1.0), "odom")
