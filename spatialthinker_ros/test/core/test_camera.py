"""Tests of CameraInfo intrinsics, rescaling and depth units."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from spatialthinker_ros.core.camera import (
    CameraIntrinsics,
    aspect_mismatch,
    check_camera_info,
    depth_to_metres,
)
from spatialthinker_ros.geometry import CameraIntrinsics as FacadeIntrinsics


def _info(fx=600.0, fy=610.0, cx=330.5, cy=238.25, width=640, height=480) -> CameraInfo:
    msg = CameraInfo(width=width, height=height)
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.p = [fx * 0.9, 0.0, cx + 1, 0.0, 0.0, fy * 0.9, cy + 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def test_from_camera_info_reads_k() -> None:
    cam = CameraIntrinsics.from_camera_info(_info())
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (600.0, 610.0, 330.5, 238.25)
    assert cam.size == (640, 480)
    assert FacadeIntrinsics is CameraIntrinsics


def test_from_camera_info_can_use_p_for_rectified_images() -> None:
    cam = CameraIntrinsics.from_camera_info(_info(), use_projection=True)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx((540.0, 549.0, 331.5, 240.25))


def test_roi_and_binning() -> None:
    msg = _info()
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 320, 240
    cam = CameraIntrinsics.from_camera_info(msg)
    assert (cam.cx, cam.cy, cam.size) == (230.5, 198.25, (320, 240))
    msg = _info()
    msg.binning_x = msg.binning_y = 2
    cam = CameraIntrinsics.from_camera_info(msg)
    assert cam.size == (320, 240)
    assert cam == CameraIntrinsics.from_camera_info(_info()).scaled(320, 240)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"width": 0}, "zero size"),
        ({"height": 0}, "zero size"),
        ({"fx": 0.0}, "focal length must be positive"),
        ({"fy": -5.0}, "focal length must be positive"),
    ],
)
def test_invalid_camera_info_raises(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        CameraIntrinsics.from_camera_info(_info(**kwargs))
    assert needle in str(info.value)


def test_uncalibrated_camera_info_k_all_zeros() -> None:
    with pytest.raises(ValueError, match="all zeros"):
        check_camera_info(CameraInfo(width=640, height=480))


def test_scaled_keeps_the_projection_of_points_proportional() -> None:
    cam = CameraIntrinsics(600.0, 610.0, 330.5, 238.25, 640, 480)
    points = np.array([[0.3, -0.2, 1.5], [-1.0, 0.4, 3.0], [0.0, 0.0, 0.7]])
    for w, h in ((320, 240), (1280, 960), (424, 318)):
        small = cam.scaled(w, h)
        uv, uv2 = cam.project(points), small.project(points)
        # Pixel-centre coordinates map through the edges: (u + 0.5) * s - 0.5.
        np.testing.assert_allclose(uv2[:, 0], (uv[:, 0] + 0.5) * w / 640 - 0.5)
        np.testing.assert_allclose(uv2[:, 1], (uv[:, 1] + 0.5) * h / 480 - 0.5)
    assert cam.scaled(640, 480) is cam


def test_back_project_inverts_project() -> None:
    cam = CameraIntrinsics(600.0, 610.0, 330.5, 238.25, 640, 480)
    pts = np.array([[0.3, -0.2, 1.5], [-1.0, 0.4, 3.0]])
    uv = cam.project(pts)
    np.testing.assert_allclose(cam.back_project(uv[:, 0], uv[:, 1], pts[:, 2]), pts)


def test_aspect_mismatch() -> None:
    assert aspect_mismatch((640, 480), (320, 240)) is None
    assert aspect_mismatch((640, 480), (424, 318)) is None  # 0.05 % off, rounding
    reason = aspect_mismatch((640, 480), (640, 360))
    assert reason is not None and "aspect ratios disagree" in reason


def test_depth_to_metres_16uc1_and_mono16() -> None:
    raw = np.array([[0, 1500], [65535, 1]], np.uint16)
    for enc in ("16UC1", "mono16"):
        out = depth_to_metres(raw, enc)
        assert out.dtype == np.float32
        assert np.isnan(out[0, 0])
        np.testing.assert_allclose(out[[0, 1, 1], [1, 0, 1]], [1.5, 65.535, 0.001], rtol=1e-6)
    np.testing.assert_allclose(depth_to_metres(raw, "16UC1", scale=1e-4)[0, 1], 0.15)


def test_depth_to_metres_32fc1() -> None:
    raw = np.array([[np.nan, np.inf, -np.inf], [0.0, -1.0, 2.25]], np.float32)
    out = depth_to_metres(raw, "32FC1")
    assert np.isnan(out[0]).all() and np.isnan(out[1, :2]).all()
    assert out[1, 2] == pytest.approx(2.25)
    assert not np.isnan(raw[1, 2])  # input untouched


def test_depth_to_metres_errors() -> None:
    with pytest.raises(ValueError, match="unsupported depth encoding"):
        depth_to_metres(np.zeros((2, 2), np.uint8), "mono8")
    with pytest.raises(ValueError, match="integer array"):
        depth_to_metres(np.zeros((2, 2), np.float32), "16UC1")
    with pytest.raises(ValueError, match="positive"):
        depth_to_metres(np.zeros((2, 2), np.uint16), "16UC1", scale=0.0)
