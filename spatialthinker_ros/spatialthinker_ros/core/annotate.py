"""Draw a scene graph's boxes and the question/answer on an RGB image (ROS-free: numpy + cv2).

Used by the node's ``~/debug_image`` and by the offline CLI. The colour palette lives here so
that the 2D annotations and the RViz markers (``markers.py``) give the same object class the same
colour.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["PALETTE", "confidence_text", "draw_annotations", "label_colour"]

# Twenty well-separated colours (Tableau 20 order, RGB). A fixed table rather than a generated
# hue wheel so neighbouring entries differ strongly and text on them stays readable.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)

_INSTANCE_SUFFIX = re.compile(r"\.\d+$")
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Label texts longer than this are cut: a runaway model id must not cover the whole image.
_MAX_LABEL_CHARS = 40
# The banner may take at most this fraction of the image height; the rest is elided.
_MAX_BANNER_FRACTION = 0.4
# Options whose probability the confidence line lists (the rest are elided).
_MAX_LISTED_OPTIONS = 8


def _normalise_label(label: str) -> str:
    """Map an id or a label of one class to one key ("traffic_light.2" -> "traffic light")."""
    key = _INSTANCE_SUFFIX.sub("", label.strip())
    return " ".join(key.replace("_", " ").lower().split())


def label_colour(label: str) -> tuple[int, int, int]:
    """Deterministic RGB colour (0..255 each) for an object label.

    An id ("cup.2") and its label ("cup") give the same colour, so every instance of a class
    looks alike in the debug image and in RViz. A CRC of the text is used instead of ``hash()``,
    which is salted per process and would change colours between runs and between the node and
    the CLI.

    Args:
        label: Object label or id.

    Returns:
        An ``(r, g, b)`` tuple from :data:`PALETTE`.
    """
    key = _normalise_label(label)
    return PALETTE[zlib.crc32(key.encode("utf-8")) % len(PALETTE)]


def _ascii(text: str) -> str:
    """Hershey fonts draw ASCII only; replace the rest so measuring and drawing agree."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in " ".join(text.split()))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``background`` (Rec. 601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _wrap(text: str, max_width: int, scale: float, thickness: int) -> list[str]:
    """Greedy word wrap to a pixel width; words wider than a line are split by characters."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if cv2.getTextSize(candidate, _FONT, scale, thickness)[0][0] <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        # A single over-long word (a URL, a run of digits) is hard-split.
        current = ""
        for ch in word:
            if cv2.getTextSize(current + ch, _FONT, scale, thickness)[0][0] > max_width and current:
                lines.append(current)
                current = ""
            current += ch
    if current:
        lines.append(current)
    return lines


def _draw_label(
    image: np.ndarray,
    text: str,
    anchor: tuple[int, int, int],
    colour: tuple[int, int, int],
    scale: float,
    thickness: int,
) -> None:
    """Draw ``text`` on a filled background above the box top (or inside it), kept in the image.

    Args:
        image: Image to draw on, in place.
        text: ASCII label text.
        anchor: ``(x_left, y_top, y_bottom)`` of the clipped box.
        colour: Background colour.
        scale: Font scale.
        thickness: Font thickness.
    """
    height, width = image.shape[:2]
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, round(text_h * 0.25))
    box_w = min(width, text_w + 2 * pad)
    box_h = min(height, text_h + baseline + 2 * pad)
    x_left, y_top, _ = anchor
    # Above the box when there is room, otherwise just inside its top edge: the label must stay
    # visible for objects touching the top of the frame.
    y0 = y_top - box_h if y_top - box_h >= 0 else y_top
    y0 = int(min(max(y0, 0), height - box_h))
    x0 = int(min(max(x_left, 0), width - box_w))
    cv2.rectangle(image, (x0, y0), (x0 + box_w - 1, y0 + box_h - 1), colour, cv2.FILLED)
    cv2.putText(
        image,
        text,
        (x0 + pad, y0 + pad + text_h),
        _FONT,
        scale,
        _text_colour(colour),
        thickness,
        cv2.LINE_AA,
    )


def _draw_banner(image: np.ndarray, lines_in: list[str], scale: float, thickness: int) -> None:
    """Darken the bottom of the image and write ``lines_in`` there, wrapped to the width."""
    height, width = image.shape[:2]
    margin = max(4, width // 80)
    lines: list[str] = []
    for text in lines_in:
        lines.extend(_wrap(text, max(1, width - 2 * margin), scale, thickness))
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line_h = text_h + baseline + max(2, text_h // 3)
    max_lines = max(1, int(height * _MAX_BANNER_FRACTION - 2 * margin) // line_h)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        # Mark the cut so a reader knows the answer went on.
        last = lines[-1]
        while last and cv2.getTextSize(last + "...", _FONT, scale, thickness)[0][0] > (
            width - 2 * margin
        ):
            last = last[:-1]
        lines[-1] = last + "..."
    banner_h = min(height, len(lines) * line_h + 2 * margin)
    top = height - banner_h
    # Blend rather than paint solid black so the scene under the banner stays faintly visible.
    region = image[top:, :].astype(np.float32)
    image[top:, :] = (region * 0.3).astype(np.uint8)
    for i, line in enumerate(lines):
        y = top + margin + i * line_h + text_h
        cv2.putText(image, line, (margin, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _banner_lines(question: str | None, answer: str | None, confidence: str | None) -> list[str]:
    """The bottom banner's lines: the question, the answer, its confidence (those given)."""
    lines = []
    if question:
        lines.append("Q: " + _ascii(question))
    if answer:
        lines.append("A: " + _ascii(answer))
    if confidence:
        lines.append(_ascii(confidence))
    return lines


