"""Rigid transforms and the TF buffer (core/transforms.py), against known transforms: a camera
1.2 m up and pitched 30 deg down (hand-computed points), a robot driving at 1 m/s while turning,
sampled at 50 Hz (interpolation equals the truth), tf2's stamp-0 and no-extrapolation rules,
errors that name the frames, and scipy's Rotation and Slerp as the oracle for random trees."""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation, Slerp

from spatialthinker_ros.core.transforms import (
    Placement,
    RigidTransform,
    TransformBuffer,
    TransformError,
)

# The robot of issue 21: the camera 1.2 m up, pitched 30 deg down; REP 103 optical convention.
CAMERA_HEIGHT = 1.2
# A positive rotation about base_link's y (left) turns its x (forward) down towards -z.
PITCH_DOWN_30 = (0.0, math.sin(math.radians(15.0)), 0.0, math.cos(math.radians(15.0)))
# camera_link -> optical: optical z (forward) = link x, optical x (right) = -y, optical y (down)
# = -z.
LINK_TO_OPTICAL = (-0.5, 0.5, -0.5, 0.5)
OPTICAL = "camera_color_optical_frame"
C30, S30 = math.cos(math.radians(30.0)), math.sin(math.radians(30.0))

# The driving robot: odom -> base_link at 50 Hz, in ROS-like stamps (1.7e9 s).
ORIGIN = 1_700_000_000.0
RATE_HZ = 50.0
SPEED = 1.0
HEADING = math.radians(30.0)
YAW_RATE = 0.4  # rad/s: over the 10 s the yaw passes pi, where the stored quaternion flips sign
YAW0 = 0.5


def _camera_tree(buffer: TransformBuffer) -> None:
    buffer.set_transform(
        "base_link", "camera_link", 5.0, (0, 0, CAMERA_HEIGHT), PITCH_DOWN_30, True
    )
    buffer.set_transform("camera_link", OPTICAL, 5.0, (0, 0, 0), LINK_TO_OPTICAL, static=True)


def _yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """A yaw as a quaternion with w >= 0, as many drivers send it: the sign flips at pi."""
    q = (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))
    return q if q[3] >= 0.0 else (0.0, 0.0, -q[2], -q[3])


def _truth(stamp: float) -> RigidTransform:
    """odom <- base_link of the driving robot at ``stamp`` (straight line, constant yaw rate)."""
    d = stamp - ORIGIN
    xyz = (SPEED * math.cos(HEADING) * d, SPEED * math.sin(HEADING) * d, 0.0)
    return RigidTransform(np.array(xyz), Rotation.from_rotvec([0.0, 0.0, YAW0 + YAW_RATE * d]))


def _sample_stamps(seconds: float = 10.0) -> list[float]:
    return [ORIGIN + k / RATE_HZ for k in range(int(seconds * RATE_HZ) + 1)]


def _drive(buffer: TransformBuffer, stamps: list[float]) -> None:
    for stamp in stamps:
        d = stamp - ORIGIN
        xyz = (SPEED * math.cos(HEADING) * d, SPEED * math.sin(HEADING) * d, 0.0)
        buffer.set_transform("odom", "base_link", stamp, xyz, _yaw_quaternion(YAW0 + YAW_RATE * d))


def _robot(cache_time: float = 10.0) -> TransformBuffer:
    buffer = TransformBuffer(cache_time)
    _camera_tree(buffer)
    _drive(buffer, _sample_stamps())
    return buffer


def _assert_close(actual: RigidTransform, expected: RigidTransform, atol: float = 1e-9) -> None:
    assert actual.is_close(expected, atol), (
        f"translation {actual.translation} vs {expected.translation}, rotation "
        f"{actual.quaternion} vs {expected.quaternion}"
    )


# RigidTransform


