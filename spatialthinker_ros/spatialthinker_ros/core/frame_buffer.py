"""Keep the latest camera messages cheaply and pair colour with depth for a request.

The node subscribes to colour and depth in serialized (raw) form: at 30 Hz a
640x480 rgb8 + 16UC1 pair is 1.5 MB a frame, and turning each into a Python
message (let alone a numpy array) costs CPU for frames that are never used.
Only the header stamp is read from the CDR bytes here; the chosen frame is
deserialized when a request takes it.

Pairing (:func:`pair_frames`, the one rule for the node, its continuous mode, streaming, the
action and ``spatialthinker replay``) is the ApproximateTime policy's notion of a pair: a colour
frame and a depth frame whose stamps agree within ``sync_slop``, each the other's nearest. A
request is answered from the newest such pair, so an older colour frame that has its depth
beats a newer one whose depth is still on its way. Real drivers publish depth after its colour
(registration, stereo matching), at a lower rate, or lose frames in transport; the buffer
measures each of these (:class:`TopicStats`, :meth:`FrameBuffer.arrival_lag`) so that a request
can wait, boundedly, for a depth frame that is due (:meth:`FrameBuffer.plan_wait`) and
/diagnostics can say what it sees.

ROS-free: works on bytes and plain stamps, so it is tested without a graph.
"""

from __future__ import annotations

import itertools
import math
import statistics
import struct
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

# CDR encapsulation identifiers (first two bytes of a serialized message).
_CDR_LITTLE_ENDIAN = (b"\x00\x01", b"\x00\x03", b"\x00\x07", b"\x00\x09", b"\x00\x0b")
_CDR_BIG_ENDIAN = (b"\x00\x00", b"\x00\x02", b"\x00\x06", b"\x00\x08", b"\x00\x0a")

# Stamp steps below this are duplicates or jitter, not a camera's cadence (seconds).
MIN_STAMP_STEP_S = 1e-3
# Consecutive receipts needed before a topic's delivered share is judged (frames lost in transport).
MIN_LOSS_STEPS = 5
# Below this share of the frames its stamps say were published, a topic loses frames in transport.
LOSS_WARN_SHARE = 0.5
# Colour-to-depth arrival lags measured before a request may wait for a depth frame.
MIN_LAG_SAMPLES = 3
# Scheduling slack added to the measured p90 lag when a request waits for its depth (seconds).
WAIT_MARGIN_S = 0.01
# Window of the pairing outcomes and loss figures /diagnostics reports (seconds).
RECENT_WINDOW_S = 60.0
LOSS_WINDOW_S = 10.0


def cdr_header_time(data: bytes) -> tuple[int, int]:
    """Read ``header.stamp`` as ``(sec, nanosec)`` from a serialized message with a Header first.

    sensor_msgs/Image and CompressedImage both start with std_msgs/Header,
    whose first field is builtin_interfaces/Time (int32 sec, uint32 nanosec),
    right after the 4-byte CDR encapsulation header.

    Args:
        data: The serialized message.

    Returns:
        ``(sec, nanosec)`` exactly as stamped.

    Raises:
        ValueError: When the bytes are too short or not CDR.
    """
    if len(data) < 12:
        raise ValueError(f"serialized message of {len(data)} bytes is too short for a header")
    kind = bytes(data[:2])
    if kind in _CDR_LITTLE_ENDIAN:
        sec, nanosec = struct.unpack_from("<iI", data, 4)
    elif kind in _CDR_BIG_ENDIAN:
        sec, nanosec = struct.unpack_from(">iI", data, 4)
    else:
        raise ValueError(f"unknown CDR encapsulation {kind.hex()}")
    return int(sec), int(nanosec)


def cdr_header_stamp(data: bytes) -> float:
    """``header.stamp`` of a serialized message in seconds (see :func:`cdr_header_time`).

    Raises:
        ValueError: When the bytes are too short or not CDR.
    """
    sec, nanosec = cdr_header_time(data)
    return sec + nanosec * 1e-9


class _Stamped(Protocol):
    stamp: float


_S = TypeVar("_S", bound=_Stamped)


