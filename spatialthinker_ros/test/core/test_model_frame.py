"""Tests of the model frame: the processor's resize, frame plans, image preparation, box mapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from spatialthinker_ros.core.model_frame import (
    CHECKPOINT_MAX_PIXELS,
    CHECKPOINT_MIN_PIXELS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    ModelFrame,
    model_input_size,
    native_frame_warning,
    plan_model_frame,
    prepare_image,
    scale_boxes,
)


def _oracle(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int] | None:
    """transformers' own answer as (w, h), or None where it refuses the size."""
    try:
        h, w = smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    except (ValueError, ZeroDivisionError):
        return None
    return w, h


def _check(width: int, height: int, min_pixels: int, max_pixels: int) -> None:
    expected = _oracle(width, height, min_pixels, max_pixels)
    if expected is None:
        with pytest.raises(ValueError):
            model_input_size(width, height, min_pixels, max_pixels)
    else:
        assert model_input_size(width, height, min_pixels, max_pixels) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (644, 476)),  # stated in the model notes: rounding to multiples of 28
        ((1280, 720), (1288, 728)),
        ((1920, 1080), (1316, 728)),  # above max_pixels: scaled down
        ((320, 240), (616, 448)),  # below 512^2: scaled up
    ],
)
def test_known_sizes(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert model_input_size(*size) == expected
    _check(*size, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)


def test_checkpoint_defaults_match_model_notes() -> None:
    # The notes: 640x480 -> 644x476 with the checkpoint's own (wide) limits.
    assert model_input_size(640, 480, 3136, 12845056) == (644, 476)


@settings(max_examples=2000, deadline=None)
@given(st.integers(1, 8000), st.integers(1, 8000))
def test_agrees_with_transformers_default_limits(width: int, height: int) -> None:
    _check(width, height, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(1, 20000),
    st.integers(1, 20000),
    st.integers(1, 4096 * 4096),
    st.integers(1, 4096 * 4096),
)
def test_agrees_with_transformers_any_limits(width: int, height: int, lo: int, hi: int) -> None:
    min_pixels, max_pixels = min(lo, hi), max(lo, hi)
    _check(width, height, min_pixels, max_pixels)


@pytest.mark.parametrize(
    ("width", "height"),
    [(1, 1), (13, 13), (14, 14), (42, 70), (70, 42), (5, 1000), (1000, 5), (201, 1), (1, 201),
     (200, 1), (10000, 50), (28, 28), (56, 5600), (9000, 9000)],
)  # fmt: skip
def test_agrees_on_edge_sizes(width: int, height: int) -> None:
    _check(width, height, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    _check(width, height, 3136, 12845056)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((1000, 4), "aspect ratio"),
        ((4, 1000), "aspect ratio"),
        ((0, 480), "width"),
        ((640, -1), "height"),
        ((640, 480, 0), "min_pixels"),
        ((640, 480, 1000, 10), "must not exceed"),
    ],
)
def test_refusals_name_the_problem(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        model_input_size(*args)


def test_resize_policy_states_the_processor_size() -> None:
    frame = plan_model_frame(640, 480)
    assert frame == ModelFrame((640, 480), (644, 476), (644, 476))
    # The processor leaves an image of that size as it is: stated frame == model's frame.
    assert model_input_size(*frame.stated_size) == frame.stated_size


def test_resize_policy_without_resize_when_already_aligned() -> None:
    assert plan_model_frame(644, 476) == ModelFrame((644, 476), (644, 476), None)


def test_native_policy_states_source_size() -> None:
    assert plan_model_frame(640, 480, policy="native") == ModelFrame((640, 480), (640, 480), None)


def test_native_1080p_states_a_size_the_model_does_not_see() -> None:
    # The numbers: stated 1920x1080, seen 1316x728 under our max_pixels, 1932x1092
    # under the checkpoint processor's bounds that the authors' evaluation used.
    assert plan_model_frame(1920, 1080, policy="native").stated_size == (1920, 1080)
    assert model_input_size(1920, 1080) == (1316, 728)
    assert model_input_size(1920, 1080, CHECKPOINT_MIN_PIXELS, CHECKPOINT_MAX_PIXELS) == (
        1932,
        1092,
    )
    warning = native_frame_warning(1920, 1080)
    assert warning is not None
    for fragment in (
        "states 1920 x 1080",
        "sees 1316 x 728",
        "max_pixels 1003520 scales it down",
        "authors' evaluation gave it 1932 x 1092",
        "'resize'",
        "max_pixels >= 2109744",
    ):
        assert fragment in warning, fragment
    # The remedy it names does remove the warning.
    assert native_frame_warning(1920, 1080, DEFAULT_MIN_PIXELS, 1932 * 1092) is None


def test_native_warning_for_frames_scaled_up() -> None:
    warning = native_frame_warning(320, 240)
    assert warning is not None
    assert "sees 616 x 448" in warning and "min_pixels 262144 scales it up" in warning
    assert "min_pixels <= 77616" in warning
    assert native_frame_warning(320, 240, 77616, DEFAULT_MAX_PIXELS) is None


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (644, 476), (1000, 700)])
def test_native_rounding_to_28_alone_is_not_warned(size: tuple[int, int]) -> None:
    # 640x480 -> 644x476 is the trained and evaluated setup.
    assert native_frame_warning(*size) is None


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_native_warning_exactly_when_the_bounds_scale(width: int, height: int) -> None:
    if max(width, height) / min(width, height) > 200:
        return
    seen = model_input_size(width, height)
    unbounded = model_input_size(width, height, 1, 10**12)
    assert (native_frame_warning(width, height) is None) == (seen == unbounded)