def test_rigid_transform_applies_rotates_composes_and_inverts() -> None:
    half = math.sqrt(0.5)
    turn = RigidTransform.from_xyz_quat((1, 2, 3), (0, 0, 2, 2))  # 90 deg about z, normalised
    assert turn.quaternion == pytest.approx((0, 0, half, half))
    np.testing.assert_allclose(turn.apply([1, 0, 0]), [1, 3, 3], atol=1e-12)
    np.testing.assert_allclose(turn.rotate([1, 0, 0]), [0, 1, 0], atol=1e-12)
    # Any leading shape of points, kept.
    points = np.arange(24, dtype=float).reshape(2, 4, 3)
    moved = turn.apply(points)
    assert moved.shape == (2, 4, 3)
    np.testing.assert_allclose(moved[1, 2], turn.apply(points[1, 2]), atol=1e-12)
    # self * other: other first.
    shift = RigidTransform.from_xyz_quat((1, 0, 0), (0, 0, 0, 1))
    np.testing.assert_allclose((turn * shift).apply([0, 0, 0]), [1, 3, 3], atol=1e-12)
    np.testing.assert_allclose((shift * turn).apply([0, 0, 0]), [2, 2, 3], atol=1e-12)
    np.testing.assert_allclose(turn.inverse().apply(turn.apply(points)), points, atol=1e-12)
    _assert_close(turn * turn.inverse(), RigidTransform.identity())
    assert not (turn * turn).is_close(turn)
    np.testing.assert_array_equal(RigidTransform.identity().apply(points), points)
    # Immutable, as a frozen dataclass promises.
    with pytest.raises(ValueError):
        turn.translation[0] = 5.0
    placement = Placement("base_link", turn)
    assert placement.frame_id == "base_link" and placement.transform is turn


@pytest.mark.parametrize(
    ("xyz", "quat", "problem"),
    [
        ((0, float("nan"), 0), (0, 0, 0, 1), r"translation \(x, y, z\) is not finite"),
        ((0, 0), (0, 0, 0, 1), r"translation \(x, y, z\) must be 3 numbers"),
        ((0, 0, 0), (0, 0, 0, 0), "zero norm"),
        ((0, 0, 0), (0, 0, float("inf"), 1), r"quaternion \(x, y, z, w\) is not finite"),
        ((0, 0, 0), ("a", 0, 0, 1), "must be 4 numbers"),
    ],
)
def test_rigid_transform_rejects_bad_values(xyz: tuple, quat: tuple, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RigidTransform.from_xyz_quat(xyz, quat)


def test_rigid_transform_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="translation must be 3 finite numbers"):
        RigidTransform(np.array([1.0, 2.0]), Rotation.identity())
    with pytest.raises(ValueError, match="translation must be 3 finite numbers"):
        RigidTransform(np.array([1.0, 2.0, np.inf]), Rotation.identity())
    with pytest.raises(ValueError, match="one scipy Rotation"):
        RigidTransform(np.zeros(3), Rotation.identity(2))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        RigidTransform.identity().apply([1.0, 2.0])


# The pitched camera, by hand


def test_pitched_camera_chain_matches_hand_computed_points() -> None:
    buffer = TransformBuffer()
    _camera_tree(buffer)
    optical_to_base = buffer.lookup("base_link", OPTICAL, 0.0)
    # Optical (x right, y down, z forward) -> camera_link (x forward, y left, z up) -> pitched
    # down 30 deg: forward (1, 0, 0) becomes (cos 30, 0, -sin 30), then 1.2 m up.
    points = [
        (0.0, 0.0, 2.0),  # 2 m straight ahead
        (1.0, 0.0, 2.0),  # and 1 m to the right
        (0.0, 0.5, 2.0),  # and 0.5 m down in the image
    ]
    expected = [
        (2 * C30, 0.0, CAMERA_HEIGHT - 2 * S30),
        (2 * C30, -1.0, CAMERA_HEIGHT - 2 * S30),
        (2 * C30 - 0.5 * S30, 0.0, CAMERA_HEIGHT - 2 * S30 - 0.5 * C30),
    ]
    np.testing.assert_allclose(optical_to_base.apply(points), expected, atol=1e-12)
    # The optical axes in base_link: the rotation's columns.
    np.testing.assert_allclose(
        optical_to_base.matrix, [[0, -S30, C30], [-1, 0, 0], [0, -C30, -S30]], atol=1e-12
    )
    # base_link's up seen from the camera: up and back in the image (what the depth-measured up
    # finds on such a camera, 30 deg tilt).
    base_to_optical = buffer.lookup(OPTICAL, "base_link", 0.0)
    np.testing.assert_allclose(base_to_optical.rotate([0, 0, 1]), [0, -C30, -S30], atol=1e-12)
    np.testing.assert_allclose(base_to_optical.apply(expected), points, atol=1e-12)
    # One edge: camera_link's origin in base_link.
    np.testing.assert_allclose(
        buffer.lookup("base_link", "camera_link", 0.0).translation, [0, 0, CAMERA_HEIGHT]
    )


