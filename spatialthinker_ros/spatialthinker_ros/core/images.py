"""Exact, copy-free conversions between sensor_msgs images and numpy arrays.

No cv_bridge wheel exists for the environments this package targets (and the PyPI package named
``cv-bridge`` is unrelated ROS 1 code), so the conversions live here. They are deliberately small:

* :func:`image_to_numpy` returns the pixels in the message's own layout (``bgr8`` stays BGR,
  ``16UC1`` stays uint16 millimetres), as a *view* on the message buffer whenever the byte order
  is native. Padded rows (``step`` larger than ``width * bytes per pixel``) are handled with
  strides, not copies.
* :func:`to_rgb` turns any supported colour array into RGB uint8 ``HxWx3``.
* :func:`numpy_to_image` builds a ``sensor_msgs/Image`` (optionally padded or big-endian, which the
  tests use to exercise the decoder).
* :func:`decode_compressed_image` and :func:`decode_compressed_depth` decode
  ``sensor_msgs/CompressedImage`` from image_transport's ``compressed`` (JPEG, PNG, TIFF) and
  ``compressedDepth`` plugins; :func:`encode_compressed_image` and
  :func:`encode_compressed_depth` are their inverses. Every compressed image's size is read from
  its header and bounded before it is decoded (:func:`check_encoded_size`).

Depth stays in its wire units here; :func:`spatialthinker_ros.core.camera.depth_to_metres` converts.
Every malformed message raises :class:`ValueError` with a message that names the problem.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "COLOUR_ENCODINGS",
    "DEFAULT_MAX_DECODE_SIZE",
    "DEPTH_ENCODINGS",
    "ENCODINGS",
    "EncodingInfo",
    "ImageTooLarge",
    "check_encoded_size",
    "decode_compressed_depth",
    "decode_compressed_image",
    "encode_compressed_depth",
    "encode_compressed_image",
    "image_to_numpy",
    "image_to_rgb",
    "numpy_to_image",
    "to_rgb",
]


@dataclass(frozen=True)
class EncodingInfo:
    """Memory layout of one ``sensor_msgs/Image`` encoding.

    Attributes:
        dtype: Element type in native byte order (``is_bigendian`` picks the wire order).
        channels: Elements per pixel. ``yuv422`` formats are 2 bytes per pixel (one luma byte and
            one alternating chroma byte), so they are represented as ``HxWx2`` uint8.
    """

    dtype: np.dtype
    channels: int

    @property
    def pixel_bytes(self) -> int:
        """Bytes per pixel."""
        return self.dtype.itemsize * self.channels


# One table for every encoding trait, as depth_image_proc does: adding an encoding is one line.
ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "mono16": EncodingInfo(np.dtype(np.uint16), 1),
    "16UC1": EncodingInfo(np.dtype(np.uint16), 1),
    "32FC1": EncodingInfo(np.dtype(np.float32), 1),
    # ROS "yuv422" is UYVY byte order; "yuv422_yuy2" is YUYV.
    "yuv422": EncodingInfo(np.dtype(np.uint8), 2),
    "yuv422_yuy2": EncodingInfo(np.dtype(np.uint8), 2),
}

COLOUR_ENCODINGS = frozenset(
    {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "yuv422_yuy2"}
)
DEPTH_ENCODINGS = frozenset({"16UC1", "32FC1", "mono16"})

_SUPPORTED = ", ".join(ENCODINGS)
_NATIVE_BIG = sys.byteorder == "big"


def _encoding_info(encoding: str) -> EncodingInfo:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported encodings: {_SUPPORTED}"
        ) from None


def image_to_numpy(msg: Any) -> np.ndarray:
    """Return the pixels of a ``sensor_msgs/Image`` as a numpy array in the message's layout.

    Single-channel encodings give ``HxW``; multi-channel ``HxWxC`` (``yuv422*``: ``HxWx2``).
    When the wire byte order is native the result is a view on ``msg.data`` (no per-pixel work,
    also with padded rows), so it is only valid while the message is alive and it may be
    read-only; copy it if you need to keep or modify it. Big-endian multi-byte data is converted
    to native order (a copy).

    Args:
        msg: A ``sensor_msgs.msg.Image`` (or any object with the same fields).

    Returns:
        The pixel array.

    Raises:
        ValueError: Unknown encoding, zero size, ``step`` smaller than ``width * bytes per
            pixel``, or ``data`` shorter than ``step * height``.
    """
    info = _encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero size ({width}x{height})")
    row_bytes = width * info.pixel_bytes
    if step < row_bytes:
        raise ValueError(
            f"image step {step} is smaller than width * bytes per pixel = {width} * "
            f"{info.pixel_bytes} = {row_bytes} for encoding {msg.encoding!r}"
        )
    # np.frombuffer accepts bytes, bytearray, memoryview and the array.array that rclpy uses,
    # without copying.
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    needed = step * height
    if buf.size < needed:
        raise ValueError(
            f"image data is {buf.size} bytes, shorter than step * height = {step} * {height} "
            f"= {needed}"
        )
    big = bool(msg.is_bigendian)
    dtype = info.dtype.newbyteorder(">" if big else "<") if info.dtype.itemsize > 1 else info.dtype
    shape = (height, width, info.channels)
    itemsize = info.dtype.itemsize
    if step % itemsize == 0 and buf.ctypes.data % itemsize == 0:
        # Reinterpret the first step*height bytes, then stride over the (possibly padded) rows.
        typed = buf[:needed].view(dtype)
        arr = np.lib.stride_tricks.as_strided(
            typed,
            shape=shape,
            strides=(step, info.pixel_bytes, itemsize),
            writeable=typed.flags.writeable,
        )
    else:
        # Rows that do not start on an element boundary cannot be viewed; copy them (rare).
        rows = buf[:needed].reshape(height, step)[:, :row_bytes]
        arr = np.ascontiguousarray(rows).view(dtype).reshape(shape)
    if itemsize > 1 and big != _NATIVE_BIG:
        arr = arr.astype(info.dtype)  # byte swap to native order: needs a copy
    if info.channels == 1:
        arr = arr[:, :, 0]
    return arr


def numpy_to_image(
    array: np.ndarray,
    encoding: str,
    header: Any = None,
    *,
    step: int | None = None,
    is_bigendian: bool = False,
) -> Any:
    """Build a ``sensor_msgs/Image`` from a numpy array.

    Args:
        array: ``HxW`` or ``HxWxC`` array matching ``encoding`` (``HxWx2`` for ``yuv422*``).
            ``32FC1`` also accepts float64, which is cast.
        encoding: One of :data:`ENCODINGS`.
        header: Optional ``std_msgs/Header`` to copy into the message.
        step: Row length in bytes; larger than ``width * bytes per pixel`` pads each row with
            zeros. Defaults to the packed row length.
        is_bigendian: Write multi-byte elements big-endian.

    Returns:
        A ``sensor_msgs.msg.Image``.

    Raises:
        ValueError: Unknown encoding, shape or dtype that does not match it, zero size, or a
            ``step`` smaller than a row.
    """
    from sensor_msgs.msg import Image  # lazy: keeps this module importable without ROS

    info = _encoding_info(encoding)
    arr = np.asarray(array)
    if encoding == "32FC1" and arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.ndim == 2 and info.channels == 1:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != info.channels:
        raise ValueError(
            f"array of shape {arr.shape} does not match encoding {encoding!r} "
            f"({info.channels} channel(s))"
        )
    if arr.dtype.newbyteorder("=") != info.dtype:
        raise ValueError(f"array dtype {arr.dtype} does not match encoding {encoding!r}")
    height, width = arr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image has zero size ({width}x{height})")
    row_bytes = width * info.pixel_bytes
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f"step {step} is smaller than a row ({row_bytes} bytes)")
    wire = arr.astype(info.dtype.newbyteorder(">" if is_bigendian else "<"), copy=False)
    rows = np.ascontiguousarray(wire).view(np.uint8).reshape(height, row_bytes)
    if step > row_bytes:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = rows
        rows = padded
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = int(bool(is_bigendian) and info.dtype.itemsize > 1)
    msg.step = step
    msg.data = rows.tobytes()
    return msg


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a colour image in ``encoding`` layout to RGB uint8 ``HxWx3``.

    ``rgb8`` is returned as is (a view, possibly non-contiguous or read-only); other encodings are
    converted with OpenCV. ``mono16`` keeps its top 8 bits.

    Args:
        array: Pixels as returned by :func:`image_to_numpy`.
        encoding: The encoding of ``array``.

    Returns:
        RGB uint8 array of shape ``HxWx3``.

    Raises:
        ValueError: Not a colour encoding (depth encodings are rejected), or a shape that does not
            fit the encoding.
    """
    if encoding not in COLOUR_ENCODINGS:
        if encoding in ENCODINGS:
            raise ValueError(
                f"encoding {encoding!r} is not a colour encoding; colour encodings: "
                f"{', '.join(sorted(COLOUR_ENCODINGS))}"
            )
        _encoding_info(encoding)  # raises with the list of supported encodings
    info = ENCODINGS[encoding]
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1 and info.channels == 1:
        arr = arr[:, :, 0]
    expected_ndim = 2 if info.channels == 1 else 3
    if arr.ndim != expected_ndim or (expected_ndim == 3 and arr.shape[2] != info.channels):
        raise ValueError(f"array of shape {arr.shape} does not match encoding {encoding!r}")
    if encoding == "rgb8":
        return arr
    if encoding == "bgr8":
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if encoding == "rgba8":
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    if encoding == "bgra8":
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    if encoding == "mono16":
        arr = (arr >> 8).astype(np.uint8)
    if encoding in ("mono8", "mono16"):
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.shape[1] % 2:
        raise ValueError(f"{encoding} needs an even image width, got {arr.shape[1]}")
    code = cv2.COLOR_YUV2RGB_UYVY if encoding == "yuv422" else cv2.COLOR_YUV2RGB_YUY2
    return cv2.cvtColor(np.ascontiguousarray(arr), code)


