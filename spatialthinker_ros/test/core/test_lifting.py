"""Unit tests of the 2D-to-3D lifting on small hand-built depth images."""

from __future__ import annotations

import numpy as np
import pytest

from spatialthinker_ros.core.camera import CameraIntrinsics
from spatialthinker_ros.core.lifting import Lifted3D
from spatialthinker_ros.core.synthetic_scene import ObjectSpec, SyntheticScene, render_scene
from spatialthinker_ros.geometry import LiftParams, lift_boxes

CAM = CameraIntrinsics(fx=500.0, fy=500.0, cx=159.5, cy=119.5, width=320, height=240)


def _wall(z: float = 4.0) -> np.ndarray:
    return np.full((240, 320), z, np.float32)


def test_flat_patch_gives_its_depth_and_size() -> None:
    depth = _wall()
    depth[100:140, 140:180] = 2.0  # 40 px at 2 m = 0.16 m
    (r,) = lift_boxes([(140, 100, 180, 140)], depth, CAM, depth_extent="visible")
    assert r.has_3d and r.reason == ""
    assert r.surface_depth == pytest.approx(2.0, abs=1e-6)
    assert r.size[0] == pytest.approx(0.16, rel=0.03) and r.size[1] == pytest.approx(0.16, rel=0.03)
    assert r.size[2] == pytest.approx(0.02)  # min_size: a flat patch has no visible depth
    assert r.center[0] == pytest.approx(0.0, abs=2e-3)  # centred on cx
    assert r.center[2] == pytest.approx(2.01, abs=1e-3)  # pushed back by half of dz
    assert r.fill == pytest.approx(1.0) and r.valid_pixels == 24 * 24


def test_box_policy_assumes_depth_like_the_smaller_lateral_extent() -> None:
    depth = _wall()
    depth[100:140, 140:200] = 2.0  # 0.24 x 0.16 m face
    (r,) = lift_boxes([(140, 100, 200, 140)], depth, CAM)
    assert r.size[2] == pytest.approx(r.size[1])
    assert r.center[2] == pytest.approx(2.0 + r.size[1] / 2, abs=1e-3)


def test_background_around_a_thin_object_does_not_drag_the_depth() -> None:
    # A pole 12 px wide inside a 40 px box: 70 % of the box shows the wall behind it.
    depth = _wall(3.0)
    depth[60:180, 154:166] = 1.2
    (r,) = lift_boxes([(140, 60, 180, 180)], depth, CAM)
    assert r.surface_depth == pytest.approx(1.2, abs=0.005)
    assert r.size[0] == pytest.approx(12 * 1.2 / 500, rel=0.15)
    assert r.fill < 0.45


def test_hollow_frame_keeps_the_frame_depth_with_background_in_the_middle() -> None:
    depth = _wall(3.5)
    depth[80:160, 120:200] = 1.5
    depth[95:145, 135:185] = 3.5  # hole: background visible through the middle
    (r,) = lift_boxes([(120, 80, 200, 160)], depth, CAM, depth_extent="visible")
    assert r.surface_depth == pytest.approx(1.5, abs=0.005)
    assert r.size[0] == pytest.approx(80 * 1.5 / 500, rel=0.05)


def test_foreground_occluder_from_the_side_does_not_drag_the_depth() -> None:
    depth = _wall(4.0)
    depth[80:160, 100:220] = 2.5
    depth[60:180, 184:230] = 1.0  # occluder covers 30 % of the box from the right
    (r,) = lift_boxes([(100, 80, 220, 160)], depth, CAM)
    assert r.surface_depth == pytest.approx(2.5, abs=0.005)
    assert r.size[0] == pytest.approx(84 * 2.5 / 500, rel=0.05)  # the visible part


def test_foreground_occluder_in_a_corner_does_not_drag_the_depth() -> None:
    depth = _wall(4.0)
    depth[80:160, 100:220] = 2.0
    depth[40:125, 40:165] = 0.9  # 30 % of the box, top-left
    (r,) = lift_boxes([(100, 80, 220, 160)], depth, CAM)
    assert r.surface_depth == pytest.approx(2.0, abs=0.005)


def test_occluder_in_the_middle_of_the_box_wins() -> None:
    # Documented limitation: a centred occluder cannot be told from the object.
    depth = _wall(4.0)
    depth[80:160, 100:220] = 2.0
    depth[60:180, 145:175] = 1.0
    (r,) = lift_boxes([(100, 80, 220, 160)], depth, CAM)
    assert r.surface_depth == pytest.approx(1.0, abs=0.005)