def test_quaternions_are_normalised_when_given() -> None:
    buffer = TransformBuffer()
    buffer.set_transform("a", "b", 1.0, (1, 2, 3), (0, 0, 2, 2))  # 90 deg about z, |q| = 2.8
    buffer.set_transform("b", "c", 1.0, (1, 0, 0), (0, 0, 0, 5), static=True)
    got = buffer.lookup("a", "c", 1.0)
    np.testing.assert_allclose(got.translation, [1, 3, 3], atol=1e-12)
    np.testing.assert_allclose(got.quaternion, [0, 0, math.sqrt(0.5), math.sqrt(0.5)])


def test_lookup_to_itself_is_the_identity_even_without_tf() -> None:
    buffer = TransformBuffer()
    _assert_close(buffer.lookup(OPTICAL, OPTICAL, 3.0), RigidTransform.identity(), atol=0.0)
    assert buffer.can_transform(OPTICAL, "/" + OPTICAL, 0.0) == ""


# The driving robot: interpolation, stamp 0, static edges


def test_lookup_between_samples_equals_the_truth() -> None:
    buffer = _robot()
    stamps = _sample_stamps()
    # Between samples (the 0.93 fractions straddle the yaw passing pi, where the stored
    # quaternions flip sign), and exactly on samples.
    k_pi = next(k for k, s in enumerate(stamps) if YAW0 + YAW_RATE * (s - ORIGIN) > math.pi) - 1
    asked = [stamps[k] + f / RATE_HZ for k in (0, 137, k_pi, 498, 499) for f in (0.1, 0.5, 0.93)]
    asked += [stamps[0], stamps[250], stamps[-1]]
    for stamp in asked:
        _assert_close(buffer.lookup("odom", "base_link", stamp), _truth(stamp))
        # Through the whole chain: a point the camera saw, at the image's stamp.
        seen = buffer.lookup("odom", OPTICAL, stamp).apply([0.3, -0.2, 2.5])
        camera = buffer.lookup("base_link", OPTICAL, stamp).apply([0.3, -0.2, 2.5])
        np.testing.assert_allclose(seen, _truth(stamp).apply(camera), rtol=0, atol=1e-9)


def test_stamp_zero_is_the_latest_and_the_image_stamp_is_not() -> None:
    buffer = _robot()
    newest = _sample_stamps()[-1]
    _assert_close(buffer.lookup("odom", OPTICAL, 0.0), buffer.lookup("odom", OPTICAL, newest))
    # A frame stamped 100 ms before the newest transform: 10 cm behind at 1 m/s.
    image_stamp = newest - 0.1
    at_image = buffer.lookup("odom", "base_link", image_stamp)
    _assert_close(at_image, _truth(image_stamp))
    latest = buffer.lookup("odom", "base_link", 0.0)
    assert np.linalg.norm(latest.translation - at_image.translation) == pytest.approx(0.1)


def test_stamp_zero_is_the_latest_common_time_of_the_chain() -> None:
    buffer = _robot()
    newest = _sample_stamps()[-1]
    # map -> odom at 2 Hz, newest 0.75 s behind odom -> base_link's newest.
    for k in range(5):
        buffer.set_transform("map", "odom", newest - 2.75 + 0.5 * k, (k, 0, 0), (0, 0, 0, 1))
    # An older edge off the chain does not hold the chain back.
    buffer.set_transform("odom", "charger", newest - 5.0, (1, 1, 0), (0, 0, 0, 1))
    common = newest - 0.75
    expected = buffer.lookup("map", OPTICAL, common)
    _assert_close(buffer.lookup("map", OPTICAL, 0.0), expected, atol=0.0)
    _assert_close(buffer.lookup(OPTICAL, "map", 0.0), expected.inverse())
    # An edge whose history starts after the others' newest: no common time.
    buffer.set_transform("base_link", "arm", newest - 0.5, (0, 0, 1), (0, 0, 0, 1))
    buffer.set_transform("base_link", "arm", newest - 0.4, (0, 0, 1), (0, 0, 0, 1))
    with pytest.raises(TransformError, match=r"extrapolation into the past.*'base_link' -> 'arm'"):
        buffer.lookup("map", "arm", 0.0)