def nearest_in_time(stamp: float, items: Iterable[_S], slop: float) -> tuple[_S | None, float]:
    """The item stamped nearest to ``stamp``, if it is within ``slop`` seconds.

    The depth frame that pairs with one colour frame (see :func:`pair_frames`).

    Args:
        stamp: The colour frame's stamp, seconds.
        items: Candidates with a ``stamp`` attribute (seconds).
        slop: Largest stamp difference accepted, seconds.

    Returns:
        ``(item, gap)``: the nearest item (None when there is none, or it is farther than
        ``slop``, or ``stamp`` is not a number) and its distance in seconds (inf without items).
    """
    nearest = min(items, key=lambda item: abs(item.stamp - stamp), default=None)
    if nearest is None:
        return None, math.inf
    gap = abs(nearest.stamp - stamp)
    return (nearest if gap <= slop else None), gap


class NoFrameError(Exception):
    """No colour frame can serve a request; the message says why."""


@dataclass(frozen=True)
class Pairing(Generic[_S]):
    """The frames :func:`pair_frames` chose.

    Attributes:
        colour: The colour frame to answer from.
        depth: The depth frame paired with it, or None.
        reason: Why there is no depth ("" when there is).
        timing: True when depth is flowing but no usable colour frame has a depth frame within
            ``sync_slop``: the answer loses 3D to the frames' timing, not to a missing stream.
        unpaired: The usable colour frames newer than ``colour`` (all usable ones when there is
            no pair), newest first: those whose depth may still be on its way.
    """

    colour: _S
    depth: _S | None
    reason: str = ""
    timing: bool = False
    unpaired: tuple[_S, ...] = ()


def pair_frames(
    colours: Iterable[_S],
    depths: Iterable[_S],
    now: float,
    max_frame_age: float,
    sync_slop: float,
    future_tolerance: float = 0.5,
) -> Pairing[_S]:
    """The newest colour/depth pair whose stamps agree within ``sync_slop``.

    The one pairing rule of the node (service, action, ~/question, continuous mode, streaming)
    and of ``spatialthinker replay``. A pair is what message_filters' ApproximateTime policy
    makes one: a colour and a depth frame stamped within ``sync_slop`` of each other, each the
    other's nearest (a depth frame is its own colour frame's, not a newer colour frame's that
    is merely within the slop). Colour frames are tried newest first among those no older than
    ``max_frame_age`` and not stamped in the future; the first that is in a pair is answered
    from. So an older colour frame that has its depth beats a newer one whose depth has not
    arrived (or never will: depth at a lower rate), while both are within ``max_frame_age``.
    Whenever any usable colour frame has a depth frame within ``sync_slop``, there is a pair
    (the closest of all is one). Without any, the newest usable colour frame is answered in
    2D, with the reason.

    Args:
        colours: Colour frames (anything with a ``stamp`` in seconds), any order.
        depths: Depth frames, any order.
        now: Current time on the clock the stamps use, seconds.
        max_frame_age: Oldest acceptable colour stamp, seconds before ``now``.
        sync_slop: Largest stamp difference between colour and depth, seconds.
        future_tolerance: How far a stamp may lie ahead of ``now`` (clock skew).

    Returns:
        The pairing.

    Raises:
        NoFrameError: When no colour frame qualifies, with the reason.
    """
    ordered = sorted(
        (c for c in colours if math.isfinite(c.stamp)), key=lambda c: c.stamp, reverse=True
    )
    if not ordered:
        raise NoFrameError("no colour frame received yet on the image topic")
    usable: list[_S] = []
    future_skipped: _S | None = None
    last_before: _S | None = None
    for item in ordered:
        if item.stamp - now > future_tolerance:
            future_skipped = item  # the oldest of the future ones, once the loop is past them
            continue
        if now - item.stamp > max_frame_age:
            last_before = item
            break  # sorted: every later one is older still
        usable.append(item)
    if not usable:
        _refuse(now, max_frame_age, future_skipped, last_before)
    finite_depths = [d for d in depths if math.isfinite(d.stamp)]
    for index, colour in enumerate(usable):
        depth, gap = nearest_in_time(colour.stamp, finite_depths, sync_slop)
        # A pair is each other's nearest: a depth frame belongs to the colour frame stamped
        # like it, not to a newer one that is merely within sync_slop of it.
        if depth is not None and all(abs(depth.stamp - c.stamp) >= gap - 1e-9 for c in usable):
            return Pairing(colour, depth, "", False, tuple(usable[:index]))
    newest = usable[0]
    if not finite_depths:
        return Pairing(
            newest, None, "no depth frame received yet on the depth topic", False, tuple(usable)
        )
    _nearest, gap = nearest_in_time(newest.stamp, finite_depths, sync_slop)
    reason = (
        f"no depth frame within sync_slop {sync_slop:g} s of the colour frame"
        f" (nearest {gap:.3f} s away)"
    )
    if len(usable) > 1:
        reason += f", nor of the {len(usable) - 1} older colour frames within max_frame_age"
    newest_depth = max(d.stamp for d in finite_depths)
    # Depth that still flows but never lines up is a timing loss; depth that stopped is not.
    timing = now - newest_depth <= max_frame_age
    return Pairing(newest, None, reason, timing, tuple(usable))