def test_invalid_pixels_and_out_of_range_depth_are_ignored() -> None:
    depth = _wall()
    depth[100:140, 140:180] = 2.0
    depth[100:140:3, 140:180] = np.nan
    depth[100:140:5, 140:180] = 0.01  # below min_depth
    depth[101:140:7, 140:180] = 50.0  # beyond max_depth
    (r,) = lift_boxes([(140, 100, 180, 140)], depth, CAM)
    assert r.surface_depth == pytest.approx(2.0, abs=1e-6)
    assert 0.3 < r.fill < 0.8


def test_too_few_valid_pixels_and_no_depth_give_reasons() -> None:
    depth = np.full((240, 320), np.nan, np.float32)
    depth[100, 100:103] = 2.0
    r1, r2 = lift_boxes([(90, 90, 110, 110), (200, 200, 220, 220)], depth, CAM)
    assert not r1.has_3d and r1.size is None and "too few valid depth pixels" in r1.reason
    assert r1.valid_pixels == 3
    assert not r2.has_3d and "no valid depth" in r2.reason


def test_boxes_outside_or_malformed() -> None:
    depth = _wall(2.0)
    results = lift_boxes(
        [(400, 10, 450, 50), (-50, -50, -10, -10), (50, 50, 40, 60), None, (1, 2, 3)],
        depth,
        CAM,
    )
    assert [r.has_3d for r in results] == [False] * 5
    assert "outside the depth image" in results[0].reason
    assert "outside the depth image" in results[1].reason
    assert all("invalid box" in r.reason for r in results[2:])


def test_box_partly_outside_is_clipped() -> None:
    depth = _wall(3.0)
    depth[100:140, 0:30] = 1.0
    (r,) = lift_boxes([(-30, 100, 30, 140)], depth, CAM)
    assert r.has_3d and r.surface_depth == pytest.approx(1.0, abs=1e-6)
    assert r.size[0] == pytest.approx(30 * 1.0 / 500, rel=0.05)


def test_depth_at_another_resolution_maps_boxes_and_intrinsics() -> None:
    colour_size = (640, 480)
    full = np.full((480, 640), 4.0, np.float32)
    full[200:280, 280:360] = 2.0
    half = full[::2, ::2].copy()
    cam_colour = CAM.scaled(640, 480)
    box = [(280, 200, 360, 280)]
    (a,) = lift_boxes(box, full, cam_colour)
    # Intrinsics of either resolution work: they are rescaled to the depth image.
    (b,) = lift_boxes(box, half, cam_colour, image_size=colour_size)
    (c,) = lift_boxes(box, half, CAM, image_size=colour_size)
    for r in (b, c):
        np.testing.assert_allclose(r.center, a.center, atol=0.005)
        np.testing.assert_allclose(r.size, a.size, rtol=0.05)


def test_aspect_ratio_mismatch_is_refused_with_a_reason() -> None:
    depth = np.full((360, 640), 2.0, np.float32)
    (r,) = lift_boxes([(10, 10, 50, 50)], depth, CAM.scaled(640, 480), image_size=(640, 480))
    assert not r.has_3d and "aspect ratios disagree" in r.reason
    (r,) = lift_boxes([(10, 10, 50, 50)], depth, CAM.scaled(640, 480))
    assert not r.has_3d and "camera intrinsics" in r.reason


def test_batched_results_equal_one_box_at_a_time() -> None:
    rng = np.random.default_rng(3)
    depth = (_wall(5.0) + rng.normal(0, 0.01, (240, 320))).astype(np.float32)
    boxes = []
    for k in range(8):
        y, x, s = 20 + 25 * k, 15 + 35 * k, 10 + 4 * k
        depth[y : y + s, x : x + s] = 0.8 + 0.4 * k
        boxes.append((x - 2, y - 2, x + s + 2, y + s + 2))
    together = lift_boxes(boxes, depth, CAM)
    for box, r in zip(boxes, together, strict=True):
        (alone,) = lift_boxes([box], depth, CAM)
        assert alone == r


def test_params_object_overrides_and_errors() -> None:
    depth = _wall(2.0)
    params = LiftParams(min_size=0.5)
    (r,) = lift_boxes([(10, 10, 20, 20)], depth, CAM, params=params)
    assert min(r.size) == pytest.approx(0.5)
    (r,) = lift_boxes([(10, 10, 20, 20)], depth, CAM, params=params, min_size=0.01)
    assert min(r.size) < 0.5
    with pytest.raises(ValueError, match="unknown lifting parameter"):
        lift_boxes([(10, 10, 20, 20)], depth, CAM, no_such=1)
    with pytest.raises(ValueError, match="depth_extent"):
        LiftParams(depth_extent="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2D"):
        lift_boxes([(10, 10, 20, 20)], np.zeros((4, 4, 1)), CAM)
    assert lift_boxes([], depth, CAM) == []


