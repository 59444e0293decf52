"""Camera intrinsics that pass the basic checks but give garbage (issue 17, Low 9).

A focal length of 1e-300 or 1e-30 pixels, or a region of interest 4e9 pixels off, is positive,
finite and "valid", yet puts objects at NaN or 1e32 m. Such camera_info is refused with a
reason, and whatever still gets through cannot publish non-finite or absurd geometry: lifting
bounds every object by depth.max_depth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from node_harness import camera_info_for
from sensor_msgs.msg import CameraInfo

from spatialthinker_ros.core.camera import CameraIntrinsics, check_camera_info
from spatialthinker_ros.core.lifting import lift_boxes
from spatialthinker_ros.core.synthetic_scene import demo_scene

SCENE = demo_scene()


def _info(**changes: float) -> CameraInfo:
    info = camera_info_for(SCENE, "cam")
    k = list(info.k)
    for name, index in (("fx", 0), ("cx", 2), ("fy", 4), ("cy", 5)):
        if name in changes:
            k[index] = changes[name]
    info.k = k
    return info


def test_the_scene_camera_passes() -> None:
    check_camera_info(_info())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"fx": 1e-300}, "fx=1e-300, fy=525 is implausible for a 640x480 image"),
        ({"fx": 1e-30, "fy": 1e-30}, "implausible for a 640x480 image (at least 0.64 px"),
        ({"cx": 1e12}, "principal point (1e+12, 229.7) lies far outside the 640x480 image"),
        ({"cy": -5000.0}, "principal point (341.3, -5000) lies far outside"),
    ],
)
def test_garbage_intrinsics_are_refused_with_a_reason(changes: dict, reason: str) -> None:
    with pytest.raises(ValueError, match="CameraInfo") as error:
        CameraIntrinsics.from_camera_info(_info(**changes))
    assert reason in str(error.value)


def test_a_region_of_interest_outside_the_image_is_refused() -> None:
    info = _info()
    info.roi.x_offset, info.roi.width, info.roi.height = 4_000_000_000, 320, 240
    with pytest.raises(ValueError, match=r"region of interest 320x240 at \(4000000000, 0\)"):
        CameraIntrinsics.from_camera_info(info)
    info.roi.x_offset = 320  # one that fits still works
    assert CameraIntrinsics.from_camera_info(info).size == (320, 240)


@pytest.mark.parametrize(
    "intrinsics",
    [
        CameraIntrinsics(1e-300, 1e-300, 320.0, 240.0, 640, 480),
        CameraIntrinsics(1e-30, 1e-30, 320.0, 240.0, 640, 480),
        CameraIntrinsics(554.0, 554.0, 320.0 - 4e9, 240.0, 640, 480),
    ],
)
def test_lifting_never_publishes_non_finite_or_absurd_geometry(intrinsics) -> None:
    # Intrinsics built directly skip the camera_info checks; lifting is the last line.
    boxes = [obj.bbox for obj in SCENE.objects[:3]]
    depth = SCENE.depth_mm.astype(np.float32) / 1000.0
    depth[depth == 0] = np.nan
    for lifted in lift_boxes(boxes, depth, intrinsics, max_depth=10.0):
        assert not lifted.has_3d and lifted.center is None and lifted.size is None
        if intrinsics.fx > 1e-100:  # 1e-300 turns every sample into NaN: none is kept
            assert "implausible 3D geometry" in lifted.reason
            assert "depth.max_depth 10 m" in lifted.reason


def test_plausible_geometry_is_still_lifted() -> None:
    boxes = [obj.bbox for obj in SCENE.objects[:3]]
    depth = SCENE.depth_mm.astype(np.float32) / 1000.0
    depth[depth == 0] = np.nan
    lifted = lift_boxes(boxes, depth, SCENE.intrinsics)
    assert all(item.has_3d for item in lifted)
    assert all(math.isfinite(c) and abs(c) < 20 for item in lifted for c in item.center)
