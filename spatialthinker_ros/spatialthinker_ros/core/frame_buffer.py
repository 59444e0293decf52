"""Keep the latest camera messages cheaply and choose the frames for a request.

The node subscribes to colour and depth in serialized (raw) form: at 30 Hz a
640x480 rgb8 + 16UC1 pair is 1.5 MB a frame, and turning each into a Python
message (let alone a numpy array) costs CPU for frames that are never used.
Only the header stamp is read from the CDR bytes here; the chosen frame is
deserialized when a request takes it.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

# CDR encapsulation identifiers (first two bytes of a serialized message).
_CDR_LITTLE_ENDIAN = (b"\x00\x01", b"\x00\x03", b"\x00\x07", b"\x00\x09", b"\x00\x0b")
_CDR_BIG_ENDIAN = (b"\x00\x00", b"\x00\x02", b"\x00\x06", b"\x00\x08", b"\x00\x0a")


def cdr_header_stamp(data: bytes) -> float:
    """Read ``header.stamp`` of a serialized message whose first field is a Header.

    sensor_msgs/Image and CompressedImage both start with std_msgs/Header,
    whose first field is builtin_interfaces/Time (int32 sec, uint32 nanosec),
    right after the 4-byte CDR encapsulation header.

    Args:
        data: The serialized message.

    Returns:
        The stamp in seconds.

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
    return sec + nanosec * 1e-9


class _Stamped(Protocol):
    stamp: float


_S = TypeVar("_S", bound=_Stamped)


def nearest_in_time(stamp: float, items: Iterable[_S], slop: float) -> tuple[_S | None, float]:
    """The item stamped nearest to ``stamp``, if it is within ``slop`` seconds.

    The one colour/depth pairing rule, for the node's buffer and for ``spatialthinker replay``.

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


@dataclass
class StampedItem:
    """One buffered message (serialized or not) and its header stamp in seconds.

    ``decoded`` is the message's decoded form while any request still holds it (see
    :meth:`FrameBuffer.decoded`).
    """

    stamp: float
    message: Any
    received: float
    decoded: tuple[Any, weakref.ref[np.ndarray]] | None = field(default=None, repr=False)


@dataclass
class TopicStats:
    """Arrival statistics of one input topic, for diagnostics."""

    count: int = 0
    last_received: float | None = None
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def record(self, received: float) -> None:
        """Count one message received at ``received`` (seconds)."""
        self.count += 1
        self.last_received = received
        self.arrivals.append(received)

    def rate_hz(self, now: float, window: float = 5.0) -> float:
        """Publishing rate from the arrivals of the last ``window`` seconds.

        The median interval between consecutive arrivals: the node takes the
        camera's messages in bursts (its subscription keeps only the last few),
        so a count over the window would under-read the rate; within a burst
        the messages are consecutive and their interval is the camera's.
        """
        recent = sorted(t for t in self.arrivals if now - t <= window)
        if len(recent) < 2:
            return 0.0
        intervals = [b - a for a, b in itertools.pairwise(recent) if b > a]
        if not intervals:
            return 0.0
        return 1.0 / statistics.median(intervals)


class NoFrameError(Exception):
    """No colour frame can serve a request; the message says why."""


@dataclass(frozen=True)
class FrameSelection:
    """The frames chosen for one request.

    Attributes:
        colour: The colour item (message as buffered).
        depth: The depth item nearest in stamp, or None.
        depth_reason: Why there is no depth (empty when there is).
    """

    colour: StampedItem
    depth: StampedItem | None
    depth_reason: str


class FrameBuffer:
    """Thread-safe short history of colour and depth messages.

    Args:
        colour_history: Colour messages kept.
        depth_history: Depth messages kept (more, so a nearby stamp is found).
    """

    def __init__(self, colour_history: int = 4, depth_history: int = 8) -> None:
        self._lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._colour: deque[StampedItem] = deque(maxlen=max(1, colour_history))
        self._depth: deque[StampedItem] = deque(maxlen=max(1, depth_history))
        self.colour_stats = TopicStats()
        self.depth_stats = TopicStats()

    def add_colour(self, stamp: float, message: Any, received: float) -> None:
        """Keep a colour message (no conversion)."""
        with self._lock:
            self._colour.append(StampedItem(stamp, message, received))
            self.colour_stats.record(received)

    def add_depth(self, stamp: float, message: Any, received: float) -> None:
        """Keep a depth message (no conversion)."""
        with self._lock:
            self._depth.append(StampedItem(stamp, message, received))
            self.depth_stats.record(received)

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

    def newest_colour_stamp(self) -> float | None:
        """Stamp of the newest colour message, or None."""
        with self._lock:
            return self._colour[-1].stamp if self._colour else None

    def select(
        self,
        now: float,
        max_frame_age: float,
        sync_slop: float,
        future_tolerance: float = 0.5,
        use_depth: bool = True,
    ) -> FrameSelection:
        """Choose the newest usable colour frame and the depth frame nearest to it.

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
            colour = list(self._colour)
            depth = list(self._depth)
        if not colour:
            raise NoFrameError("no colour frame received yet on the image topic")
        chosen = None
        future_skipped = None
        for item in reversed(colour):
            if item.stamp - now > future_tolerance:
                future_skipped = item
                continue
            chosen = item
            break
        if chosen is None:
            ahead = future_skipped.stamp - now if future_skipped else 0.0
            raise NoFrameError(
                f"every colour frame is stamped in the future ({ahead:.3f} s ahead of the node's"
                " clock): check clock sync / use_sim_time"
            )
        age = now - chosen.stamp
        if age > max_frame_age and future_skipped is not None:
            ahead = future_skipped.stamp - now
            raise NoFrameError(
                f"the newest colour frames are stamped in the future ({ahead:.3f} s ahead of the"
                f" node's clock) and the last one before them is {age:.3f} s old: check clock"
                " sync / use_sim_time"
            )
        if age > max_frame_age:
            raise NoFrameError(
                f"newest colour frame is {age:.3f} s old (max_frame_age {max_frame_age:g} s):"
                " is the camera still publishing, and are its stamps on this node's clock?"
            )
        if not use_depth:
            return FrameSelection(chosen, None, "depth disabled (use_depth false)")
        if not depth:
            return FrameSelection(chosen, None, "no depth frame received yet on the depth topic")
        nearest, gap = nearest_in_time(chosen.stamp, depth, sync_slop)
        if nearest is None:
            return FrameSelection(
                chosen,
                None,
                f"no depth frame within sync_slop {sync_slop:g} s of the colour frame"
                f" (nearest {gap:.3f} s away)",
            )
        return FrameSelection(chosen, nearest, "")