def test_static_edges_hold_at_every_time() -> None:
    buffer = TransformBuffer(cache_time=1.0)
    _camera_tree(buffer)  # stamped 5.0
    expected = buffer.lookup("base_link", OPTICAL, 5.0)
    for stamp in (0.0, -3.0, 1.0, 4.99, 1e9, ORIGIN):
        _assert_close(buffer.lookup("base_link", OPTICAL, stamp), expected, atol=0.0)
    # Mixed with a dynamic edge, only that edge limits the times.
    _drive(buffer, _sample_stamps(1.0))
    assert buffer.can_transform("odom", OPTICAL, ORIGIN + 0.5) == ""
    assert "extrapolation into the future" in buffer.can_transform("odom", OPTICAL, ORIGIN + 2)


# Errors that name the frames


def test_extrapolation_into_the_future_and_past_names_the_edge_and_stamps() -> None:
    buffer = TransformBuffer()
    _camera_tree(buffer)
    for k in range(12):
        buffer.set_transform("odom", "base_link", 10.0 + 0.2 * k, (0.2 * k, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TransformError) as future:
        buffer.lookup("odom", OPTICAL, 12.3)
    assert str(future.value) == (
        "extrapolation into the future: asked 12.300 s, newest 'odom' -> 'base_link' is 12.200 s"
    )
    with pytest.raises(TransformError) as past:
        buffer.lookup(OPTICAL, "odom", 9.5)
    assert str(past.value) == (
        "extrapolation into the past: asked 9.500 s, oldest 'odom' -> 'base_link' is 10.000 s"
    )
    # Stamps that milliseconds would print alike are printed finer.
    reason = buffer.can_transform("odom", "base_link", 12.2004)
    assert reason.endswith("asked 12.200400 s, newest 'odom' -> 'base_link' is 12.200000 s")
    reason = buffer.can_transform("odom", "base_link", 12.2000004)
    assert reason.endswith("asked 12.200000400 s, newest 'odom' -> 'base_link' is 12.200000000 s")


def test_unknown_frames_and_separate_trees_are_named() -> None:
    buffer = TransformBuffer()
    with pytest.raises(TransformError, match=r"^frames 'odom' and 'a' do not exist \(no frames"):
        buffer.lookup("odom", "a", 0.0)
    _camera_tree(buffer)
    buffer.set_transform("map", "odom", 1.0, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TransformError) as missing:
        buffer.lookup("base_footprint", OPTICAL, 0.0)
    assert str(missing.value) == (
        "frame 'base_footprint' does not exist (known: base_link, camera_color_optical_frame, "
        "camera_link, map, odom)"
    )
    with pytest.raises(TransformError, match=r"^frames 'a' and 'b' do not exist"):
        buffer.lookup("a", "b", 0.0)
    with pytest.raises(TransformError) as apart:
        buffer.lookup("map", OPTICAL, 0.0)
    assert str(apart.value) == (f"no path from '{OPTICAL}' to 'map': they are in separate trees")
    assert buffer.can_transform("map", OPTICAL, 0.0) == str(apart.value)
    # A robot's long list of frames is cut short.
    for k in range(20):
        buffer.set_transform("base_link", f"wheel_{k:02d}", 1.0, (0, 0, 0), (0, 0, 0, 1), True)
    assert buffer.can_transform("nope", "base_link", 0.0).endswith(", ...)")


# Bad input


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("", "b", 1.0, (0, 0, 0), (0, 0, 0, 1)), "parent frame id is empty"),
        (("a", "/", 1.0, (0, 0, 0), (0, 0, 0, 1)), "child frame id is empty"),
        (("a", "a", 1.0, (0, 0, 0), (0, 0, 0, 1)), "parent and child are both 'a'"),
        (("/a", "a", 1.0, (0, 0, 0), (0, 0, 0, 1)), "parent and child are both 'a'"),
        (("a", "b", float("nan"), (0, 0, 0), (0, 0, 0, 1)), "stamp of 'a' -> 'b' is not finite"),
        (("a", "b", 1.0, (0, math.nan, 0), (0, 0, 0, 1)), r"'a' -> 'b'.*translation.*not finite"),
        (("a", "b", 1.0, (0, 0, 0), (0, 0, 0, 0)), r"'a' -> 'b'.*quaternion.*zero norm"),
        (("a", "b", 1.0, (0, 0, 0), (0, 0, math.inf, 1)), r"quaternion.*not finite"),
        (("a", "b", 1.0, (0, 0, 0), (0, 0, 1)), r"quaternion.*must be 4 numbers, got 3"),
        ((None, "b", 1.0, (0, 0, 0), (0, 0, 0, 1)), "parent frame id must be a string"),
    ],
)
def test_bad_transforms_raise_value_error_naming_the_problem(args: tuple, problem: str) -> None:
    buffer = TransformBuffer()
    with pytest.raises(ValueError, match=problem):
        buffer.set_transform(*args)
    assert buffer.frames() == []