def confidence_text(
    options: int,
    probabilities: Sequence[float],
    confidence: float | None,
    choice: str,
    note: str = "",
) -> str | None:
    """The debug image's confidence line of an answer (as ``SpatialAnswer`` carries it).

    Args:
        options: How many options the question had (0: an open question, which has no line).
        probabilities: The option probabilities (empty when not measured).
        confidence: The chosen option's probability; None when not measured.
        choice: The chosen letter ("" for none).
        note: Why it was not measured.

    Returns:
        ``"confidence 0.82 (B): A 0.10, B 0.82, C 0.08"``, ``"confidence not measured (...)"``,
        or None for an open question.
    """
    if options <= 0:
        return None
    if confidence is None or not probabilities:
        return f"confidence not measured ({note})" if note else "confidence not measured"
    listed = ", ".join(
        f"{chr(65 + i)} {p:.2f}" for i, p in enumerate(probabilities[:_MAX_LISTED_OPTIONS])
    )
    more = ", ..." if len(probabilities) > _MAX_LISTED_OPTIONS else ""
    chosen = f"({choice})" if choice else "(no option chosen)"
    return f"confidence {confidence:.2f} {chosen}: {listed}{more}"


def draw_annotations(
    rgb: np.ndarray,
    objects: Sequence[tuple[str, tuple[float, float, float, float], str | None]],
    answer: str | None = None,
    question: str | None = None,
    confidence: str | None = None,
) -> np.ndarray:
    """Draw boxes, ids and the question/answer (and its confidence) on a copy of an RGB image.

    Args:
        rgb: ``HxWx3`` RGB image (any numeric dtype; converted to uint8 with clipping), or
            ``HxW`` grayscale.
        objects: ``(id, (x_min, y_min, x_max, y_max), extra)`` per object, boxes in pixels of
            ``rgb``; ``extra`` (e.g. ``"1.23 m"``) is appended to the id in the label, ``None``
            for none. Boxes partly outside the image are clipped; boxes entirely outside it,
            empty or with non-finite coordinates are skipped.
        answer: Answer text for the bottom banner, or ``None``.
        question: Question text for the bottom banner, or ``None``.
        confidence: The answer's confidence line (:func:`confidence_text`) for the banner, or
            ``None``.

    Returns:
        A new ``HxWx3`` uint8 RGB image; ``rgb`` is not modified.

    Raises:
        ValueError: If the image is empty or not ``HxW`` / ``HxWx3``.
    """
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"cannot annotate an empty image of shape {array.shape}")
    if array.dtype == np.uint8:
        image = np.ascontiguousarray(array).copy()
    else:
        image = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    height, width = image.shape[:2]

    # Sizes follow the image so labels stay readable at 640x480 and do not swamp small images.
    short_side = min(height, width)
    box_thickness = max(1, round(short_side / 240))
    font_scale = max(0.35, short_side / 900)
    font_thickness = max(1, round(short_side / 480))

    boxes: list[tuple[tuple[int, int, int, int], tuple[int, int, int], str]] = []
    for object_id, bbox, extra in objects:
        if len(bbox) != 4 or not all(math.isfinite(float(v)) for v in bbox):
            continue
        x_min, y_min, x_max, y_max = (float(v) for v in bbox)
        x_min, x_max = min(x_min, x_max), max(x_min, x_max)
        y_min, y_max = min(y_min, y_max), max(y_min, y_max)
        x0 = round(max(0.0, x_min))
        y0 = round(max(0.0, y_min))
        x1 = round(min(float(width - 1), x_max))
        y1 = round(min(float(height - 1), y_max))
        if x0 > x1 or y0 > y1 or x_max < 0 or y_max < 0 or x_min > width - 1 or y_min > height - 1:
            continue
        # Cut the id rather than the distance: the number is what a reader looks for.
        suffix = _shorten(_ascii(extra), 16) if extra else ""
        name = _shorten(_ascii(str(object_id)), _MAX_LABEL_CHARS - len(suffix) - 1)
        text = f"{name} {suffix}" if suffix else name
        boxes.append(((x0, y0, x1, y1), label_colour(str(object_id)), text))

    # All boxes first, then all labels, so no box line crosses another object's label.
    for (x0, y0, x1, y1), colour, _ in boxes:
        # LINE_8 (not anti-aliased) keeps the border exactly the palette colour.
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, box_thickness, cv2.LINE_8)
    for (x0, y0, _, y1), colour, text in boxes:
        _draw_label(image, text, (x0, y0, y1), colour, font_scale, font_thickness)

    banner = _banner_lines(question, answer, confidence)
    if banner:
        _draw_banner(image, banner, font_scale, font_thickness)
    return image