def test_plan_rejects_unknown_policy_and_bad_images() -> None:
    with pytest.raises(ValueError, match="policy"):
        plan_model_frame(640, 480, policy="stretch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aspect ratio"):
        plan_model_frame(4000, 10, policy="native")


def test_prepare_image_resizes_to_plan() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 320:] = 200
    out = prepare_image(image, plan_model_frame(640, 480))
    assert out.shape == (476, 644, 3) and out.dtype == np.uint8
    assert out[:, :300].max() == 0 and out[:, 350:].min() == 200
    assert prepare_image(image, plan_model_frame(640, 480, policy="native")) is image


def test_prepare_image_rejects_other_size() -> None:
    with pytest.raises(ValueError, match="planned for 640 x 480"):
        prepare_image(np.zeros((100, 100, 3), np.uint8), plan_model_frame(640, 480))


def test_scale_boxes_maps_back_and_clips() -> None:
    boxes = [(0, 0, 644, 476), (322, 238, 161, 119), (-10, 10, 700, 500)]
    out = scale_boxes(boxes, (644, 476), (640, 480))
    assert out[0] == (0.0, 0.0, 640.0, 480.0)
    assert out[1] == pytest.approx((160.0, 120.0, 320.0, 240.0))
    assert out[2] == pytest.approx((0.0, 10 * 480 / 476, 640.0, 480.0))
    frame = plan_model_frame(1920, 1080)
    assert frame.boxes_to_source([(0, 0, *frame.stated_size)]) == [(0.0, 0.0, 1920.0, 1080.0)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(*[st.floats(-1e4, 1e4, allow_nan=False)] * 4), max_size=10),
    st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
)
def test_scaled_boxes_lie_in_target_image(
    boxes: list, src: tuple[int, int], dst: tuple[int, int]
) -> None:
    for x1, y1, x2, y2 in scale_boxes(boxes, src, dst):
        assert 0 <= x1 <= x2 <= dst[0]
        assert 0 <= y1 <= y2 <= dst[1]


@pytest.mark.parametrize(
    "boxes", [[(1, 2, 3)], [(float("nan"), 0, 1, 1)], [(0, 0, float("inf"), 1)]]
)
def test_scale_boxes_rejects_bad_boxes(boxes: list) -> None:
    with pytest.raises(ValueError):
        scale_boxes(boxes, (10, 10), (20, 20))