def _refuse(now: float, max_frame_age: float, future_skipped: Any, last_before: Any) -> None:
    """Raise the NoFrameError that says why no colour frame is usable."""
    if last_before is None:
        ahead = future_skipped.stamp - now if future_skipped is not None else 0.0
        raise NoFrameError(
            f"every colour frame is stamped in the future ({ahead:.3f} s ahead of the node's"
            " clock): check clock sync / use_sim_time"
        )
    age = now - last_before.stamp
    if future_skipped is not None:
        ahead = future_skipped.stamp - now
        raise NoFrameError(
            f"the newest colour frames are stamped in the future ({ahead:.3f} s ahead of the"
            f" node's clock) and the last one before them is {age:.3f} s old: check clock"
            " sync / use_sim_time"
        )
    raise NoFrameError(
        f"newest colour frame is {age:.3f} s old (max_frame_age {max_frame_age:g} s):"
        " is the camera still publishing, and are its stamps on this node's clock?"
    )


def stamp_period(stamps: Iterable[float]) -> float | None:
    """A stream's cadence from some of its stamps: the smallest step between them.

    Frames lost or not kept only lengthen steps, so the smallest one is the cadence once two
    consecutive frames are among the stamps. None with fewer than two distinct stamps.
    """
    ordered = sorted(s for s in stamps if math.isfinite(s))
    steps = [b - a for a, b in itertools.pairwise(ordered) if b - a >= MIN_STAMP_STEP_S]
    return min(steps) if steps else None


def due_depth(
    colour_stamp: float,
    colour_received: float,
    newest_depth_stamp: float,
    depth_period: float,
    lag: float,
    sync_slop: float,
    current_gap: float = math.inf,
) -> tuple[float, float] | None:
    """The depth frame still to come that pairs best with a colour frame, and when it arrives.

    The depth stream's cadence projects its next stamps from the newest one; the projected
    stamp nearest the colour frame's is its depth (depth at half the colour rate has none of
    its own for every other colour frame: the nearest is then no nearer than what came). It
    arrives ``lag`` after the colour frame stamped like it (the measured colour-to-depth
    arrival lag).

    Args:
        colour_stamp: The colour frame's stamp, seconds.
        colour_received: When it arrived (the receive clock), seconds.
        newest_depth_stamp: The newest depth frame's stamp, seconds.
        depth_period: The depth stream's stamp period, seconds.
        lag: Colour-to-depth arrival lag, seconds.
        sync_slop: Largest stamp difference of a pair, seconds.
        current_gap: Stamp distance of the nearest depth frame the colour frame already has.

    Returns:
        ``(expected depth stamp, expected arrival on the receive clock)``, or None when no
        depth frame to come is within ``sync_slop`` and nearer than ``current_gap``.
    """
    if not depth_period > 0:
        return None
    steps = math.floor((colour_stamp - newest_depth_stamp) / depth_period + 0.5)
    if steps < 1:
        return None  # its nearest depth frame is no later than the newest: came, or was lost
    expected = newest_depth_stamp + steps * depth_period
    gap = abs(expected - colour_stamp)
    if gap > sync_slop or gap >= current_gap - 1e-6:
        return None
    return expected, colour_received + (expected - colour_stamp) + lag


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation (values not empty)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class StampedItem:
    """One buffered message (serialized or not) and its header stamp in seconds.

    ``time`` is the header stamp as ``(sec, nanosec)`` when known (what an answer reports).
    ``decoded`` is the message's decoded form while any request still holds it (see
    :meth:`FrameBuffer.decoded`). ``lag_measured``: a depth item already counted in the
    colour-to-depth arrival lag.
    """

    stamp: float
    message: Any
    received: float
    time: tuple[int, int] | None = None
    decoded: tuple[Any, weakref.ref[np.ndarray]] | None = field(default=None, repr=False)
    lag_measured: bool = field(default=False, repr=False)


