"""Property-based tests: the image decoders take any message and raise only ValueError."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from spatialthinker_ros.camera import depth_to_metres
from spatialthinker_ros.images import (
    ENCODINGS,
    decode_compressed_depth,
    decode_compressed_image,
    encode_compressed_image,
    image_to_numpy,
    to_rgb,
)

KNOWN = sorted(ENCODINGS)
encodings = st.one_of(st.sampled_from(KNOWN), st.text(max_size=12))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


@FUZZ
@given(st.data())
def test_mutated_jpeg_never_escapes_as_another_exception(data: st.DataObject) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    good = bytes(encode_compressed_image(rgb, "jpeg").data)
    index = data.draw(st.integers(0, len(good) - 1))
    cut = data.draw(st.integers(index, len(good)))
    junk = data.draw(st.binary(max_size=64))
    msg = CompressedImage(format="jpeg", data=good[:index] + junk + good[cut:])
    try:
        rgb = decode_compressed_image(msg)
    except ValueError:
        return
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3


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
