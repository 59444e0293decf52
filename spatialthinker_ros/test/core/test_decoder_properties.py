"""Property-based tests of the image decoders: any message in, an exact array or ValueError out.

Random and mutated messages (raw images, compressed colour frames, compressedDepth) raise only
ValueError with a reason; every valid message decodes exactly (any supported encoding, shape,
row padding and byte order round-trips); a message that claims a huge size with little data is
refused cheaply (ValueError, never MemoryError).
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sensor_msgs.msg import CompressedImage, Image

from spatialthinker_ros.core.camera import depth_to_metres
from spatialthinker_ros.core.images import (
    ENCODINGS,
    _encoding_info,
    decode_compressed_depth,
    decode_compressed_image,
    encode_compressed_depth,
    encode_compressed_image,
    image_to_numpy,
    numpy_to_image,
    to_rgb,
)

KNOWN = sorted(ENCODINGS)
encodings = st.one_of(st.sampled_from(KNOWN), st.text(max_size=12))
# Random input: many examples. Exactness properties: fewer, each builds a valid message.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ raw Image messages


@st.composite
def image_messages(draw: st.DrawFn) -> Image:
    msg = Image()
    msg.encoding = draw(encodings)
    msg.height = draw(st.integers(0, 40))
    msg.width = draw(st.integers(0, 40))
    msg.step = draw(st.integers(0, 200))
    msg.is_bigendian = draw(st.integers(0, 1))
    msg.data = draw(st.binary(max_size=4000))
    return msg


@FUZZ
@given(image_messages())
def test_image_to_numpy_returns_the_declared_shape_or_raises_value_error(msg: Image) -> None:
    try:
        array = image_to_numpy(msg)
    except ValueError as error:
        assert str(error)
        return
    assert array.shape[:2] == (msg.height, msg.width)
    # Whatever came out converts on without surprises.
    try:
        if msg.encoding in ("16UC1", "32FC1", "mono16"):
            depth = depth_to_metres(array, msg.encoding)
            assert depth.dtype == np.float32
        else:
            rgb = to_rgb(array, msg.encoding)
            assert rgb.shape == (msg.height, msg.width, 3) and rgb.dtype == np.uint8
    except ValueError:
        pass


@st.composite
def valid_arrays(draw: st.DrawFn) -> tuple[np.ndarray, str]:
    encoding = draw(st.sampled_from(KNOWN))
    info = _encoding_info(encoding)
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    array = draw(hnp.arrays(info.dtype, shape))
    return array, encoding


@PROPS
@given(valid_arrays(), st.integers(0, 17), st.booleans())
def test_every_valid_message_round_trips_exactly(
    case: tuple[np.ndarray, str], padding: int, big_endian: bool
) -> None:
    array, encoding = case
    info = _encoding_info(encoding)
    row = array.shape[1] * info.pixel_bytes
    msg = numpy_to_image(array, encoding, step=row + padding, is_bigendian=big_endian)
    assert msg.step == row + padding and len(msg.data) >= msg.step * (array.shape[0] - 1) + row
    back = image_to_numpy(msg)
    assert back.shape[:2] == array.shape[:2]
    # Bitwise equality (NaN payloads included): the decoder neither reorders nor converts.
    np.testing.assert_array_equal(
        back.reshape(array.shape).view(np.uint8), array.view(np.uint8), strict=False
    )


@PROPS
@given(
    st.sampled_from(KNOWN),
    st.integers(1_000, 2**31 - 1),
    st.integers(1_000, 2**31 - 1),
    st.binary(max_size=64),
)
def test_a_huge_claimed_size_with_little_data_is_refused_cheaply(
    encoding: str, height: int, width: int, data: bytes
) -> None:
    msg = Image(encoding=encoding, height=height, width=width, data=data)
    msg.step = min(width * _encoding_info(encoding).pixel_bytes, 2**32 - 1)
    try:
        image_to_numpy(msg)
    except ValueError as error:
        assert "shorter" in str(error) or "step" in str(error) or "size" in str(error), error
    else:
        raise AssertionError("a message without its pixels was accepted")


# ------------------------------------------------------------- compressed colour frames


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8", ""]))
def test_compressed_image_decoder_raises_only_value_error(data: bytes, fmt: str) -> None:
    msg = CompressedImage(format=fmt, data=data)
    try:
        rgb = decode_compressed_image(msg)
    except ValueError as error:
        assert str(error)
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8


# A valid frame of each format: JPEG a black 16x16 (one 4:2:0 block), PNG any 8x8 content.
VALID_FRAMES = {
    "jpeg": st.just(np.zeros((16, 16, 3), np.uint8)),
    "png": hnp.arrays(np.uint8, (8, 8, 3)),
}


@pytest.mark.parametrize("fmt", sorted(VALID_FRAMES))
@FUZZ
@given(data=st.data())
def test_damaged_compressed_colour_frames_raise_only_value_error(
    fmt: str, data: st.DataObject
) -> None:
    # A valid frame with a stretch cut out and junk put in its place (header, tables or
    # pixel data alike).
    rgb = data.draw(VALID_FRAMES[fmt])
    good = bytes(encode_compressed_image(rgb, fmt).data)
    start = data.draw(st.integers(0, len(good) - 1))
    end = data.draw(st.integers(start, len(good)))
    junk = data.draw(st.binary(max_size=64))
    msg = CompressedImage(format=fmt, data=good[:start] + junk + good[end:])
    try:
        out = decode_compressed_image(msg)
    except ValueError as error:
        assert str(error)
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


# ----------------------------------------------------------------- compressedDepth


@FUZZ
@given(
    st.binary(max_size=2000),
    st.sampled_from(
        ["16UC1; compressedDepth png", "32FC1; compressedDepth png", "compressedDepth"]
    ),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_compressed_depth_decoder_raises_only_value_error(
    payload: bytes, fmt: str, a: float, b: float
) -> None:
    for data in (payload, struct.pack("<iff", 0, a, b) + payload):
        msg = CompressedImage(format=fmt, data=data)
        try:
            depth, encoding = decode_compressed_depth(msg)
        except ValueError as error:
            assert str(error)
            continue
        assert encoding in ("16UC1", "32FC1") and depth.ndim == 2


@PROPS
@given(st.data(), st.sampled_from(["16UC1", "32FC1"]))
def test_compressed_depth_with_a_damaged_payload_raises_only_value_error(
    data: st.DataObject, encoding: str
) -> None:
    if encoding == "16UC1":
        depth = data.draw(hnp.arrays(np.uint16, (6, 6)))
    else:
        depth = data.draw(
            hnp.arrays(np.float32, (6, 6), elements=st.floats(-1, 20, width=32) | st.just(np.nan))
        )
    good = bytes(encode_compressed_depth(depth, encoding).data)
    # Keep the 12-byte header (so the decoder gets past it) and damage the PNG after it.
    start = data.draw(st.integers(12, len(good) - 1))
    end = data.draw(st.integers(start, len(good)))
    junk = data.draw(st.binary(max_size=32))
    fmt = f"{encoding}; compressedDepth png"
    msg = CompressedImage(format=fmt, data=good[:start] + junk + good[end:])
    try:
        out, out_encoding = decode_compressed_depth(msg)
    except ValueError as error:
        assert str(error)
        return
    assert out_encoding == encoding and out.ndim == 2


@PROPS
@given(hnp.arrays(np.uint16, (5, 7)))
def test_compressed_16uc1_depth_round_trips_exactly(depth: np.ndarray) -> None:
    msg = encode_compressed_depth(depth, "16UC1")
    out, encoding = decode_compressed_depth(msg)
    assert encoding == "16UC1"
    np.testing.assert_array_equal(out, depth)