def image_to_rgb(msg: Any) -> np.ndarray:
    """Decode a colour ``sensor_msgs/Image`` to RGB uint8 ``HxWx3`` (a view for ``rgb8``)."""
    return to_rgb(image_to_numpy(msg), msg.encoding)


# --- CompressedImage -----------------------------------------------------------------------

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# TIFF byte-order marks with their version: classic TIFF (42) and BigTIFF (43), each
# little-endian ("II") or big-endian ("MM"). image_transport's compressed plugin writes TIFF
# ("rgb8; tiff compressed ") as OpenCV encodes it: classic TIFF, little-endian.
_TIFF_MAGIC = {
    b"II*\x00": ("<", False),
    b"MM\x00*": (">", False),
    b"II+\x00": ("<", True),
    b"MM\x00+": (">", True),
}
# TIFF tags of the first image's width and height (ImageWidth, ImageLength).
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
# TIFF field types that can hold them: SHORT, LONG, LONG8 (BigTIFF) -> struct format.
_TIFF_INTEGER = {3: "H", 4: "I", 16: "Q"}
#: Largest (width, height) decoded by default. A few hundred kB of PNG can claim 60000 x 60000
#: pixels (gigabytes once decoded), so the size in the header is checked before decoding.
DEFAULT_MAX_DECODE_SIZE = (4096, 4096)


