"""Frame buffering and selection: stamps from CDR bytes, age, future stamps, colour/depth pairing
(the newest pair, waits for a due depth frame), arrival lag and frames lost in transport."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from spatialthinker_ros.core.frame_buffer import (
    WAIT_MARGIN_S,
    FrameBuffer,
    NoFrameError,
    StampedItem,
    TopicStats,
    cdr_header_stamp,
    cdr_header_time,
    due_depth,
    nearest_in_time,
    pair_frames,
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
    # Exactly, for the answer's depth_stamp.
    assert cdr_header_time(_serialized_image(1700000000, 123_456_789, cls)) == (
        1700000000,
        123_456_789,
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
        buffer.add("colour", stamp, f"colour@{stamp}", 0.0)
    for stamp in depth:
        buffer.add("depth", stamp, f"depth@{stamp}", 0.0)
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
        buffer.add("colour", float(i), None, received=100.0 + i / 30.0)
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


# ------------------------------------------------------------------ pairing (issue 20)

FRAME = 1.0 / 30.0


def _items(stamps: list[float], received: float | None = None) -> list[StampedItem]:
    return [StampedItem(s, f"@{s:.3f}", s if received is None else received) for s in stamps]


def test_an_older_colour_frame_with_its_depth_beats_a_newer_one_without() -> None:
    # Depth published 60 ms after its colour: the two newest colour frames' depth is on its way.
    colours = [10.0 + i * FRAME for i in range(4)]
    buffer = _buffer(colours, colours[:2])
    selection = buffer.select(now=colours[-1], max_frame_age=1.0, sync_slop=0.05)
    # Newest-colour-first would answer colours[3] in 2D ("nearest 0.067 s away").
    assert selection.colour.stamp == colours[1]
    assert selection.depth is not None and selection.depth.stamp == colours[1]
    assert [c.stamp for c in selection.unpaired] == [colours[3], colours[2]]


def test_a_depth_frame_belongs_to_its_own_colour_frame() -> None:
    # Depth 10.0 is within sync_slop of colour 10.033 too, but it is colour 10.0's depth.
    pairing = pair_frames(_items([10.0, 10.0 + FRAME]), _items([10.0]), 10.05, 1.0, 0.05)
    assert pairing.colour.stamp == 10.0 and pairing.depth is not None
    assert pairing.depth.stamp == 10.0
    # Without its own colour frame, the depth frame pairs with the one it is within slop of.
    alone = pair_frames(_items([10.0 + FRAME]), _items([10.0]), 10.05, 1.0, 0.05)
    assert alone.depth is not None and alone.colour.stamp == 10.0 + FRAME


def test_depth_at_half_the_colour_rate_pairs_with_its_own_colour_frames() -> None:
    colours = [10.0 + i * FRAME for i in range(5)]
    depths = colours[0:4:2]  # 15 Hz; the depth of colours[4] is still on its way
    pairing = pair_frames(_items(colours), _items(depths), colours[-1], 1.0, 0.05)
    assert pairing.colour.stamp == colours[2] and pairing.depth.stamp == colours[2]


def test_pairs_stay_within_max_frame_age() -> None:
    # The only pair is older than max_frame_age: the newest colour frame, in 2D, with why.
    pairing = pair_frames(_items([9.0, 10.0]), _items([9.0]), 10.0, 0.5, 0.05)
    assert pairing.colour.stamp == 10.0 and pairing.depth is None
    assert "within sync_slop 0.05 s" in pairing.reason
    assert not pairing.timing  # depth stopped a second ago: not a timing loss
    # Depth that flows but never lines up (stamped 0.2 s off) is.
    offset = pair_frames(_items([10.0]), _items([10.2]), 10.2, 1.0, 0.05)
    assert offset.depth is None and offset.timing
    assert "nearest 0.200 s away" in offset.reason


def test_replay_and_node_share_the_pairing_function() -> None:
    # `spatialthinker replay` pairs each selected frame with pair_frames, given that one frame.
    import inspect

    from spatialthinker_ros.cli import replay

    assert "pair_frames(" in inspect.getsource(replay)
    assert "pair_frames(" in inspect.getsource(FrameBuffer.select)


stamps = st.lists(st.floats(min_value=9.0, max_value=10.0, allow_nan=False), min_size=1, max_size=8)


@given(colours=stamps, depths=st.lists(st.floats(9.0, 10.0), max_size=8))
def test_a_pair_is_found_whenever_one_exists_and_is_each_others_nearest(
    colours: list[float], depths: list[float]
) -> None:
    slop = 0.05
    pairing = pair_frames(_items(colours), _items(depths), 10.0, 1.0, slop)
    has_any = any(abs(c - d) <= slop for c in colours for d in depths)
    assert (pairing.depth is not None) == has_any
    if pairing.depth is not None:
        gap = abs(pairing.colour.stamp - pairing.depth.stamp)
        assert gap <= slop
        assert all(abs(pairing.colour.stamp - d) >= gap for d in depths)
        assert all(abs(pairing.depth.stamp - c) >= gap - 1e-9 for c in colours)
        # No newer colour frame is in a pair of its own.
        for c in colours:
            if c > pairing.colour.stamp:
                nearest = min(depths, key=lambda d, c=c: abs(d - c))
                mutual = all(abs(nearest - o) >= abs(nearest - c) - 1e-9 for o in colours)
                assert not (abs(nearest - c) <= slop and mutual)
    else:
        assert pairing.colour.stamp == max(colours)


def test_due_depth_is_the_colour_frames_own_and_arrives_after_the_measured_lag() -> None:
    # 30 Hz, depth 60 ms late: the newest depth is two frames behind the colour frame.
    due = due_depth(10.1, 100.1, 10.1 - 2 * FRAME, FRAME, 0.06, 0.05)
    assert due == pytest.approx((10.1, 100.16))
    # Depth at 15 Hz: a colour frame between two depth frames has none nearer than it has.
    assert due_depth(10.1, 100.1, 10.1 - FRAME, 2 * FRAME, 0.01, 0.05, current_gap=FRAME) is None
    # Its nearest depth frame is no later than the newest: it came (or was lost).
    assert due_depth(10.1, 100.1, 10.1, FRAME, 0.06, 0.05) is None
    # A depth stream stamped beyond sync_slop of the colour frame has nothing due for it.
    assert due_depth(10.1, 100.1, 10.0, 0.2, 0.06, 0.05) is None


def _late_depth_buffer(lag: float, frames: int = 12) -> tuple[FrameBuffer, list[float]]:
    """A 30 Hz camera whose depth arrives ``lag`` after its colour, up to ``frames`` frames;
    the depth of the frames newer than ``now - lag`` not yet in."""
    buffer = FrameBuffer(colour_history=6, depth_history=8)
    stamps = [100.0 + i * FRAME for i in range(frames)]
    now = stamps[-1] + 0.005
    events = [(s, "colour", s) for s in stamps] + [(s + lag, "depth", s) for s in stamps]
    for received, kind, stamp in sorted(events):
        if received > now:
            continue
        buffer.add(kind, stamp, f"{kind}@{stamp:.3f}", received, follows=True)
    return buffer, stamps


def test_a_request_waits_for_the_newest_colour_frames_depth_when_it_is_due() -> None:
    buffer, stamps = _late_depth_buffer(0.06)
    now = stamps[-1] + 0.005
    assert buffer.arrival_lag() == pytest.approx((0.06, 0.06))
    selection = buffer.select(now, 1.0, 0.05)
    assert selection.depth is not None and selection.colour.stamp == stamps[-3]
    plan = buffer.plan_wait(selection, now, sync_wait=0.1)
    assert plan is not None
    assert plan.colour_stamp == stamps[-1] and plan.depth_stamp == pytest.approx(stamps[-1])
    # It gives up at the p90 lag plus a margin, never later than sync_wait.
    assert plan.until == pytest.approx(stamps[-1] + 0.06 + WAIT_MARGIN_S)
    assert not buffer.depth_reached(plan.reached)
    buffer.add("depth", stamps[-2], "late", stamps[-2] + 0.06)
    assert not buffer.depth_reached(plan.reached)
    buffer.add("depth", stamps[-1], "awaited", stamps[-1] + 0.06)
    assert buffer.depth_reached(plan.reached)
    after = buffer.select(stamps[-1] + 0.07, 1.0, 0.05)
    assert after.colour.stamp == after.depth.stamp == stamps[-1]
    # Not at all with sync_wait 0, nor when the depth is due later than sync_wait allows.
    assert buffer.plan_wait(selection, now, sync_wait=0.0) is None
    assert buffer.plan_wait(selection, now, sync_wait=0.02) is None


def test_no_wait_before_the_lag_is_measured_or_once_depth_has_stopped() -> None:
    buffer, stamps = _late_depth_buffer(0.06, frames=3)  # no colour/depth pair has arrived yet
    now = stamps[-1] + 0.005
    assert buffer.arrival_lag() is None
    assert buffer.plan_wait(buffer.select(now, 1.0, 0.05), now, 0.1) is None
    stopped, stamps = _late_depth_buffer(0.06)
    later = stamps[-1] + 0.5  # half a second without depth
    for i in range(1, 4):
        stopped.add("colour", stamps[-1] + i * 0.1, "colour", stamps[-1] + i * 0.1)
    assert stopped.plan_wait(stopped.select(later, 1.0, 0.05), later, 0.1) is None


def test_depth_at_a_lower_rate_is_not_waited_for_when_none_is_due() -> None:
    buffer = FrameBuffer()
    stamps = [100.0 + i * FRAME for i in range(9)]
    for stamp in stamps:
        buffer.add("colour", stamp, "colour", stamp, follows=True)
        if round((stamp - 100.0) / FRAME) % 2 == 0:
            buffer.add("depth", stamp, "depth", stamp + 0.01, follows=True)
    # Newest colour (index 8) has its depth; index 7 is between two depth frames.
    now = stamps[-1] + 0.02
    selection = buffer.select(now, 1.0, 0.05)
    assert selection.colour.stamp == stamps[-1]
    assert buffer.plan_wait(selection, now, 0.1) is None


def test_arrival_lag_is_measured_against_the_colour_frame_stamped_alike() -> None:
    buffer = FrameBuffer()
    for i in range(6):
        stamp = 100.0 + i * FRAME
        if i % 2 == 0:  # depth at 15 Hz, 10 ms after its colour; before its colour for i == 4
            lag = 0.01 if i != 4 else -0.005
            if lag < 0:
                buffer.add("depth", stamp, "depth", stamp + lag)
                buffer.add("colour", stamp, "colour", stamp)
                continue
            buffer.add("colour", stamp, "colour", stamp)
            buffer.add("depth", stamp, "depth", stamp + lag)
        else:
            buffer.add("colour", stamp, "colour", stamp)
    assert sorted(lag for _at, lag in buffer._lags) == pytest.approx([-0.005, 0.01, 0.01])


def test_frames_lost_in_transport_show_as_a_low_delivered_share() -> None:
    lossy, healthy = TopicStats(), TopicStats()
    for i in range(120):
        stamp = 1000.0 + i * FRAME
        healthy.record(stamp + 0.002, stamp, follows=True)
        if i % 12 < 2:  # 2 of every 12 frames arrive; stamps keep the 30 Hz cadence
            lossy.record(stamp + 0.002, stamp, follows=True)
    now = 1000.0 + 120 * FRAME
    assert healthy.delivered_share(now) == pytest.approx(1.0)
    assert healthy.stamp_rate_hz(now) == pytest.approx(30.0)
    assert lossy.stamp_rate_hz(now) == pytest.approx(30.0)
    assert lossy.delivered_share(now) == pytest.approx(1 / 6, rel=0.05)
    assert lossy.rate_hz(now) == pytest.approx(5.0, rel=0.05)
    # Receipts not known to follow each other (bursts taken after an overflow) count for
    # nothing: their stamp steps would read as loss.
    bursts = TopicStats()
    for i in range(0, 120, 30):
        bursts.record(1000.0 + i * FRAME, 1000.0 + i * FRAME, follows=False)
    assert bursts.delivered_share(now) is None


def test_pairing_outcomes_are_reported() -> None:
    buffer, stamps = _late_depth_buffer(0.06)
    now = stamps[-1] + 0.005
    paired = buffer.select(now, 1.0, 0.05)
    buffer.record_outcome(now, paired, waited=0.04)
    lost = _buffer([10.0], [10.2]).select(10.2, 1.0, 0.05)
    buffer.record_outcome(now, lost)
    report = buffer.pairing_report(now)
    assert (report.answers, report.with_depth, report.timing_losses) == (2, 1, 1)
    assert "within sync_slop" in report.last_timing_reason
    assert (report.waits, report.waits_paid) == (1, 1)
    assert report.wait_mean_s == pytest.approx(0.04)
    assert report.lag_p50_s == pytest.approx(0.06)


def test_diagnostics_name_a_lossy_topic_timing_losses_and_accept_a_latched_camera_info() -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    from spatialthinker_ros.ros.node_diagnostics import inputs_status

    image, depth, info = TopicStats(topic="/cam/image"), TopicStats(), TopicStats()
    for i in range(120):
        stamp = 1000.0 + i * FRAME
        depth.record(stamp + 0.01, stamp, follows=True)
        if i % 12 < 2:
            image.record(stamp + 0.002, stamp, follows=True)
    info.record(900.0)  # latched: published once, long ago
    now = 1000.0 + 120 * FRAME
    buffer = _buffer([10.0], [10.2])
    buffer.record_outcome(now, buffer.select(10.2, 1.0, 0.05))
    topics = [("image", image), ("depth", depth), ("camera_info", info)]
    status = inputs_status("n", "h", True, now, topics, 1.0, 0, {}, buffer.pairing_report(now))
    assert status.level == DiagnosticStatus.WARN
    assert "image '/cam/image': only 17% of its frames arrive" in status.message
    assert "lost in transport" in status.message and "fastdds_large_images.xml" in status.message
    assert "depth '" not in status.message  # depth arrives whole
    assert "1 of 1 recent answers lost 3D to timing" in status.message
    assert "camera_info" not in status.message  # received once is enough
    values = {kv.key: kv.value for kv in status.values}
    assert values["image frames delivered (%)"] == "17"
    assert values["depth frames delivered (%)"] == "100"
    assert values["answers with depth (last min)"] == "0 of 1"


def test_topic_statistics_are_read_while_a_subscription_records() -> None:
    # The diagnostics timer reads while subscriptions record, on other executor threads: an
    # unguarded deque raised "deque mutated during iteration" and the node process exited.
    stats = TopicStats()
    stop = threading.Event()
    errors: list[BaseException] = []

    def record() -> None:
        stamp = 0.0
        while not stop.is_set():
            stamp += 1 / 30
            stats.record(stamp, stamp, follows=True)

    def read() -> None:
        try:
            while not stop.is_set():
                stats.rate_hz(1e9, window=1e12)
                stats.stamp_rate_hz(1e9, window=1e12)
                stats.delivered_share(1e9, window=1e12)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
            stop.set()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as a loaded node does
    threads = [threading.Thread(target=record), threading.Thread(target=read)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(switch)
    assert not errors, errors
    assert stats.count > 100 and stats.rate_hz(1e9, window=1e12) > 0.0