def test_loops_and_bad_lookup_stamps_and_cache_times_are_refused() -> None:
    buffer = TransformBuffer()
    buffer.set_transform("a", "b", 1.0, (0, 0, 0), (0, 0, 0, 1))
    buffer.set_transform("b", "c", 1.0, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ValueError, match="'c' -> 'a' would close a loop"):
        buffer.set_transform("c", "a", 1.0, (0, 0, 0), (0, 0, 0, 1))
    assert buffer.can_transform("a", "c", 1.0) == ""
    with pytest.raises(ValueError, match="lookup stamp is not finite"):
        buffer.lookup("a", "c", math.nan)
    assert "not finite" in buffer.can_transform("a", "c", math.inf)
    with pytest.raises(ValueError, match="cache_time"):
        TransformBuffer(cache_time=-1.0)


# History: order, duplicates, trimming, reparenting


def test_out_of_order_stamps_give_the_same_lookups() -> None:
    in_order = _robot()
    shuffled_stamps = _sample_stamps()
    random.Random(3).shuffle(shuffled_stamps)
    shuffled = TransformBuffer()
    _camera_tree(shuffled)
    _drive(shuffled, shuffled_stamps)
    for stamp in (ORIGIN + 0.011, ORIGIN + 3.333, ORIGIN + 9.99, 0.0):
        _assert_close(
            shuffled.lookup("odom", OPTICAL, stamp), in_order.lookup("odom", OPTICAL, stamp), 0.0
        )
    # A second sample at a stamp replaces the first.
    shuffled.set_transform("odom", "base_link", ORIGIN + 1.0, (7, 7, 7), (0, 0, 0, 1))
    np.testing.assert_array_equal(
        shuffled.lookup("odom", "base_link", ORIGIN + 1.0).translation, [7, 7, 7]
    )
    # Between it and the next sample, from the replacement (a kept duplicate would be used).
    after = _truth(ORIGIN + 1.02).translation
    np.testing.assert_allclose(
        shuffled.lookup("odom", "base_link", ORIGIN + 1.01).translation, (after + 7.0) / 2.0
    )
    _assert_close(shuffled.lookup("odom", "base_link", ORIGIN + 1.03), _truth(ORIGIN + 1.03))


def test_cache_time_trims_history_behind_the_newest_stamp() -> None:
    buffer = TransformBuffer(cache_time=2.0)
    _drive(buffer, _sample_stamps())
    newest = _sample_stamps()[-1]
    _assert_close(buffer.lookup("odom", "base_link", newest - 1.99), _truth(newest - 1.99))
    reason = buffer.can_transform("odom", "base_link", newest - 2.01)
    assert reason == (
        f"extrapolation into the past: asked {newest - 2.01:.3f} s, oldest 'odom' -> "
        f"'base_link' is {newest - 2.0:.3f} s"
    )
    # A late sample older than the cache is dropped, not kept.
    buffer.set_transform("odom", "base_link", newest - 5.0, (0, 0, 0), (0, 0, 0, 1))
    assert "extrapolation into the past" in buffer.can_transform("odom", "base_link", newest - 5.0)


