"""Frame buffering and selection: stamps from CDR bytes, age, future stamps, depth sync."""

from __future__ import annotations

import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from spatialthinker_ros.core.frame_buffer import (
    FrameBuffer,
    NoFrameError,
    StampedItem,
    cdr_header_stamp,
    nearest_in_time,
)


def _serialized_image(sec: int, nanosec: int, cls: type = Image) -> bytes:
    msg = cls()
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.header.frame_id = "camera_color_optical_frame"
    return serialize_message(msg)


@pytest.mark.parametrize("cls", [Image, CompressedImage])
def test_stamp_is_read_from_serialized_bytes(cls: type) -> None:
    assert cdr_header_stamp(_serialized_image(1700000000, 250_000_000, cls)) == pytest.approx(
        1700000000.25
    )


def test_negative_seconds_and_big_endian_stamps() -> None:
    little = _serialized_image(-5, 0)
    assert cdr_header_stamp(little) == -5.0
    big = b"\x00\x00\x00\x00" + (7).to_bytes(4, "big") + (500_000_000).to_bytes(4, "big")
    assert cdr_header_stamp(big) == pytest.approx(7.5)


@pytest.mark.parametrize("data", [b"", b"\x00\x01\x00\x00\x01", b"\xff\xff\x00\x00" + b"\x00" * 8])
def test_bad_bytes_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        cdr_header_stamp(data)


def _buffer(colour: list[float], depth: list[float]) -> FrameBuffer:
    buffer = FrameBuffer(colour_history=4, depth_history=8)
    for stamp in colour:
        buffer.add_colour(stamp, f"colour@{stamp}", 0.0)
    for stamp in depth:
        buffer.add_depth(stamp, f"depth@{stamp}", 0.0)
    return buffer


def test_newest_colour_and_nearest_depth_are_chosen() -> None:
    buffer = _buffer([10.0, 10.1, 10.2], [10.05, 10.16, 10.23])
    selection = buffer.select(now=10.3, max_frame_age=1.0, sync_slop=0.05)
    assert selection.colour.message == "colour@10.2"
    assert selection.depth is not None and selection.depth.message == "depth@10.23"
    assert selection.depth_reason == ""


def test_no_frame_yet_is_a_clear_error() -> None:
    with pytest.raises(NoFrameError, match="no colour frame received yet"):
        FrameBuffer().select(now=1.0, max_frame_age=1.0, sync_slop=0.05)


def test_old_frame_is_refused_with_its_age() -> None:
    buffer = _buffer([10.0], [])
    with pytest.raises(NoFrameError, match=r"2\.500 s old \(max_frame_age 1 s\)"):
        buffer.select(now=12.5, max_frame_age=1.0, sync_slop=0.05)


def test_future_frames_are_skipped_and_reported() -> None:
    buffer = _buffer([10.0, 30.0], [])
    # The future frame is skipped in favour of the older valid one.
    assert buffer.select(now=10.2, max_frame_age=1.0, sync_slop=0.05).colour.stamp == 10.0
    only_future = _buffer([30.0], [])
    with pytest.raises(NoFrameError, match="stamped in the future"):
        only_future.select(now=10.0, max_frame_age=1.0, sync_slop=0.05)


def test_depth_outside_slop_or_missing_or_disabled_gives_a_reason() -> None:
    far = _buffer([10.0], [9.0]).select(now=10.0, max_frame_age=1.0, sync_slop=0.05)
    assert far.depth is None and "within sync_slop" in far.depth_reason
    missing = _buffer([10.0], []).select(now=10.0, max_frame_age=1.0, sync_slop=0.05)
    assert missing.depth is None and "no depth frame received" in missing.depth_reason
    disabled = _buffer([10.0], [10.0]).select(10.0, 1.0, 0.05, use_depth=False)
    assert disabled.depth is None and "disabled" in disabled.depth_reason


def test_nearest_in_time_is_the_one_pairing_rule() -> None:
    # The node's buffer and `spatialthinker replay` pair colour and depth with this function.
    items = [StampedItem(t, f"depth@{t}", 0.0) for t in (9.9, 10.04, 10.2)]
    item, gap = nearest_in_time(10.0, items, 0.05)
    assert item is items[1] and gap == pytest.approx(0.04)
    # Recorded after the colour frame or before it: only the distance counts.
    assert nearest_in_time(10.18, items, 0.05)[0] is items[2]
    # Within the slop is in; beyond it is out, with the gap for the reason.
    assert nearest_in_time(10.24, items, 0.05)[0] is items[2]
    item, gap = nearest_in_time(11.0, items, 0.05)
    assert item is None and gap == pytest.approx(0.8)
    assert nearest_in_time(10.0, [], 0.05) == (None, float("inf"))
    # A colour frame without a usable stamp is matched to nothing.
    assert nearest_in_time(float("nan"), items, 0.05)[0] is None


def test_history_is_bounded_and_clear_forgets() -> None:
    buffer = _buffer([float(i) for i in range(100)], [float(i) for i in range(100)])
    assert buffer.colour_stats.count == 100
    assert buffer.newest_colour_stamp() == 99.0
    assert len(buffer._colour) == 4 and len(buffer._depth) == 8
    buffer.clear()
    with pytest.raises(NoFrameError):
        buffer.select(now=99.0, max_frame_age=1.0, sync_slop=0.05)


def test_rate_is_measured_from_arrivals() -> None:
    buffer = FrameBuffer()
    for i in range(31):
        buffer.add_colour(float(i), None, received=100.0 + i / 30.0)
    assert buffer.colour_stats.rate_hz(now=101.0) == pytest.approx(30.0, rel=0.01)


def test_future_frames_after_old_ones_are_reported_as_future() -> None:
    buffer = _buffer([10.0, 99.0, 99.1], [])
    with pytest.raises(NoFrameError, match="stamped in the future"):
        buffer.select(now=40.0, max_frame_age=1.0, sync_slop=0.05)


def test_requests_on_one_frame_share_one_decoded_copy() -> None:
    # Issue 17, Medium 5: every queued request used to hold its own decoded frame.
    import gc

    import numpy as np

    buffer = _buffer([1.0], [])
    item = buffer.select(1.0, 1.0, 0.05, use_depth=False).colour
    calls = []

    def decode(message: object) -> tuple[str, np.ndarray]:
        calls.append(message)
        return "header", np.zeros((4, 4, 3), dtype=np.uint8)

    header, first = buffer.decoded(item, decode)
    _, second = buffer.decoded(buffer.select(1.0, 1.0, 0.05, use_depth=False).colour, decode)
    assert second is first and header == "header" and len(calls) == 1
    # Once no request holds it, it is freed, and the next request decodes again.
    del first, second
    gc.collect()
    _, third = buffer.decoded(item, decode)
    assert len(calls) == 2 and third.shape == (4, 4, 3)


def test_a_failed_decode_is_not_shared() -> None:
    buffer = _buffer([1.0], [])
    item = buffer.select(1.0, 1.0, 0.05, use_depth=False).colour

    def decode(message: object) -> tuple[str, object]:
        raise ValueError("broken frame")

    for _ in range(2):
        with pytest.raises(ValueError, match="broken frame"):
            buffer.decoded(item, decode)