@dataclass
class TopicStats:
    """Arrival statistics of one input topic, for diagnostics.

    Consecutive receipts (messages known to follow each other in arrival, see :meth:`record`)
    give two figures: their arrival steps, the rate at which frames are received, and their
    stamp steps, which count the frames the camera published in between. A camera stamping at
    30 Hz whose frames are lost in transport shows steps of several periods and a delivered
    share far below 1.

    Thread-safe: subscriptions record while the diagnostics timer reads, on other threads of the
    node's executor (a deque iterated while another thread appends raises RuntimeError).
    """

    count: int = 0
    last_received: float | None = None
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    # (received, stamp step, arrival step) of consecutive receipts.
    steps: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=128))
    # Resolved topic name, for the messages that name it.
    topic: str = ""
    _previous: tuple[float, float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, received: float, stamp: float | None = None, follows: bool = False) -> None:
        """Count one message received at ``received`` (seconds).

        Args:
            received: Arrival time.
            stamp: Its header stamp (seconds), for the cadence and loss figures.
            follows: True when it is known to be the next message received after the previous
                one recorded (taken together from the subscription's history, or the history
                had not overflowed since the previous take).
        """
        with self._lock:
            self.count += 1
            self.last_received = received
            self.arrivals.append(received)
            previous = self._previous
            if stamp is not None and follows and previous is not None:
                stamp_step, arrival_step = stamp - previous[0], received - previous[1]
                if stamp_step >= MIN_STAMP_STEP_S and arrival_step >= 0.0:
                    self.steps.append((received, stamp_step, arrival_step))
            self._previous = (stamp, received) if stamp is not None else None

    def restart(self) -> None:
        """Forget the previous message: the next one recorded follows nothing (resubscribed)."""
        with self._lock:
            self._previous = None

    def _recent_steps(self, now: float, window: float) -> list[tuple[float, float, float]]:
        with self._lock:
            return [s for s in self.steps if now - s[0] <= window]

    def _recent_arrivals(self, now: float, window: float) -> list[float]:
        with self._lock:
            return [t for t in self.arrivals if now - t <= window]

    def rate_hz(self, now: float, window: float = 5.0) -> float:
        """Received rate over the last ``window`` seconds.

        From consecutive receipts when there are some: their count over their arrival steps.
        Otherwise the median interval between consecutive arrivals: the node takes the
        camera's messages in bursts (its subscription keeps only the last few), so a count over
        the window would under-read the rate; within a burst the messages are consecutive.
        """
        steps = self._recent_steps(now, window)
        if len(steps) >= 2:
            total = sum(s[2] for s in steps)
            return len(steps) / total if total > 0 else 0.0
        recent = sorted(self._recent_arrivals(now, window))
        if len(recent) < 2:
            return 0.0
        intervals = [b - a for a, b in itertools.pairwise(recent) if b > a]
        if not intervals:
            return 0.0
        return 1.0 / statistics.median(intervals)

    def stamp_rate_hz(self, now: float, window: float = LOSS_WINDOW_S) -> float:
        """The camera's rate by its stamps: 1 / the smallest stamp step of consecutive receipts
        (0.0 before there are any)."""
        steps = [s[1] for s in self._recent_steps(now, window)]
        return 1.0 / min(steps) if steps else 0.0

    def delivered_share(self, now: float, window: float = LOSS_WINDOW_S) -> float | None:
        """Share of the published frames (by their stamps' cadence) that arrive; None until
        enough consecutive receipts were seen."""
        steps = [s[1] for s in self._recent_steps(now, window)]
        if len(steps) < MIN_LOSS_STEPS:
            return None
        return min(1.0, min(steps) / statistics.fmean(steps))


