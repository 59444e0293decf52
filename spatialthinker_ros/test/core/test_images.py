"""Tests of the sensor_msgs <-> numpy conversions and the compressed decoders."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from png_bomb import png_bomb
from sensor_msgs.msg import CompressedImage, Image

from spatialthinker_ros.core.images import (
    ENCODINGS,
    decode_compressed_depth,
    decode_compressed_image,
    encode_compressed_depth,
    encode_compressed_image,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    to_rgb,
)

RNG = np.random.default_rng(7)


def _sample(encoding: str, h: int = 6, w: int = 10) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (h, w) if info.channels == 1 else (h, w, info.channels)
    if info.dtype == np.float32:
        return RNG.uniform(0.2, 9.0, shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(info.dtype).max, shape, endpoint=True).astype(info.dtype)


def _smooth_rgb(h: int = 16, w: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), 128 + 0 * xx], -1).astype(np.uint8)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 6])
def test_round_trip_every_encoding_packed_and_padded(encoding: str, pad: int) -> None:
    arr = _sample(encoding)
    row = arr.shape[1] * ENCODINGS[encoding].pixel_bytes
    msg = numpy_to_image(arr, encoding, step=row + pad)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 10, row + pad, encoding)
    assert len(msg.data) == (row + pad) * 6
    out = image_to_numpy(msg)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
@pytest.mark.parametrize("pad", [0, 4])
def test_big_endian_multibyte_round_trip(encoding: str, pad: int) -> None:
    arr = _sample(encoding)
    msg = numpy_to_image(arr, encoding, step=arr.shape[1] * arr.itemsize + pad, is_bigendian=True)
    assert msg.is_bigendian
    # The wire really is big-endian: the first element's bytes are in network order.
    first = bytes(msg.data[: arr.itemsize])
    assert first == arr.reshape(-1)[:1].astype(arr.dtype.newbyteorder(">")).tobytes()
    out = image_to_numpy(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_hand_built_big_endian_16uc1() -> None:
    msg = Image(height=1, width=2, encoding="16UC1", is_bigendian=1, step=4)
    msg.data = bytes([0x01, 0x02, 0x00, 0x10])
    np.testing.assert_array_equal(image_to_numpy(msg), [[0x0102, 0x0010]])


def test_rgb8_is_a_view_on_the_message_buffer() -> None:
    arr = _sample("rgb8", 48, 64)
    for pad in (0, 8):
        msg = numpy_to_image(arr, "rgb8", step=64 * 3 + pad)
        out = image_to_numpy(msg)
        assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
        assert to_rgb(out, "rgb8") is out
        np.testing.assert_array_equal(image_to_rgb(msg), arr)


def test_16uc1_padded_is_a_view() -> None:
    arr = _sample("16UC1", 5, 7)
    msg = numpy_to_image(arr, "16UC1", step=7 * 2 + 2)
    out = image_to_numpy(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(out, arr)


def test_odd_step_for_16_bit_still_decodes() -> None:
    arr = _sample("16UC1", 3, 4)
    msg = numpy_to_image(arr, "16UC1", step=4 * 2 + 1)
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def _msg(**kw: object) -> Image:
    fields = {"height": 2, "width": 3, "encoding": "rgb8", "step": 9, "data": bytes(18)}
    fields.update(kw)
    msg = Image()
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"encoding": "bayer_rggb8"}, "unsupported image encoding 'bayer_rggb8'"),
        ({"data": bytes(17)}, "shorter than step * height"),
        ({"step": 8}, "smaller than width * bytes per pixel"),
        ({"height": 0, "data": b""}, "zero size"),
        ({"width": 0}, "zero size"),
    ],
)
def test_bad_messages_raise_value_error_naming_the_problem(fields: dict, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        image_to_numpy(_msg(**fields))
    assert needle in str(info.value)


def test_unknown_encoding_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError) as info:
        image_to_numpy(_msg(encoding="nv12"))
    for name in ENCODINGS:
        assert name in str(info.value)


def test_numpy_to_image_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="does not match encoding"):
        numpy_to_image(np.zeros((2, 3), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="dtype"):
        numpy_to_image(np.zeros((2, 3), np.float32), "16UC1")
    with pytest.raises(ValueError, match="smaller than a row"):
        numpy_to_image(np.zeros((2, 3, 3), np.uint8), "rgb8", step=8)


def test_to_rgb_colour_orders() -> None:
    rgb = _sample("rgb8", 4, 6)
    np.testing.assert_array_equal(to_rgb(rgb[..., ::-1], "bgr8"), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])
    np.testing.assert_array_equal(to_rgb(rgba, "rgba8"), rgb)
    bgra = np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)])
    np.testing.assert_array_equal(to_rgb(bgra, "bgra8"), rgb)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(to_rgb(grey, "mono8"), np.dstack([grey] * 3))
    wide = grey.astype(np.uint16) << 8 | 0xFF
    np.testing.assert_array_equal(to_rgb(wide, "mono16"), np.dstack([grey] * 3))


def test_to_rgb_rejects_depth_and_unknown_encodings() -> None:
    with pytest.raises(ValueError, match="not a colour encoding"):
        to_rgb(np.zeros((2, 2), np.uint16), "16UC1")
    with pytest.raises(ValueError, match="supported encodings"):
        to_rgb(np.zeros((2, 2), np.uint8), "weird")


@pytest.mark.parametrize(
    ("encoding", "code"),
    [("yuv422", cv2.COLOR_RGB2YUV_UYVY), ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2)],
)
def test_yuv422_byte_orders(encoding: str, code: int) -> None:
    rgb = _smooth_rgb()
    packed = cv2.cvtColor(rgb, code)  # HxWx2
    msg = numpy_to_image(packed, encoding)
    assert msg.step == rgb.shape[1] * 2
    out = image_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= 12  # chroma is shared by pixel pairs
    # Reading the bytes with the other byte order gives a visibly wrong picture.
    other = "yuv422_yuy2" if encoding == "yuv422" else "yuv422"
    assert np.abs(to_rgb(packed, other).astype(int) - rgb).mean() > 20


def test_uyvy_hand_built_grey_and_red() -> None:
    # UYVY: U0 Y0 V0 Y1. Neutral chroma gives grey; high V gives red.
    grey = np.array([[[128, 100], [128, 100]]], np.uint8)
    np.testing.assert_allclose(to_rgb(grey, "yuv422").astype(int), 100 * 255 / 219 - 18, atol=3)
    red = np.array([[[90, 81], [240, 81]]], np.uint8)  # BT.601 limited-range red
    out = to_rgb(red, "yuv422")[0, 0].astype(int)
    assert out[0] > 230 and out[1] < 30 and out[2] < 30


def test_compressed_png_is_exact_and_jpeg_close() -> None:
    rgb = _smooth_rgb(24, 40)
    png = encode_compressed_image(rgb, "png")
    assert png.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_compressed_image(png), rgb)
    jpg = encode_compressed_image(rgb, "jpeg")
    assert np.abs(decode_compressed_image(jpg).astype(int) - rgb).mean() < 4


def test_compressed_grey_png_decodes_to_rgb() -> None:
    grey = _sample("mono8", 8, 8)
    msg = CompressedImage(format="png")
    msg.data = cv2.imencode(".png", grey)[1].tobytes()
    np.testing.assert_array_equal(decode_compressed_image(msg), np.dstack([grey] * 3))


def test_compressed_image_errors() -> None:
    with pytest.raises(ValueError, match="decode_compressed_depth"):
        decode_compressed_image(CompressedImage(format="16UC1; compressedDepth png", data=b"x"))
    with pytest.raises(ValueError, match="could not decode"):
        decode_compressed_image(CompressedImage(format="jpeg", data=b"not a jpeg"))
    with pytest.raises(ValueError, match="no data"):
        decode_compressed_image(CompressedImage(format="jpeg"))


def test_compressed_depth_16uc1_is_exact() -> None:
    depth = _sample("16UC1", 12, 20)
    depth[0, :5] = 0
    msg = encode_compressed_depth(depth, "16UC1")
    assert msg.format == "16UC1; compressedDepth png"
    out, enc = decode_compressed_depth(msg)
    assert enc == "16UC1" and out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)


def test_compressed_depth_32fc1_inverse_depth_quantisation() -> None:
    depth = RNG.uniform(0.3, 9.0, (12, 20)).astype(np.float32)
    depth[1, 1], depth[2, 2], depth[3, 3] = np.nan, np.inf, 0.0
    msg = encode_compressed_depth(depth, "32FC1", depth_max=10.0, depth_quantization=100.0)
    out, enc = decode_compressed_depth(msg)
    assert enc == "32FC1" and out.dtype == np.float32
    assert np.isnan(out[1, 1]) and np.isnan(out[2, 2]) and np.isnan(out[3, 3])
    ok = np.isfinite(depth) & (depth > 0)
    # Inverse-depth quantisation: the step grows with depth squared (~z^2 / a).
    err = np.abs(out[ok] - depth[ok])
    assert np.all(err <= depth[ok] ** 2 / (100 * 101) + 1e-4)


def test_compressed_depth_hand_built_header() -> None:
    # depth = a / (v - b): with a=2, b=-1 a stored 3 means 0.5 m; 0 means invalid.
    png = cv2.imencode(".png", np.array([[3, 0, 1]], np.uint16))[1].tobytes()
    msg = CompressedImage(format="32FC1; compressedDepth png")
    msg.data = struct.pack("<iff", 0, 2.0, -1.0) + png
    out, _ = decode_compressed_depth(msg)
    np.testing.assert_allclose(out[0, [0, 2]], [0.5, 1.0])
    assert np.isnan(out[0, 1])


def test_compressed_depth_without_header_16uc1() -> None:
    depth = _sample("16UC1", 4, 4)
    msg = CompressedImage(format="16UC1; compressedDepth")
    msg.data = cv2.imencode(".png", depth)[1].tobytes()
    np.testing.assert_array_equal(decode_compressed_depth(msg)[0], depth)


@pytest.mark.parametrize(
    ("fmt", "data", "needle"),
    [
        ("jpeg", b"x" * 30, "not a compressedDepth format"),
        ("8UC1; compressedDepth png", b"x" * 30, "supported: 16UC1, 32FC1"),
        ("16UC1; compressedDepth rvl", b"x" * 30, "RVL is not supported"),
        ("16UC1; compressedDepth png", b"x" * 5, "truncated"),
        ("16UC1; compressedDepth png", b"x" * 30, "does not hold a PNG"),
    ],
)
def test_compressed_depth_errors(fmt: str, data: bytes, needle: str) -> None:
    msg = CompressedImage(format=fmt)
    msg.data = data
    with pytest.raises(ValueError) as info:
        decode_compressed_depth(msg)
    assert needle in str(info.value)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "progressive", "tiff"])
def test_encoded_size_is_read_from_the_header(fmt: str) -> None:
    from spatialthinker_ros.core.images import check_encoded_size

    image = np.zeros((37, 53, 3), dtype=np.uint8)
    if fmt in ("png", "tiff"):
        ok, buf = cv2.imencode(f".{fmt}", image)
    else:
        params = [cv2.IMWRITE_JPEG_PROGRESSIVE, int(fmt == "progressive")]
        ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    assert check_encoded_size(buf.tobytes()) == (53, 37)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # Issue 17, Medium 5: a small PNG claiming 12000 x 12000 pixels (432 MB as RGB).
    import resource

    bomb = png_bomb(12000, 12000)
    assert len(bomb) < 400_000
    msg = CompressedImage(format="png", data=bomb)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"claims 12000x12000 pixels, more than the limit of "):
        decode_compressed_image(msg)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert grown_mib < 50, f"peak memory grew by {grown_mib:.0f} MiB"
    # The limit is the caller's: a larger one decodes the same data.
    small = CompressedImage(format="png", data=png_bomb(300, 200))
    with pytest.raises(ValueError, match="300x200"):
        decode_compressed_image(small, max_size=(299, 4096))
    assert decode_compressed_image(small, max_size=(300, 200)).shape == (200, 300, 3)


def _tiff_message(image: np.ndarray) -> CompressedImage:
    """A CompressedImage as image_transport's compressed plugin writes it in tiff mode: OpenCV's
    TIFF of the BGR image, format ``"rgb8; tiff compressed "``."""
    ok, buf = cv2.imencode(".tiff", image)
    assert ok
    return CompressedImage(format="rgb8; tiff compressed ", data=buf.tobytes())


def test_compressed_tiff_colour_decodes_exactly() -> None:
    # Issue 26, Low 10: refused as "neither PNG nor JPEG" although image_transport writes it.
    rgb = _smooth_rgb(24, 40)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(decode_compressed_image(_tiff_message(bgr)), rgb)
    # 16-bit colour keeps its top 8 bits; grey becomes three equal channels.
    wide = bgr.astype(np.uint16) << 8 | 0x7F
    np.testing.assert_array_equal(decode_compressed_image(_tiff_message(wide)), rgb)
    grey = _sample("mono8", 8, 8)
    np.testing.assert_array_equal(
        decode_compressed_image(_tiff_message(grey)), np.dstack([grey] * 3)
    )


def test_compressed_tiff_that_is_not_a_colour_image_is_refused_by_name() -> None:
    floats = _tiff_message(RNG.uniform(0, 1, (8, 8, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="float32 pixels"):
        decode_compressed_image(floats)
    with pytest.raises(ValueError, match="could not decode: TIFF data has no image directory"):
        decode_compressed_image(CompressedImage(format="tiff", data=b"II*\x00\xff\xff\xff\x7f"))


def _tiff_bomb(width: int, height: int) -> bytes:
    """A valid grey 8-bit TIFF of ``width x height`` zero pixels in one Deflate strip: a few
    hundred kB for gigapixels (the TIFF counterpart of ``png_bomb``)."""
    compressor = zlib.compressobj(9)
    row = bytes(width)
    strip = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    # (tag, type, value): ImageWidth, ImageLength (LONG); BitsPerSample 8, Compression 8
    # (Deflate), Photometric 1 (black is zero), SamplesPerPixel 1 (SHORT); StripOffsets,
    # RowsPerStrip, StripByteCounts (LONG).
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1)]
    data_at = 8 + 2 + 9 * 12 + 4
    entries += [(273, 4, data_at), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        # A SHORT value is left-justified in the 4-byte value field.
        value_bytes = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + value_bytes
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip


def test_tiff_decompression_bomb_is_refused_before_decoding() -> None:
    import resource

    bomb = _tiff_bomb(12000, 12000)
    assert len(bomb) < 400_000
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"claims 12000x12000 pixels, more than the limit of "):
        decode_compressed_image(CompressedImage(format="rgb8; tiff compressed ", data=bomb))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert grown_mib < 50, f"peak memory grew by {grown_mib:.0f} MiB"
    # The same construction is a real TIFF: within the limit it decodes.
    small = CompressedImage(format="tiff", data=_tiff_bomb(300, 200))
    with pytest.raises(ValueError, match="300x200"):
        decode_compressed_image(small, max_size=(4096, 199))
    decoded = decode_compressed_image(small, max_size=(300, 200))
    assert decoded.shape == (200, 300, 3) and not decoded.any()


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_tiff_size_from_every_header_layout(order: str, big: bool) -> None:
    from spatialthinker_ros.core.images import check_encoded_size

    mark = b"II" if order == "<" else b"MM"
    if big:  # BigTIFF: version 43, 8-byte offsets and counts, 20-byte entries
        header = mark + struct.pack(order + "HHHQ", 43, 8, 0, 16)
        ifd = struct.pack(order + "Q", 2)
        ifd += struct.pack(order + "HHQQ", 256, 16, 1, 70000)  # LONG8 width
        ifd += struct.pack(order + "HHQH6x", 257, 3, 1, 33)  # SHORT height, left-justified
    else:
        header = mark + struct.pack(order + "HI", 42, 8)
        ifd = struct.pack(order + "H", 2)
        ifd += struct.pack(order + "HHIH2x", 256, 3, 1, 70)  # SHORT width, left-justified
        ifd += struct.pack(order + "HHII", 257, 4, 1, 33000)  # LONG height
    width = 70000 if big else 70
    height = 33 if big else 33000
    with pytest.raises(ValueError, match=f"claims {width}x{height} pixels"):
        check_encoded_size(header + ifd + bytes(8))
    assert check_encoded_size(header + ifd + bytes(8), (70000, 33000)) == (width, height)


def test_compressed_depth_bomb_is_refused_before_decoding() -> None:
    from spatialthinker_ros.core.images import decode_compressed_depth

    msg = CompressedImage(format="16UC1; compressedDepth png", data=png_bomb(100, 80))
    with pytest.raises(ValueError, match="claims 100x80 pixels"):
        decode_compressed_depth(msg, max_size=(64, 64))


def test_depth_message_to_metres_reads_every_transport_in_the_scale_given() -> None:
    from spatialthinker_ros.core.images import depth_message_to_metres

    units = np.array([[0, 5000], [10000, 2500]], np.uint16)  # TUM: 1/5000 m
    raw = numpy_to_image(units, "16UC1")
    metres, applied = depth_message_to_metres(raw, 0.0002)
    assert applied == 0.0002
    np.testing.assert_allclose(metres, [[np.nan, 1.0], [2.0, 0.5]])
    as_mm, applied = depth_message_to_metres(raw)
    assert applied is None and as_mm[0, 1] == pytest.approx(5.0)
    floats = numpy_to_image(np.array([[1.5, np.nan]], np.float32), "32FC1")
    metres, applied = depth_message_to_metres(floats, 0.0002)  # 32FC1 is metres whatever
    assert applied is None and metres[0, 0] == pytest.approx(1.5) and np.isnan(metres[0, 1])
    packed = encode_compressed_depth(units, "16UC1")
    metres, applied = depth_message_to_metres(packed, 0.0002)
    np.testing.assert_allclose(metres, [[np.nan, 1.0], [2.0, 0.5]])
    with pytest.raises(ValueError, match="rgb8"):
        depth_message_to_metres(numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))
