"""The node's camera inputs: colour, depth and camera_info, subscribed serialized and polled, and
turned into a request's :class:`~spatialthinker_ros.answering.pipeline.Frames` (the one home of
"camera messages to frames": pairing, waiting for late depth, decoding, camera_info, the reasons
a frame is refused).

At 30 Hz an executor callback per frame costs a Python wake-up, a wait-set rebuild and a copy
for frames that are never used (most of them). So the inputs sit in a callback group the
executor never runs: messages wait in the subscriptions' KEEP_LAST history, and the node takes
them when a request needs a frame (and once per diagnostics period for the statistics). Only
the header stamp of a frame is read then; nothing is converted.

A request whose colour frame's depth is due (see
:meth:`~spatialthinker_ros.core.frame_buffer.FrameBuffer.plan_wait`) awaits it as a coroutine,
like the query calls await their answers: no executor thread is held. A short timer, running
only while such waits exist, takes new messages and ends each wait when its depth is in or its
time is up.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from spatialthinker_ros.answering.pipeline import Frames, RequestRejected, intrinsics_for_colour
from spatialthinker_ros.core import images
from spatialthinker_ros.core.camera import CameraIntrinsics
from spatialthinker_ros.core.frame_buffer import (
    FrameBuffer,
    FrameSelection,
    NoFrameError,
    TopicStats,
    WaitPlan,
    cdr_header_time,
)
from spatialthinker_ros.ros.timed_waits import TimedWaits

#: Topic (relative to the node) and message type of each transport.
IMAGE_TOPICS = {"raw": ("image", Image), "compressed": ("image/compressed", CompressedImage)}
DEPTH_TOPICS = {
    "raw": ("depth", Image),
    "compressedDepth": ("depth/compressedDepth", CompressedImage),
}
# Colour keeps at least this many messages in its subscription history (qos_depth may ask for
# more): a depth frame that comes two or three colour frames late must still find its colour
# frame when a request takes the frames (at 30 Hz: about 100 ms). Depth, which comes last, needs
# only the newest few.
PAIRING_HISTORY = 4
# How often a waiting request's depth is looked for (seconds); the timer runs only while one
# waits, at most sync_wait per request.
DEPTH_WAIT_POLL_S = 0.005
# A latched camera_info (transient local, reliable: published once, before this node may have
# subscribed) is fetched by a subscription of its own, made when such a publisher is seen;
# per-frame publishers (volatile) are taken by the main one.
# How often the graph is asked whether a latched camera_info publisher has appeared (seconds).
LATCHED_CHECK_PERIOD_S = 1.0
LATCHED_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


def _never_called(_message: Any) -> None:
    """Callback of the polled input subscriptions (the executor never runs them)."""


class PolledCallbackGroup(CallbackGroup):
    """A callback group whose entities the executor never waits on or runs."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


@dataclass(frozen=True)
class FrameSettings:
    """The node's parameters that choose and convert one request's frames."""

    max_frame_age: float
    sync_slop: float
    sync_wait: float
    future_stamp_tolerance: float
    use_depth: bool
    max_image_size: int
    depth_scale: float
    rectified: bool
    frame_id: str


@dataclass
class TakenFrames:
    """A request's frames as the pipeline takes them, and where they came from."""

    header: Header
    frames: Frames
    # Stamp of the depth frame the 3D is measured on; None when the answer has no depth.
    depth_time: float | None