@dataclass(frozen=True)
class FrameSelection:
    """The frames chosen for one request.

    Attributes:
        colour: The colour item (message as buffered).
        depth: The depth item paired with it, or None.
        depth_reason: Why there is no depth (empty when there is).
        timing: No depth because the frames' timing did not line up (see :class:`Pairing`).
        unpaired: Usable colour items newer than ``colour`` without depth yet, newest first.
    """

    colour: StampedItem
    depth: StampedItem | None
    depth_reason: str
    timing: bool = False
    unpaired: tuple[StampedItem, ...] = ()


@dataclass(frozen=True)
class WaitPlan:
    """A request's bounded wait for a depth frame that is due.

    Attributes:
        colour_stamp: The colour frame whose depth is awaited.
        depth_stamp: The stamp that depth frame is expected to carry.
        reached: The wait is over once a depth frame stamped this late has arrived
            (``depth_stamp`` less half a depth period: a lost frame's successor ends it too).
        until: Receive-clock time at which the wait gives up, seconds.
    """

    colour_stamp: float
    depth_stamp: float
    reached: float
    until: float


@dataclass(frozen=True)
class PairingReport:
    """What /diagnostics says about pairing (figures over the recent window).

    Attributes:
        lag_p50_s: Colour-to-depth arrival lag, median (None before it was measured).
        lag_p90_s: ... 90th percentile.
        answers: Requests that wanted depth.
        with_depth: ... of them given a depth frame.
        timing_losses: ... of them without depth because the timing did not line up.
        last_timing_reason: The reason the latest of those got.
        waits: Requests that waited for a due depth frame.
        waits_paid: ... of them whose wait ended with the depth.
        wait_mean_s: Mean time those requests waited.
    """

    lag_p50_s: float | None
    lag_p90_s: float | None
    answers: int
    with_depth: int
    timing_losses: int
    last_timing_reason: str
    waits: int
    waits_paid: int
    wait_mean_s: float