def test_lifted3d_has_3d() -> None:
    assert not Lifted3D(None, None, reason="x").has_3d
    assert Lifted3D((0.0, 0.0, 1.0), (0.1, 0.1, 0.1), 10, 1.0).has_3d


def _panel_behind_a_pole(panel_front: float, pole: float, wall: float = 3.6) -> SyntheticScene:
    """A 28 x 34 cm red panel (front at ``panel_front``) behind a 3 cm pole (at ``pole``) that
    crosses it from top to bottom 4 cm right of its middle, a wall behind both."""
    specs = [
        ObjectSpec("red panel", (0.0, 0.0, panel_front + 0.005), (0.28, 0.34, 0.01)),
        ObjectSpec("pole", (0.04, 0.0, pole), (0.03, 1.6, 0.03), (200, 200, 200)),
    ]
    return render_scene(specs, wall_depth=wall, seed=0)


PANEL = _panel_behind_a_pole(1.10, 0.70)


@pytest.mark.parametrize("loose", [12, 15])
@pytest.mark.parametrize("background", ["valid", "NaN", "0", "beyond max_depth"])
def test_an_object_behind_a_thin_occluder_keeps_its_depth_whatever_the_background(
    background: str, loose: int
) -> None:
    # Issue 26: with the wall behind the panel invalid (NaN, 0: beyond the sensor's range, or
    # cut by depth.max_depth), the panel's own face filled the border of its loose box and was
    # dropped as the "background plane": the panel got the pole's depth, 0.70 m.
    depth = PANEL.depth_m.copy()
    wall = PANEL.depth_exact > 3.0
    if background == "NaN":
        depth[wall] = np.nan
    elif background == "0":
        depth[wall] = 0.0
    max_depth = 3.5 if background == "beyond max_depth" else 10.0
    x0, y0, x1, y1 = PANEL.objects[0].bbox
    box = (x0 - loose, y0 - loose, x1 + loose, y1 + loose)
    (r,) = lift_boxes([box], depth, PANEL.intrinsics, labels=["red panel"], max_depth=max_depth)
    assert r.surface_depth == pytest.approx(1.10, abs=0.04), r


@pytest.mark.parametrize("loose", [0, 6])
def test_an_object_beyond_max_depth_gets_no_3d_not_its_occluders_depth(loose: int) -> None:
    # The panel at 2.4 m lies beyond depth.max_depth 2.0; only the pole before it (1.6 m) is in
    # range. It was given the pole's depth; most of its box reads farther than the range.
    scene = _panel_behind_a_pole(2.4, 1.6)
    x0, y0, x1, y1 = scene.objects[0].bbox
    box = (x0 - loose, y0 - loose, x1 + loose, y1 + loose)
    (r,) = lift_boxes([box], scene.depth_m, scene.intrinsics, max_depth=2.0)
    assert not r.has_3d and "beyond depth.max_depth (2 m)" in r.reason, r
    # A thin object within the range keeps its depth when the wall behind it is cut.
    depth = _wall(3.0)
    depth[60:180, 154:166] = 1.2
    (pole,) = lift_boxes([(140, 60, 180, 180)], depth, CAM, max_depth=2.0)
    assert pole.surface_depth == pytest.approx(1.2, abs=0.005)
    # Nothing in range at all: the reason says the box reads beyond the range.
    (far,) = lift_boxes([(140, 60, 180, 180)], _wall(3.0), CAM, max_depth=2.0)
    assert far.reason == (
        "no valid depth in the box (range 0.1..2 m); it reads farther than depth.max_depth"
    )


@pytest.mark.parametrize("z", [1.0, 3.0, 5.0, 7.0, 9.0])
@pytest.mark.parametrize("side", [1, 2, 3, 8])
def test_a_tiny_box_over_valid_depth_gets_3d(z: float, side: int) -> None:
    # Issue 26: a distant small object boxed tightly (1x1 to 3x3 pixels; up to 8x8 beyond
    # 4.5 m) got no 3D even with min_valid_pixels 1: a depth bin is 14 cm wide at 5 m, and the
    # band around the peak, capped at 0.1 m, left out the object's own samples.
    rng = np.random.default_rng(side)
    depth = (_wall(z) + rng.normal(0.0, 0.001 + 0.0025 * z, (240, 320))).astype(np.float32)
    boxes = [(x, y, x + side, y + side) for x in (40.0, 150.5, 260.0) for y in (30.0, 120.25)]
    for r in lift_boxes(boxes, depth, CAM, min_valid_pixels=1):
        assert r.has_3d, r.reason
        assert r.valid_pixels >= max(1, side * side // 2)
        assert r.surface_depth == pytest.approx(z, abs=3 * (0.001 + 0.0025 * z))
