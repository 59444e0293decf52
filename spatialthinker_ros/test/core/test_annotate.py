"""draw_annotations draws boxes, labels and the Q/A banner on a copy of the image."""

from __future__ import annotations

import numpy as np
import pytest

from spatialthinker_ros.core.annotate import PALETTE, draw_annotations, label_colour

GREY = 90


def _grey(height: int = 480, width: int = 640) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def _is(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return tuple(int(v) for v in pixel) == colour


def test_label_colour_is_deterministic_and_shared_by_instances() -> None:
    assert label_colour("cup") == label_colour("cup.1") == label_colour("cup.7")
    assert label_colour("traffic_light.2") == label_colour("traffic light")
    assert label_colour("cup") in PALETTE
    # Several common labels must not all collapse onto one colour.
    labels = ["cup", "table", "chair", "person", "car", "bike", "dog", "lamp"]
    assert len({label_colour(label) for label in labels}) >= 4


def test_box_border_takes_the_label_colour_and_interior_is_untouched() -> None:
    image = _grey()
    out = draw_annotations(image, [("cup.1", (100, 150, 300, 350), None)])
    colour = label_colour("cup.1")
    assert colour != (GREY, GREY, GREY)
    for y in range(200, 340, 10):  # left and right borders, below the label
        assert _is(out[y, 100], colour)
        assert _is(out[y, 300], colour)
    for x in range(110, 290, 10):  # bottom border
        assert _is(out[350, x], colour)
    assert _is(out[250, 200], (GREY, GREY, GREY))
    assert _is(out[20, 600], (GREY, GREY, GREY))  # far from every box


def test_shape_dtype_kept_and_input_not_modified() -> None:
    image = _grey(240, 320)
    before = image.copy()
    out = draw_annotations(image, [("cup.1", (10, 10, 100, 100), "1.23 m")], "yes", "Is it?")
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    assert out is not image
    np.testing.assert_array_equal(image, before)
    assert not np.array_equal(out, before)


def test_distance_text_changes_the_label() -> None:
    boxes = [("cup.1", (200.0, 200.0, 400.0, 400.0), None)]
    plain = draw_annotations(_grey(), boxes)
    with_distance = draw_annotations(_grey(), [(*boxes[0][:2], "1.23 m")])
    diff = np.any(plain != with_distance, axis=2)
    ys, xs = np.nonzero(diff)
    assert len(ys) > 0
    # Only the label region, just above the box, differs.
    assert ys.max() < 200 and xs.min() >= 200


def test_label_background_is_filled_and_inside_the_image() -> None:
    # A box touching the top-right corner: its label must be pulled back inside.
    out = draw_annotations(_grey(), [("a_very_long_object_name.12", (600, 0, 639, 50), "9.99 m")])
    colour = label_colour("a_very_long_object_name")
    filled = np.all(out == np.array(colour, np.uint8), axis=2)
    ys, xs = np.nonzero(filled[:, :600])
    assert len(xs) > 200  # a filled background spreading left of the box
    assert ys.min() >= 0


def test_partly_outside_boxes_are_clipped() -> None:
    out = draw_annotations(_grey(), [("car.1", (-100, 300, 200, 900), None)])
    colour = label_colour("car")
    # The right edge is drawn, the left edge is clipped onto column 0.
    assert _is(out[400, 200], colour)
    assert _is(out[400, 0], colour)


def test_unusable_boxes_are_skipped() -> None:
    out = draw_annotations(
        _grey(),
        [
            ("gone.1", (700, 500, 900, 800), None),  # entirely outside
            ("nan.1", (float("nan"), 0, 10, 10), None),
            ("inf.1", (0, 0, float("inf"), 10), None),
        ],
    )
    np.testing.assert_array_equal(out, _grey())


def test_empty_images_raise() -> None:
    with pytest.raises(ValueError):
        draw_annotations(np.zeros((0, 640, 3), np.uint8), [])
    with pytest.raises(ValueError):
        draw_annotations(np.zeros((480, 0, 3), np.uint8), [])
    with pytest.raises(ValueError):
        draw_annotations(np.zeros((480, 640, 4), np.uint8), [])


def test_banner_at_the_bottom_holds_question_and_answer() -> None:
    out = draw_annotations(_grey(), [], answer="(B) in front of", question="Where is the cup?")
    changed = np.any(out != GREY, axis=2)
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.min() > 480 * 0.6  # banner confined to the bottom
    assert rows.max() == 479
    # White text on the darkened banner.
    assert np.any(np.all(out[rows.min() :] >= 200, axis=2))


def test_long_answer_wraps_and_stays_bounded() -> None:
    short = draw_annotations(_grey(), [], answer="yes")
    long = draw_annotations(_grey(), [], answer="the cup is left of the plate " * 60)
    top_short = np.nonzero(np.any(short != GREY, axis=2).any(axis=1))[0].min()
    top_long = np.nonzero(np.any(long != GREY, axis=2).any(axis=1))[0].min()
    assert top_long < top_short  # more lines
    assert top_long >= 480 * 0.55  # but never swallowing the image
    # Text never runs off the right edge: the last columns are only the darkened banner.
    assert np.all(long[top_long:, -3:] < 200)


def test_no_question_no_answer_no_banner() -> None:
    out = draw_annotations(_grey(), [("cup.1", (10, 10, 50, 50), None)])
    assert np.all(out[400:] == GREY)


def test_grayscale_input_is_accepted() -> None:
    out = draw_annotations(np.full((120, 160), 50, np.uint8), [("cup.1", (10, 40, 60, 100), None)])
    assert out.shape == (120, 160, 3)
    assert _is(out[80, 10], label_colour("cup"))