class CameraInputs:
    """Polled colour, depth and camera_info subscriptions feeding a :class:`FrameBuffer`.

    Args:
        node: The node the subscriptions belong to.
        errors: The camera's input errors by kind (the node's own for its single camera; an
            undecodable header lands here).
        name: The camera's name in the node's ``cameras`` (its topics are under it), or "".
    """

    def __init__(self, node: Node, errors: dict[str, str], name: str = "") -> None:
        self._node = node
        self._errors = errors
        # The camera's name: its topics are under it ('front/image'); "" for the single camera.
        self.name = name
        self._group = PolledCallbackGroup()
        self._lock = threading.Lock()
        # (kind, subscription, history depth)
        self._subscriptions: list[tuple[str, Any, int]] = []
        self.frames = FrameBuffer()
        self.camera_info: CameraInfo | None = None
        self.camera_info_stats = TopicStats()
        self._camera_info_key: tuple[int, int, str] | None = None
        self._latched_topic: str | None = None
        self._next_latched_check = 0.0
        self.image_type: type = Image
        self.depth_type: type = Image
        self._depth_waits = TimedWaits(node, DEPTH_WAIT_POLL_S, self.drain)

    def subscribe(
        self,
        reliability: str,
        depth: int,
        image_transport: str,
        depth_transport: str,
        use_depth: bool,
    ) -> None:
        """Subscribe to the inputs (colour always; depth and camera_info with ``use_depth``).

        Args:
            reliability: ``"reliable"`` or ``"best_effort"`` (match the camera driver).
            depth: KEEP_LAST history of each input (colour keeps at least
                :data:`PAIRING_HISTORY`).
            image_transport: A key of :data:`IMAGE_TOPICS`.
            depth_transport: A key of :data:`DEPTH_TOPICS`.
            use_depth: Subscribe to depth and camera_info too.
        """

        def qos(history: int) -> QoSProfile:
            return QoSProfile(
                history=QoSHistoryPolicy.KEEP_LAST,
                depth=history,
                reliability=QoSReliabilityPolicy.RELIABLE
                if reliability == "reliable"
                else QoSReliabilityPolicy.BEST_EFFORT,
            )

        image_topic, self.image_type = IMAGE_TOPICS[image_transport]
        depth_topic, self.depth_type = DEPTH_TOPICS[depth_transport]
        info_topic = "camera_info"
        if self.name:
            image_topic, depth_topic, info_topic = (
                f"{self.name}/{topic}" for topic in (image_topic, depth_topic, info_topic)
            )
        inputs = [("image", self.image_type, image_topic, True, qos(max(depth, PAIRING_HISTORY)))]
        if use_depth:
            inputs += [
                ("depth", self.depth_type, depth_topic, True, qos(depth)),
                ("camera_info", CameraInfo, info_topic, False, qos(depth)),
            ]
        self._subscriptions = [
            (
                kind,
                self._node.create_subscription(
                    msg_type, topic, _never_called, profile, callback_group=self._group, raw=raw
                ),
                profile.depth,
            )
            for kind, msg_type, topic, raw, profile in inputs
        ]
        names = {kind: sub.topic_name for kind, sub, _history in self._subscriptions}
        self._latched_topic = names.get("camera_info")
        self._next_latched_check = 0.0
        self._subscribe_latched()
        self.frames.colour_stats.topic = names.get("image", "")
        self.frames.depth_stats.topic = names.get("depth", "")
        self.camera_info_stats.topic = names.get("camera_info", "")

    def stop(self) -> None:
        """Unsubscribe and forget every frame: frames from before a pause must not answer
        questions after it. Requests waiting for depth stop waiting."""
        with self._lock:
            self._latched_topic = None
            for _kind, subscription, _history in self._subscriptions:
                self._node.destroy_subscription(subscription)
            self._subscriptions.clear()
        self.frames.clear()
        self.camera_info = None
        self._camera_info_key = None
        self._depth_waits.end(everything=True)

    def _subscribe_latched(self) -> None:
        """Fetch a latched camera_info (published once, transient local, perhaps before this
        node subscribed) with a subscription of its own, created only once a publisher offers
        one: a transient-local subscription cannot match the usual per-frame (volatile)
        publishers, and would make each of them and this node log an incompatible-QoS warning.
        Checked at most once a second, until a camera_info is in."""
        now = time.monotonic()
        topic = self._latched_topic
        if topic is None or self.camera_info is not None:
            return
        if now < self._next_latched_check:
            return
        self._next_latched_check = now + LATCHED_CHECK_PERIOD_S
        offers = self._node.get_publishers_info_by_topic(topic)
        latched = [o for o in offers if o.qos_profile.durability == LATCHED_QOS.durability]
        if not latched:
            return
        profile = QoSProfile(
            history=LATCHED_QOS.history,
            depth=LATCHED_QOS.depth,
            reliability=latched[0].qos_profile.reliability,  # reliable is what latching needs
            durability=LATCHED_QOS.durability,
        )
        subscription = self._node.create_subscription(
            CameraInfo, topic, _never_called, profile, callback_group=self._group
        )
        with self._lock:
            if self._latched_topic is None:  # stopped meanwhile: not subscribed any more
                self._node.destroy_subscription(subscription)
                return
            self._subscriptions.append(("camera_info", subscription, profile.depth))
            self._latched_topic = None  # one is enough

    def drain(self) -> None:
        """Take every message waiting in the subscriptions into the frame buffer."""
        self._subscribe_latched()
        with self._lock:
            for kind, subscription, history in self._subscriptions:
                taken = []
                while True:
                    try:
                        with subscription.handle:
                            message = subscription.handle.take_message(
                                subscription.msg_type, subscription.raw
                            )
                    except Exception:  # destroyed while deactivating
                        break
                    if message is None or message[0] is None:
                        break
                    taken.append(message)
                # Fewer than the history holds: nothing was overwritten since the last take, so
                # the first message taken is the next one received after the previous take's.
                follows = len(taken) < history
                for index, (message, info) in enumerate(taken):
                    received = info.get("received_timestamp", 0) * 1e-9 or time.time()
                    self._keep(kind, message, received, follows or index > 0)

    def _keep(self, kind: str, message: Any, received: float, follows: bool) -> None:
        if kind == "camera_info":
            stamp = message.header.stamp
            key = (int(stamp.sec), int(stamp.nanosec), str(message.header.frame_id))
            self.camera_info = message
            if key != self._camera_info_key:  # a latched one reaches both subscriptions
                self._camera_info_key = key
                self.camera_info_stats.record(received)
            return
        try:
            header_time = cdr_header_time(message)
        except ValueError as error:
            self._errors[kind] = f"undecodable {kind} message: {error}"
            return
        stamp = header_time[0] + header_time[1] * 1e-9
        if kind == "image":
            self.frames.add("colour", stamp, message, received, header_time, follows)
        else:
            self.frames.add("depth", stamp, message, received, header_time, follows)

    def topic_stats(self, use_depth: bool) -> list[tuple[str, TopicStats]]:
        """``(kind, statistics)`` of every input, for diagnostics."""
        topics = [("image", self.frames.colour_stats)]
        if use_depth:
            topics += [("depth", self.frames.depth_stats), ("camera_info", self.camera_info_stats)]
        return topics

    # ----------------------------------------------------------- a request's frames

    async def take(self, now: float, settings: FrameSettings) -> TakenFrames:
        """A request's frames: the newest colour/depth pair (awaiting a depth frame that is due,
        up to ``settings.sync_wait``, as a coroutine), the colour converted, depth in metres and
        the intrinsics for this colour size, or why there is no 3D.

        Args:
            now: Current time on the clock the stamps use (the node's clock), seconds.
            settings: The node's parameters for frames.

        Raises:
            RequestRejected: No usable colour frame, with why.
        """
        selection = self._select(now, settings)
        waited = None
        plan = self.frames.plan_wait(selection, time.time(), settings.sync_wait)
        if plan is not None:
            waited, _arrived = await self.wait_for_depth(plan)
            selection = self._select(now + waited, settings)
        if settings.use_depth:
            self.frames.record_outcome(time.time(), selection, waited)
        header, rgb = self.frames.decoded(
            selection.colour, lambda data: self._convert_colour(data, settings)
        )
        frames = self._frames_for(selection, rgb, settings)
        depth_used = selection.depth is not None and frames.depth_m is not None
        depth_time = selection.depth.time if depth_used and selection.depth else None
        return TakenFrames(header, frames, depth_time)

    def _select(self, now: float, settings: FrameSettings) -> FrameSelection:
        """Take the waiting messages and pair colour with depth (the newest pair)."""
        self.drain()
        try:
            return self.frames.select(
                now,
                settings.max_frame_age,
                settings.sync_slop,
                settings.future_stamp_tolerance,
                settings.use_depth,
            )
        except NoFrameError as error:
            raise RequestRejected(str(error)) from error

    def _convert_colour(self, data: bytes, settings: FrameSettings) -> tuple[Header, np.ndarray]:
        """Deserialize and convert the one colour frame a request uses."""
        try:
            msg = deserialize_message(data, self.image_type)
            if isinstance(msg, Image):
                rgb = images.image_to_rgb(msg)
            else:
                limit = settings.max_image_size
                rgb = images.decode_compressed_image(msg, max_size=(limit, limit))
        except Exception as error:
            reason = f"colour frame unusable: {error}"
            self._errors["image"] = reason
            raise RequestRejected(reason) from error
        self._errors.pop("image", None)
        header = msg.header
        if not header.frame_id and settings.frame_id:
            header.frame_id = settings.frame_id
        return header, rgb

    def _convert_depth(
        self, data: bytes, settings: FrameSettings
    ) -> tuple[float | None, np.ndarray]:
        """Deserialize and convert a depth frame to metres (its applied scale, the depth)."""
        msg = deserialize_message(data, self.depth_type)
        limit = settings.max_image_size
        depth_m, scale = images.depth_message_to_metres(msg, settings.depth_scale, (limit, limit))
        return scale, depth_m

    def _frames_for(
        self, selection: FrameSelection, rgb: np.ndarray, settings: FrameSettings
    ) -> Frames:
        """Depth in metres and intrinsics for this colour size, or why there is no 3D (input
        problems are also kept for /diagnostics)."""
        if selection.depth is None:
            return Frames(
                rgb, no_depth_reason=selection.depth_reason, depth_wanted=settings.use_depth
            )
        info = self.camera_info
        if info is None:
            return Frames(rgb, no_depth_reason="no camera_info received on 'camera_info'")
        try:
            intrinsics = CameraIntrinsics.from_camera_info(info, use_projection=settings.rectified)
        except ValueError as error:
            self._errors["camera_info"] = f"camera_info unusable: {error}"
            return Frames(rgb, no_depth_reason=f"camera_info unusable: {error}")
        intrinsics, reason = intrinsics_for_colour(intrinsics, rgb.shape[1], rgb.shape[0])
        if intrinsics is None:
            self._errors["camera_info"] = reason
            return Frames(rgb, no_depth_reason=reason)
        self._errors.pop("camera_info", None)
        try:
            scale, depth_m = self.frames.decoded(
                selection.depth, lambda data: self._convert_depth(data, settings)
            )
        except Exception as error:
            reason = f"depth frame unusable: {error}"
            self._errors["depth"] = reason
            return Frames(rgb, no_depth_reason=reason)
        self._errors.pop("depth", None)
        return Frames(rgb, depth_m, intrinsics, scale)

    # ----------------------------------------------------------- waiting for depth

    async def wait_for_depth(self, plan: WaitPlan) -> tuple[float, bool]:
        """Await the depth frame a request's plan expects (a coroutine: no thread is held).

        Args:
            plan: From :meth:`FrameBuffer.plan_wait`.

        Returns:
            ``(seconds waited, whether the depth came)``.
        """
        start = time.time()
        await self._depth_waits.wait(plan.until, lambda: self.frames.depth_reached(plan.reached))
        arrived = self.frames.depth_reached(plan.reached)
        return time.time() - start, arrived