def test_a_child_has_one_parent_the_latest_given() -> None:
    buffer = TransformBuffer()
    _camera_tree(buffer)
    buffer.set_transform("/mount", "camera_link", 1.0, (0, 0, 0.1), (0, 0, 0, 1), static=True)
    assert buffer.frames() == ["base_link", "camera_color_optical_frame", "camera_link", "mount"]
    assert "separate trees" in buffer.can_transform("base_link", OPTICAL, 0.0)
    np.testing.assert_allclose(buffer.lookup("mount", "camera_link", 0.0).translation, [0, 0, 0.1])
    # Static to dynamic: the history starts afresh.
    buffer.set_transform("mount", "camera_link", 2.0, (0, 0, 0.2), (0, 0, 0, 1))
    buffer.set_transform("mount", "camera_link", 3.0, (0, 0, 0.3), (0, 0, 0, 1))
    np.testing.assert_allclose(buffer.lookup("mount", OPTICAL, 2.5).translation, [0, 0, 0.25])
    assert "extrapolation into the future" in buffer.can_transform("mount", OPTICAL, 3.5)


def test_frames_newest_stamp_and_clear() -> None:
    buffer = TransformBuffer()
    assert buffer.newest_stamp() is None
    _camera_tree(buffer)
    assert buffer.newest_stamp() is None  # static edges only
    buffer.set_transform("/odom", "/base_link", 12.0, (0, 0, 0), (0, 0, 0, 1))
    buffer.set_transform("map", "odom", 11.0, (0, 0, 0), (0, 0, 0, 1))
    assert buffer.newest_stamp() == 12.0
    assert buffer.frames() == [
        "base_link",
        "camera_color_optical_frame",
        "camera_link",
        "map",
        "odom",
    ]
    assert buffer.can_transform("/map", "odom", 11.0) == ""
    buffer.clear()
    assert buffer.frames() == [] and buffer.newest_stamp() is None
    assert "no frames known" in buffer.can_transform("map", OPTICAL, 0.0)


def _pausing_in_set_transform(pause_s: float) -> Callable:
    """A trace function that pauses the thread at every line of ``set_transform``: another
    thread then runs while an edit is half made (unless a lock keeps it out)."""

    def pause_lines(frame: FrameType, event: str, arg: object) -> Callable | None:
        if event == "line":
            time.sleep(pause_s)
        return pause_lines

    def calls(frame: FrameType, event: str, arg: object) -> Callable | None:
        code = frame.f_code
        if code.co_name == "set_transform" and code.co_filename.endswith("transforms.py"):
            return pause_lines
        return None

    return calls


def test_lookups_never_see_a_half_made_edit() -> None:
    """A writer adds samples (trimming one old sample at each) and is paused at every line of
    set_transform, while lookups run: every answer is the truth at the stamp asked. A lookup
    that read an edge between the writer's two list edits (stamps, then poses) would get a pose
    of another stamp, or none."""
    buffer = TransformBuffer(cache_time=0.1)
    stamps = _sample_stamps(2.0)
    _drive(buffer, stamps[:10])
    errors: list[str] = []
    checked = 0

    def write() -> None:
        sys.settrace(_pausing_in_set_transform(2e-4))
        try:
            _drive(buffer, stamps[10:50])
        finally:
            sys.settrace(None)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while writer.is_alive() and len(errors) < 5:
            # The newest, and between the two samples before it (in the 0.1 s history).
            for back in (0.0, 1.5 / RATE_HZ):
                stamp = buffer.newest_stamp() - back
                try:
                    got = buffer.lookup("odom", "base_link", stamp)
                except Exception as exc:  # a torn read: IndexError, or a stamp it lacks
                    errors.append(f"at {stamp}: {exc!r}")
                    continue
                checked += 1
                if not got.is_close(_truth(stamp)):
                    errors.append(f"at {stamp}: {got.translation} {got.quaternion}")
    finally:
        writer.join()
    assert errors == []
    assert checked > 0


# Random trees, with scipy as the oracle