class FrameBuffer:
    """Thread-safe short history of colour and depth messages, and how they pair.

    Args:
        colour_history: Colour messages kept (enough for a pair when depth comes a few frames
            after its colour).
        depth_history: Depth messages kept.
        sync_slop: Stamps this close are one frame for the arrival-lag measurement (the node
            updates it from its parameter at each request).
    """

    def __init__(
        self, colour_history: int = 6, depth_history: int = 8, sync_slop: float = 0.05
    ) -> None:
        self._lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._colour: deque[StampedItem] = deque(maxlen=max(1, colour_history))
        self._depth: deque[StampedItem] = deque(maxlen=max(1, depth_history))
        self.colour_stats = TopicStats()
        self.depth_stats = TopicStats()
        self.sync_slop = sync_slop
        # (measured at, depth arrival - colour arrival) of frames stamped alike.
        self._lags: deque[tuple[float, float]] = deque(maxlen=64)
        # (time, had depth, lost to timing, reason) of recent requests that wanted depth.
        self._outcomes: deque[tuple[float, bool, bool, str]] = deque(maxlen=256)
        # (time, seconds waited, depth arrived) of recent waits for a due depth frame.
        self._waits: deque[tuple[float, float, bool]] = deque(maxlen=256)

    def add(
        self,
        kind: str,
        stamp: float,
        message: Any,
        received: float,
        time: tuple[int, int] | None = None,
        follows: bool = False,
    ) -> None:
        """Keep a colour or depth message (no conversion).

        Args:
            kind: ``"colour"`` or ``"depth"``.
            stamp: Header stamp, seconds.
            message: The message as taken (serialized bytes for the node).
            received: Arrival time (receive clock), seconds.
            time: Header stamp as ``(sec, nanosec)``.
            follows: It is the next receipt after the previous message of its kind (see
                :meth:`TopicStats.record`).
        """
        item = StampedItem(stamp, message, received, time)
        with self._lock:
            if kind == "colour":
                self._colour.append(item)
                self.colour_stats.record(received, stamp, follows)
                # A depth frame that arrived before its colour: a negative lag.
                tolerance = self._lag_tolerance()
                for depth in self._depth:
                    if not depth.lag_measured and abs(depth.stamp - stamp) <= tolerance:
                        self._measure(item, depth)
            elif kind == "depth":
                self._depth.append(item)
                self.depth_stats.record(received, stamp, follows)
                colour, _gap = nearest_in_time(stamp, self._colour, self._lag_tolerance())
                if colour is not None:
                    self._measure(colour, item)
            else:
                raise ValueError(f"kind must be 'colour' or 'depth', got {kind!r}")

    def _lag_tolerance(self) -> float:
        """Stamps this close belong to one frame: within sync_slop, and nearer than half a
        colour period (depth at a lower rate must not be measured against a neighbour)."""
        period = stamp_period(c.stamp for c in self._colour)
        return self.sync_slop if period is None else min(self.sync_slop, 0.5 * period)

    def _measure(self, colour: StampedItem, depth: StampedItem) -> None:
        depth.lag_measured = True
        self._lags.append((max(colour.received, depth.received), depth.received - colour.received))

    def arrival_lag(self, now: float | None = None) -> tuple[float, float] | None:
        """Colour-to-depth arrival lag ``(p50, p90)`` in seconds, from the last measurements
        (those of the last minute when ``now`` is given); None before enough were made."""
        with self._lock:
            lags = [lag for at, lag in self._lags if now is None or now - at <= RECENT_WINDOW_S]
        if len(lags) < MIN_LAG_SAMPLES:
            return None
        return quantile(lags, 0.5), quantile(lags, 0.9)

    def decoded(
        self, item: StampedItem, decode: Callable[[Any], tuple[Any, np.ndarray]]
    ) -> tuple[Any, np.ndarray]:
        """``decode(item.message)``, computed once for every request on the same frame.

        Requests that arrive together mostly take the same (newest) frame; each decoding it
        again would hold its own copy of the pixels (a 4096x4096 frame is 50 MB). The result
        is shared while any request holds its array (a weak reference: the last request to
        finish frees it). Callers must not modify the array.

        Args:
            item: A buffered item (from :meth:`select`).
            decode: Turns the message into ``(header, pixels)``; raises on bad input (not
                cached: every request gets the error).

        Returns:
            ``(header, pixels)``.
        """
        with self._decode_lock:  # two callers on one frame: the second waits and shares
            if item.decoded is not None:
                header, ref = item.decoded
                pixels = ref()
                if pixels is not None:
                    return header, pixels
            header, pixels = decode(item.message)
            item.decoded = (header, weakref.ref(pixels))
            return header, pixels

    def clear(self) -> None:
        """Forget every buffered message (on deactivate: old frames must not serve)."""
        with self._lock:
            self._colour.clear()
            self._depth.clear()
            self.colour_stats.restart()
            self.depth_stats.restart()

    def newest_colour_stamp(self) -> float | None:
        """Stamp of the newest colour message, or None."""
        with self._lock:
            return max((c.stamp for c in self._colour), default=None)

    def select(
        self,
        now: float,
        max_frame_age: float,
        sync_slop: float,
        future_tolerance: float = 0.5,
        use_depth: bool = True,
    ) -> FrameSelection:
        """Choose the frames of a request: the newest colour/depth pair (:func:`pair_frames`).

        Args:
            now: Current time on the clock the stamps use, seconds.
            max_frame_age: Oldest acceptable colour stamp, seconds before ``now``.
            sync_slop: Largest stamp difference between colour and depth, seconds.
            future_tolerance: How far a stamp may lie ahead of ``now`` (clock skew).
            use_depth: False for a 2D-only node.

        Returns:
            The selection.

        Raises:
            NoFrameError: When no colour frame qualifies, with the reason.
        """
        with self._lock:
            self.sync_slop = sync_slop
            colour = list(self._colour)
            depth = list(self._depth) if use_depth else []
        pairing = pair_frames(colour, depth, now, max_frame_age, sync_slop, future_tolerance)
        if not use_depth:
            return FrameSelection(pairing.colour, None, "depth disabled (use_depth false)")
        return FrameSelection(
            pairing.colour, pairing.depth, pairing.reason, pairing.timing, pairing.unpaired
        )

    def plan_wait(self, selection: FrameSelection, now: float, sync_wait: float) -> WaitPlan | None:
        """Whether a request should wait for a depth frame that is due, and until when.

        The colour frames newer than the selected pair (newest first), then the pair's own
        colour frame, are looked at: the first whose own depth frame (:func:`due_depth`: the
        one its stamp says it pairs with best, nearer than any it has) is expected within
        ``sync_wait`` of ``now`` at the median measured lag is waited for. The wait gives up at
        the p90 lag plus :data:`WAIT_MARGIN_S`, and at ``sync_wait``. Nothing is waited for
        before the lag has been measured, nor while depth has stopped.

        Args:
            selection: The request's selection (:meth:`select`).
            now: Current time on the receive clock (wall clock), seconds.
            sync_wait: The longest wait, seconds (0: never).

        Returns:
            The plan, or None to answer from the selection now.
        """
        if not sync_wait > 0 or (selection.depth is None and not selection.unpaired):
            return None
        lag = self.arrival_lag(now)
        with self._lock:
            depths = list(self._depth)
            last_depth = self.depth_stats.last_received
            period = stamp_period(d.stamp for d in depths) or (
                1.0 / rate if (rate := self.depth_stats.stamp_rate_hz(now)) > 0 else None
            )
            slop = self.sync_slop
        if lag is None or period is None or not depths or last_depth is None:
            return None
        lag_p50, lag_p90 = lag
        if now - last_depth > 3.0 * period + WAIT_MARGIN_S:
            return None  # depth is not flowing: nothing is due
        newest_depth = max(d.stamp for d in depths)
        limit = now + sync_wait
        candidates = list(selection.unpaired)
        if selection.depth is not None:
            candidates.append(selection.colour)
        for colour in candidates:
            gap = nearest_in_time(colour.stamp, depths, slop)[1]
            due = due_depth(colour.stamp, colour.received, newest_depth, period, lag_p50, slop, gap)
            if due is None or due[1] > limit:
                continue
            until = min(limit, due[1] + (lag_p90 - lag_p50) + WAIT_MARGIN_S)
            if until > now:
                return WaitPlan(colour.stamp, due[0], due[0] - 0.5 * period, until)
        return None

    def depth_reached(self, stamp: float) -> bool:
        """Whether a depth frame stamped ``stamp`` or later has arrived (a wait is over)."""
        with self._lock:
            return any(d.stamp >= stamp for d in self._depth)

    def record_outcome(
        self, now: float, selection: FrameSelection, waited: float | None = None
    ) -> None:
        """Count a request's pairing for /diagnostics (requests that wanted depth only).

        Args:
            now: Wall-clock time.
            selection: What the request got.
            waited: Seconds it waited for a due depth frame (None: it did not wait).
        """
        with self._lock:
            self._outcomes.append(
                (now, selection.depth is not None, selection.timing, selection.depth_reason)
            )
            if waited is not None:
                self._waits.append((now, waited, selection.depth is not None))

    def pairing_report(self, now: float) -> PairingReport:
        """The pairing figures of the last :data:`RECENT_WINDOW_S` seconds."""
        lag = self.arrival_lag(now)
        with self._lock:
            outcomes = [o for o in self._outcomes if now - o[0] <= RECENT_WINDOW_S]
            waits = [w for w in self._waits if now - w[0] <= RECENT_WINDOW_S]
        timing = [o for o in outcomes if o[2]]
        return PairingReport(
            lag_p50_s=None if lag is None else lag[0],
            lag_p90_s=None if lag is None else lag[1],
            answers=len(outcomes),
            with_depth=sum(1 for o in outcomes if o[1]),
            timing_losses=len(timing),
            last_timing_reason=timing[-1][3] if timing else "",
            waits=len(waits),
            waits_paid=sum(1 for w in waits if w[2]),
            wait_mean_s=statistics.fmean(w[1] for w in waits) if waits else 0.0,
        )
