"""The pixel frame the model writes its boxes in, and the way back to camera pixels.

SpatialThinker writes boxes in pixels of the image size stated in its prompt. Qwen2.5-VL's
processor rounds each side of the image it receives to a multiple of 28 (and scales the image
into ``[min_pixels, max_pixels]``), so the stated size and the size the model actually sees
differ unless we make them agree. Two policies:

* ``"resize"`` (default): we resize the frame ourselves to exactly the size the processor would
  pick and state that size; the processor then leaves it alone, the stated frame and the model's
  frame coincide, and boxes are scaled back to the camera image afterwards.
* ``"native"``: send the source image, state its size, and let the processor resize it within
  ``[min_pixels, max_pixels]``. Boxes come back in (nominally) source pixels. This is the
  authors' evaluation setup only while those bounds leave the image alone: they used the
  processor's own bounds (``CHECKPOINT_MIN_PIXELS`` .. ``CHECKPOINT_MAX_PIXELS``), so the model
  saw the source size up to rounding each side to a multiple of 28. Our default ``max_pixels``
  is far lower: a 1920x1080 frame reaches the model as 1316x728 while the prompt states
  1920x1080 (the authors' model saw 1932x1092). :func:`native_frame_warning` says when that
  happens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "CHECKPOINT_MAX_PIXELS",
    "CHECKPOINT_MIN_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "MAX_ASPECT_RATIO",
    "PATCH_FACTOR",
    "ModelFrame",
    "model_input_size",
    "native_frame_warning",
    "plan_model_frame",
    "prepare_image",
    "scale_boxes",
]

#: The authors trained with images clamped to at least 512^2 pixels.
DEFAULT_MIN_PIXELS = 512 * 512
#: 1280 visual tokens of 28x28 pixels: bounds latency and memory per frame.
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
#: The checkpoint processor's own bounds, which the authors' evaluation used.
CHECKPOINT_MIN_PIXELS = 56 * 56
CHECKPOINT_MAX_PIXELS = 28 * 28 * 16384
#: Qwen2.5-VL: 14 px patches merged 2x2, so each side must be a multiple of 28.
PATCH_FACTOR = 28
#: The processor refuses images more elongated than this.
MAX_ASPECT_RATIO = 200

Box = tuple[float, float, float, float]


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def model_input_size(
    width: int,
    height: int,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """Size the Qwen2-VL processor resizes a ``width`` x ``height`` image to.

    Mirrors ``transformers``' ``smart_resize`` (which takes and returns ``(height, width)``)
    operation for operation, including Python's round-half-to-even, so the sizes agree exactly;
    the test suite checks it against the installed function.

    Args:
        width: Source width in pixels.
        height: Source height in pixels.
        min_pixels: Smallest allowed area; smaller images are scaled up.
        max_pixels: Largest allowed area; larger images are scaled down.

    Returns:
        ``(width, height)``, both multiples of 28.

    Raises:
        ValueError: Non-positive sizes or bounds, ``min_pixels > max_pixels``, or an aspect
            ratio above 200 (the processor refuses those images too).
    """
    width = _positive_int("width", width)
    height = _positive_int("height", height)
    min_pixels = _positive_int("min_pixels", min_pixels)
    max_pixels = _positive_int("max_pixels", max_pixels)
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio {ratio:.1f} of {width} x {height} exceeds {MAX_ASPECT_RATIO}; "
            "the Qwen2-VL processor cannot take this image"
        )
    factor = PATCH_FACTOR
    # Same expressions as smart_resize, so float rounding matches bit for bit.
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar <= 0 or w_bar <= 0:  # unreachable with min_pixels >= 1; never hand out a 0 side
        raise ValueError(f"image {width} x {height} is too small for the Qwen2-VL processor")
    return w_bar, h_bar


@dataclass(frozen=True)
class ModelFrame:
    """How one camera image is presented to the model.

    Attributes:
        source_size: ``(width, height)`` of the camera image.
        stated_size: ``(width, height)`` written in the prompt; boxes come back in this frame.
        resize_to: ``(width, height)`` we resize the image to before sending it, or ``None`` to
            send it as it is.
    """

    source_size: tuple[int, int]
    stated_size: tuple[int, int]
    resize_to: tuple[int, int] | None

    def boxes_to_source(self, boxes: Iterable[Sequence[float]]) -> list[Box]:
        """Map boxes from the stated frame to source-image pixels (clipped)."""
        return scale_boxes(boxes, self.stated_size, self.source_size)


def plan_model_frame(
    width: int,
    height: int,
    policy: Literal["resize", "native"] = "resize",
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ModelFrame:
    """Decide the resize and the stated size for a camera image.

    Args:
        width: Camera image width.
        height: Camera image height.
        policy: ``"resize"`` (we resize to the processor's size and state it) or ``"native"``
            (state the source size, let the processor resize; see :func:`native_frame_warning`).
        min_pixels: Processor minimum area.
        max_pixels: Processor maximum area.

    Returns:
        The frame plan. With ``"resize"``, ``resize_to`` is ``None`` when the source already has
        the processor's size.

    Raises:
        ValueError: Unknown policy or an image the processor cannot take.
    """
    source = (_positive_int("width", width), _positive_int("height", height))
    # Computed for both policies: it validates the image the processor will get either way.
    target = model_input_size(source[0], source[1], min_pixels, max_pixels)
    if policy == "resize":
        return ModelFrame(source, target, None if target == source else target)
    if policy == "native":
        return ModelFrame(source, source, None)
    raise ValueError(f"unknown model frame policy {policy!r}; expected 'resize' or 'native'")


def native_frame_warning(
    width: int,
    height: int,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> str | None:
    """Why the ``"native"`` policy would state a size the model does not see, if it would.

    Under ``"native"`` the prompt states the camera size. The processor rounding each side to
    a multiple of 28 (640x480 -> 644x476) is the trained and evaluated setup and is not
    reported; the pixel bounds scaling the whole image is.

    Args:
        width: Camera image width.
        height: Camera image height.
        min_pixels: Processor minimum area in use.
        max_pixels: Processor maximum area in use.

    Returns:
        One line for the log and diagnostics (stated size, size the model sees, the size the
        authors' evaluation would have given it, and the remedies), or ``None`` when the
        bounds leave the image alone.

    Raises:
        ValueError: An image or bounds the processor cannot take (as :func:`model_input_size`).
    """
    seen = model_input_size(width, height, min_pixels, max_pixels)
    factor = PATCH_FACTOR
    rounded = (
        max(factor, round(width / factor) * factor),
        max(factor, round(height / factor) * factor),
    )
    if seen == rounded:
        return None
    theirs = model_input_size(width, height, CHECKPOINT_MIN_PIXELS, CHECKPOINT_MAX_PIXELS)
    down = seen[0] * seen[1] < rounded[0] * rounded[1]
    bound = (
        f"max_pixels {max_pixels} scales it down"
        if down
        else f"min_pixels {min_pixels} scales it up"
    )
    need = theirs[0] * theirs[1]
    remedy = f"max_pixels >= {need}" if down else f"min_pixels <= {need}"
    return (
        f"coordinate_policy 'native' states {width} x {height} in the prompt but the model sees "
        f"{seen[0]} x {seen[1]} ({bound}), so its boxes may not be in the stated frame; the "
        f"authors' evaluation gave it {theirs[0]} x {theirs[1]}. Use coordinate_policy "
        f"'resize' (states the size the model sees) or {remedy} as they did."
    )


def prepare_image(image: np.ndarray, frame: ModelFrame) -> np.ndarray:
    """Resize an image as the frame plan says.

    Args:
        image: ``H x W`` or ``H x W x C`` array of ``frame.source_size``.
        frame: The plan from :func:`plan_model_frame`.

    Returns:
        The image to send (the input itself when no resize is planned).

    Raises:
        ValueError: The image does not have the planned source size (boxes would be mapped
            back with the wrong scale).
    """
    import cv2  # lazy: keeps the parsing-only users free of OpenCV start-up cost

    height, width = image.shape[:2]
    if (width, height) != tuple(frame.source_size):
        raise ValueError(
            f"image is {width} x {height} but the frame was planned for "
            f"{frame.source_size[0]} x {frame.source_size[1]}"
        )
    if frame.resize_to is None or tuple(frame.resize_to) == (width, height):
        return image
    return cv2.resize(image, tuple(frame.resize_to), interpolation=cv2.INTER_AREA)


def scale_boxes(
    boxes: Iterable[Sequence[float]],
    from_size: tuple[int, int],
    to_size: tuple[int, int],
) -> list[Box]:
    """Scale ``(x1, y1, x2, y2)`` boxes from one pixel frame to another.

    Corners are reordered and the result is clipped to ``[0, w] x [0, h]`` of ``to_size`` so
    the boxes can index the target image safely.

    Args:
        boxes: Boxes in ``from_size`` pixels.
        from_size: ``(width, height)`` of the frame the boxes are in (the stated size).
        to_size: ``(width, height)`` of the target image (the camera image).

    Returns:
        Boxes in ``to_size`` pixels.

    Raises:
        ValueError: Non-positive sizes, a box without 4 values, or non-finite coordinates.
    """
    fw, fh = (float(v) for v in from_size)
    tw, th = (float(v) for v in to_size)
    if min(fw, fh, tw, th) <= 0:
        raise ValueError(f"sizes must be positive, got {from_size} -> {to_size}")
    sx, sy = tw / fw, th / fh
    out: list[Box] = []
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box needs 4 values, got {len(box)}")
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError(f"box has non-finite coordinates: {tuple(box)!r}")
        x1, x2 = sorted((x1 * sx, x2 * sx))
        y1, y2 = sorted((y1 * sy, y2 * sy))
        out.append(
            (
                min(max(x1, 0.0), tw),
                min(max(y1, 0.0), th),
                min(max(x2, 0.0), tw),
                min(max(y2, 0.0), th),
            )
        )
    return out