class ImageTooLarge(ValueError):
    """An encoded image whose header claims more pixels than the limit."""


def _tiff_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the first image of a TIFF (the one OpenCV decodes), from its first
    directory (IFD), without decoding the pixels.

    Raises:
        ValueError: A header or directory that lies outside the data, or no size in it.
    """
    order, big = _TIFF_MAGIC[data[:4]]
    # Classic: 4-byte IFD offset, 2-byte entry count, 12-byte entries with a 4-byte value field.
    # BigTIFF: 8-byte offset (after 2 bytes of offset size and 2 reserved), 8-byte count,
    # 20-byte entries with an 8-byte value field.
    offset_format, count_format, entry_size, value_at = (
        ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
    )
    header = 16 if big else 8
    if len(data) < header:
        raise ValueError("could not decode: TIFF data is truncated in its header")
    (ifd,) = struct.unpack_from(order + offset_format, data, 8 if big else 4)
    count_size = struct.calcsize(count_format)
    if ifd < header or ifd + count_size > len(data):
        raise ValueError("could not decode: TIFF data has no image directory within its bytes")
    (count,) = struct.unpack_from(order + count_format, data, ifd)
    size: dict[int, int] = {}
    for index in range(min(count, (len(data) - ifd - count_size) // entry_size)):
        at = ifd + count_size + index * entry_size
        tag, kind = struct.unpack_from(order + "HH", data, at)
        # LONG8 only fits the value field of BigTIFF.
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in _TIFF_INTEGER and (big or kind != 16):
            # A single value is stored left-justified in the entry's value field.
            (size[tag],) = struct.unpack_from(order + _TIFF_INTEGER[kind], data, at + value_at)
    if _TIFF_WIDTH not in size or _TIFF_HEIGHT not in size:
        raise ValueError("could not decode: TIFF data has no image width and height")
    return int(size[_TIFF_WIDTH]), int(size[_TIFF_HEIGHT])


def _encoded_size(data: bytes) -> tuple[int, int]:
    """(width, height) written in a PNG, JPEG or TIFF header, without decoding the pixels."""
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("could not decode: PNG data has no IHDR header")
        width, height = struct.unpack_from(">II", data, 16)
        return int(width), int(height)
    if data.startswith(_JPEG_MAGIC):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:  # stray bytes before a marker: skip them, as libjpeg does
                pos += 1
                continue
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                pos += 2
                continue
            (length,) = struct.unpack_from(">H", data, pos + 2)
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    break
                height, width = struct.unpack_from(">HH", data, pos + 5)
                return int(width), int(height)
            if marker == 0xDA or length < 2:  # image data before any frame header
                break
            pos += 2 + length
        raise ValueError("could not decode: JPEG data has no frame header with the image size")
    if data[:4] in _TIFF_MAGIC:
        return _tiff_size(data)
    raise ValueError(
        "could not decode: compressed data is neither PNG, JPEG nor TIFF (the formats"
        " image_transport writes)"
    )


def check_encoded_size(
    data: bytes, max_size: tuple[int, int] = DEFAULT_MAX_DECODE_SIZE
) -> tuple[int, int]:
    """Read the image size from a PNG, JPEG or TIFF header and refuse it before decoding if
    too big.

    Args:
        data: The encoded image.
        max_size: Largest ``(width, height)`` accepted.

    Returns:
        ``(width, height)`` from the header.

    Raises:
        ImageTooLarge: Larger than ``max_size`` (the message names both sizes).
        ValueError: Not PNG, JPEG or TIFF, or no readable header.
    """
    width, height = _encoded_size(data.tobytes() if isinstance(data, np.ndarray) else bytes(data))
    max_width, max_height = max_size
    if width > max_width or height > max_height:
        raise ImageTooLarge(
            f"compressed image claims {width}x{height} pixels, more than the limit of"
            f" {max_width}x{max_height}; refused before decoding"
        )
    return width, height


# compressed_depth_image_transport's ConfigHeader: enum compressionFormat (int32) followed by
# float depthParam[2]; written in the publisher's (in practice little-endian) byte order.
_DEPTH_HEADER = struct.Struct("<iff")
_INV_DEPTH = 0  # compressionFormat::INV_DEPTH


def _compressed_bytes(msg: Any) -> np.ndarray:
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ValueError("compressed image has no data")
    return data


def decode_compressed_image(
    msg: Any, max_size: tuple[int, int] = DEFAULT_MAX_DECODE_SIZE
) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg, png or tiff) to RGB uint8 ``HxWx3``.

    image_transport's ``compressed`` plugin encodes colour as BGR (format strings like
    ``"bgr8; jpeg compressed bgr8"``, ``"rgb8; tiff compressed "`` or plain ``"jpeg"``), which
    is what OpenCV decodes to. The format is told by the data's own header, not the string.
    Grey images become three equal channels; 16-bit images keep their top 8 bits.

    Args:
        msg: A ``sensor_msgs.msg.CompressedImage``.
        max_size: Largest ``(width, height)`` decoded (see :func:`check_encoded_size`).

    Returns:
        RGB uint8 array.

    Raises:
        ValueError: ``compressedDepth`` payloads (use :func:`decode_compressed_depth`), empty,
            undecodable or too large data.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ValueError(
            f"format {fmt!r} is a compressedDepth image; use decode_compressed_depth()"
        )
    data = _compressed_bytes(msg)
    check_encoded_size(data, max_size)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"could not decode compressed image (format {fmt!r})")
    # TIFF may hold what PNG and JPEG cannot (float or signed pixels, 2 or 5+ channels): refuse
    # it by name rather than hand the model an image it cannot read.
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"compressed image has {img.dtype} pixels (format {fmt!r}); colour must be 8 or"
            " 16-bit unsigned"
        )
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return to_rgb(img, "mono16" if img.dtype == np.uint16 else "mono8")
    if img.shape[2] not in (3, 4):
        raise ValueError(
            f"compressed image has {img.shape[2]} channels (format {fmt!r}); colour needs 1, 3 or 4"
        )
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_compressed_depth(
    msg: Any, max_size: tuple[int, int] = DEFAULT_MAX_DECODE_SIZE
) -> tuple[np.ndarray, str]:
    """Decode a ``compressedDepth`` ``sensor_msgs/CompressedImage``.

    The payload (image_transport's compressed_depth plugin, format like
    ``"16UC1; compressedDepth png"``) is a 12-byte ConfigHeader (int32 format, float32
    ``depthParam[2]``) followed by a 16-bit PNG. For ``16UC1`` the PNG holds the depth itself
    (millimetres). For ``32FC1`` it holds quantised inverse depth ``v``; with ``a, b =
    depthParam`` the depth is ``a / (v - b)`` metres and ``v == 0`` marks invalid pixels (NaN).
    Payloads without the header (very old publishers) are accepted too. RVL is not supported.

    Args:
        msg: A ``sensor_msgs.msg.CompressedImage``.
        max_size: Largest ``(width, height)`` decoded (see :func:`check_encoded_size`).

    Returns:
        ``(array, encoding)``: uint16 millimetres with ``"16UC1"``, or float32 metres (NaN for
        invalid) with ``"32FC1"``.

    Raises:
        ValueError: Not a compressedDepth format, unsupported depth encoding or compression,
            truncated or undecodable data.
    """
    fmt = str(msg.format)
    parts = [p.strip() for p in fmt.split(";")]
    if len(parts) < 2 or not parts[1].lower().startswith("compresseddepth"):
        raise ValueError(
            f"format {fmt!r} is not a compressedDepth format (expected e.g. "
            f"'16UC1; compressedDepth png')"
        )
    encoding = parts[0]
    if encoding not in ("16UC1", "32FC1"):
        raise ValueError(
            f"compressedDepth image has encoding {encoding!r}; supported: 16UC1, 32FC1"
        )
    if "rvl" in parts[1].lower():
        raise ValueError(f"compressedDepth RVL is not supported (format {fmt!r}); use png")
    data = _compressed_bytes(msg)
    raw = data.tobytes()
    if raw.startswith(_PNG_MAGIC):
        params = None  # no ConfigHeader
        png = data
    else:
        if len(raw) < _DEPTH_HEADER.size + len(_PNG_MAGIC):
            raise ValueError(f"compressedDepth data is truncated ({len(raw)} bytes)")
        fmt_enum, a, b = _DEPTH_HEADER.unpack_from(raw)
        if raw[_DEPTH_HEADER.size : _DEPTH_HEADER.size + 8] != _PNG_MAGIC:
            raise ValueError("compressedDepth data does not hold a PNG after its 12-byte header")
        params = (fmt_enum, a, b)
        png = data[_DEPTH_HEADER.size :]
    check_encoded_size(png, max_size)
    img = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("could not decode the compressedDepth PNG")
    if img.ndim != 2 or img.dtype != np.uint16:
        raise ValueError(
            f"compressedDepth PNG must be single-channel 16-bit, got {img.dtype} {img.shape}"
        )
    if encoding == "16UC1":
        return img, "16UC1"
    if params is None:
        raise ValueError("32FC1 compressedDepth data lacks the ConfigHeader with depthParam")
    _, a, b = params
    v = img.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(a) / (v - np.float32(b))
    depth[img == 0] = np.nan
    return depth.astype(np.float32, copy=False), "32FC1"


def encode_compressed_image(rgb: np.ndarray, fmt: str = "jpeg", header: Any = None) -> Any:
    """Encode RGB uint8 ``HxWx3`` into a ``sensor_msgs/CompressedImage`` like image_transport.

    Args:
        rgb: RGB uint8 image.
        fmt: ``"jpeg"`` or ``"png"``.
        header: Optional ``std_msgs/Header``.

    Returns:
        A ``sensor_msgs.msg.CompressedImage`` with format ``"rgb8; <fmt> compressed bgr8"``.
    """
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise ValueError(f"unsupported compression {fmt!r}; supported: jpeg, png")
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr)
    if not ok:
        raise ValueError("OpenCV could not encode the image")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = buf.tobytes()
    return msg


def encode_compressed_depth(
    depth: np.ndarray,
    encoding: str,
    header: Any = None,
    *,
    depth_max: float = 10.0,
    depth_quantization: float = 100.0,
) -> Any:
    """Encode depth like image_transport's compressed_depth plugin (png).

    Args:
        depth: ``16UC1`` uint16 millimetres, or ``32FC1`` float32 metres (NaN/inf/<=0 invalid).
        encoding: ``"16UC1"`` or ``"32FC1"``.
        header: Optional ``std_msgs/Header``.
        depth_max: 32FC1 only: depths at or beyond this are stored as invalid.
        depth_quantization: 32FC1 only: the plugin's quantisation parameter.

    Returns:
        A ``sensor_msgs.msg.CompressedImage`` with format ``"<encoding>; compressedDepth png"``.
    """
    from sensor_msgs.msg import CompressedImage

    if encoding == "16UC1":
        img = np.asarray(depth, dtype=np.uint16)
        a = b = 0.0
    elif encoding == "32FC1":
        # Same arithmetic as compressed_depth_image_transport's encoder.
        a = depth_quantization * (depth_quantization + 1.0)
        b = 1.0 - a / depth_max
        d = np.asarray(depth, dtype=np.float32)
        valid = np.isfinite(d) & (d > 0) & (d < depth_max)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inv = np.where(valid, a / d + b, 0.0)
        img = np.clip(inv, 0, 65535).astype(np.uint16)
    else:
        raise ValueError(f"compressedDepth supports 16UC1 and 32FC1, not {encoding!r}")
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("OpenCV could not encode the depth PNG")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"{encoding}; compressedDepth png"
    msg.data = _DEPTH_HEADER.pack(_INV_DEPTH, a, b) + png.tobytes()
    return msg


# --- Depth ---------------------------------------------------------------------------------


def depth_message_to_metres(
    msg: Any, scale: float | None = None, max_size: tuple[int, int] = DEFAULT_MAX_DECODE_SIZE
) -> tuple[np.ndarray, float | None]:
    """Decode a depth frame to float32 metres (NaN invalid), whatever its transport.

    Args:
        msg: A ``sensor_msgs/Image`` (16UC1, mono16 or 32FC1) or a ``compressedDepth``
            ``sensor_msgs/CompressedImage`` (any object with the same fields: rclpy's or a
            rosbags message).
        scale: Metres per unit of 16-bit depth (None: millimetres). 32FC1 is metres whatever
            it says.
        max_size: Largest ``(width, height)`` a compressed frame may decode to.

    Returns:
        ``(depth_m, scale)``: the depth, and the scale that applied (None for metres).

    Raises:
        ValueError: An encoding that is not depth, or undecodable data (the problem named).
    """
    from spatialthinker_ros.core.camera import depth_to_metres

    if hasattr(msg, "format"):  # CompressedImage
        array, encoding = decode_compressed_depth(msg, max_size)
    else:
        array, encoding = image_to_numpy(msg), str(msg.encoding)
    applied = None if encoding == "32FC1" else scale
    return depth_to_metres(array, encoding, applied), applied