@st.composite
def _forests(draw: st.DrawFn) -> tuple[TransformBuffer, dict[str, tuple[str, list, bool]]]:
    """A random forest of up to 7 frames; static edges and dynamic ones sampled at 1 s and 2 s."""
    size = draw(st.integers(2, 7))
    finite = st.floats(-50.0, 50.0, allow_nan=False)
    unit = st.floats(-1.0, 1.0, allow_nan=False)
    buffer = TransformBuffer()
    edges: dict[str, tuple[str, list, bool]] = {}
    for child in range(1, size):
        parent = draw(st.integers(-1, child - 1))  # -1: a root of a tree of its own
        if parent < 0:
            continue
        static = draw(st.booleans())
        poses = []
        for stamp in (1.0,) if static else (1.0, 2.0):
            xyz = draw(st.tuples(finite, finite, finite))
            quat = draw(st.tuples(unit, unit, unit, unit))
            assume(math.sqrt(sum(v * v for v in quat)) > 0.1)
            buffer.set_transform(f"f{parent}", f"f{child}", stamp, xyz, quat, static)
            poses.append(RigidTransform.from_xyz_quat(xyz, quat))
        edges[f"f{child}"] = (f"f{parent}", poses, static)
    return buffer, edges


def _to_root(frame: str, edges: dict, sample: int) -> tuple[str, RigidTransform]:
    """root <- frame, composed with scipy's Rotation (RigidTransform's * )."""
    transform = RigidTransform.identity()
    while frame in edges:
        parent, poses, static = edges[frame]
        transform = poses[0 if static else sample] * transform
        frame = parent
    return frame, transform


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(_forests(), st.data())
def test_lookup_there_and_back_is_the_identity(forest: tuple, data: st.DataObject) -> None:
    buffer, _edges = forest
    frames = buffer.frames()
    assume(len(frames) >= 2)
    a, b = data.draw(st.sampled_from(frames)), data.draw(st.sampled_from(frames))
    stamp = data.draw(st.one_of(st.just(0.0), st.floats(1.0, 2.0)))
    reason = buffer.can_transform(a, b, stamp)
    if reason:
        assert "separate trees" in reason and f"'{a}'" in reason and f"'{b}'" in reason
        return
    there_and_back = buffer.lookup(a, b, stamp) * buffer.lookup(b, a, stamp)
    _assert_close(there_and_back, RigidTransform.identity())


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(_forests(), st.data())
def test_lookup_matches_scipy_composition_along_the_tree(
    forest: tuple, data: st.DataObject
) -> None:
    buffer, edges = forest
    frames = buffer.frames()
    assume(len(frames) >= 2)
    a, b = data.draw(st.sampled_from(frames)), data.draw(st.sampled_from(frames))
    sample = data.draw(st.sampled_from([0, 1]))
    root_a, a_to_root = _to_root(a, edges, sample)
    root_b, b_to_root = _to_root(b, edges, sample)
    assume(root_a == root_b)
    _assert_close(buffer.lookup(a, b, 1.0 + sample), a_to_root.inverse() * b_to_root)


@settings(deadline=None, max_examples=200)
@given(
    st.tuples(*[st.floats(-1.0, 1.0)] * 4),
    st.tuples(*[st.floats(-1.0, 1.0)] * 4),
    st.floats(0.0, 1.0),
)
def test_interpolation_is_scipy_slerp(q0: tuple, q1: tuple, f: float) -> None:
    assume(np.linalg.norm(q0) > 0.1 and np.linalg.norm(q1) > 0.1)
    r0, r1 = Rotation.from_quat(q0), Rotation.from_quat(q1)
    # Half a turn apart, the shorter way round is not unique.
    assume((r0.inv() * r1).magnitude() < math.pi - 1e-3)
    buffer = TransformBuffer()
    buffer.set_transform("a", "b", 1.0, (0, 0, 0), q0)
    buffer.set_transform("a", "b", 2.0, (2, -4, 6), q1)
    stamp = 1.0 + f
    expected = Slerp([1.0, 2.0], Rotation.concatenate([r0, r1]))(stamp)
    got = buffer.lookup("a", "b", stamp)
    np.testing.assert_allclose(got.translation, np.array([2, -4, 6]) * (stamp - 1.0), atol=1e-12)
    assert (got.rotation.inv() * expected).magnitude() < 1e-9
