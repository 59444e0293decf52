"""The node's camera inputs: colour, depth and camera_info, subscribed serialized and polled.

At 30 Hz an executor callback per frame costs a Python wake-up, a wait-set rebuild and a copy
for frames that are never used (most of them). So the inputs sit in a callback group the
executor never runs: messages wait in the subscriptions' KEEP_LAST history, and the node takes
them when a request needs a frame (and once per diagnostics period for the statistics). Only
the header stamp of a frame is read then; nothing is converted.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spatialthinker_ros.core.frame_buffer import FrameBuffer, TopicStats, cdr_header_stamp

#: Topic (relative to the node) and message type of each transport.
IMAGE_TOPICS = {"raw": ("image", Image), "compressed": ("image/compressed", CompressedImage)}
DEPTH_TOPICS = {
    "raw": ("depth", Image),
    "compressedDepth": ("depth/compressedDepth", CompressedImage),
}


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


class CameraInputs:
    """Polled colour, depth and camera_info subscriptions feeding a :class:`FrameBuffer`.

    Args:
        node: The node the subscriptions belong to.
        errors: The node's input errors by kind (shared; an undecodable header lands here).
    """

    def __init__(self, node: Node, errors: dict[str, str]) -> None:
        self._node = node
        self._errors = errors
        self._group = PolledCallbackGroup()
        self._lock = threading.Lock()
        self._subscriptions: list[tuple[str, Any]] = []
        self.frames = FrameBuffer()
        self.camera_info: CameraInfo | None = None
        self.camera_info_stats = TopicStats()
        self.image_type: type = Image
        self.depth_type: type = Image

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
            depth: KEEP_LAST history of each input.
            image_transport: A key of :data:`IMAGE_TOPICS`.
            depth_transport: A key of :data:`DEPTH_TOPICS`.
            use_depth: Subscribe to depth and camera_info too.
        """
        qos = QoSProfile(
            history=QoSHistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=QoSReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else QoSReliabilityPolicy.BEST_EFFORT,
        )
        image_topic, self.image_type = IMAGE_TOPICS[image_transport]
        depth_topic, self.depth_type = DEPTH_TOPICS[depth_transport]
        inputs = [("image", self.image_type, image_topic, True)]
        if use_depth:
            inputs += [
                ("depth", self.depth_type, depth_topic, True),
                ("camera_info", CameraInfo, "camera_info", False),
            ]
        self._subscriptions = [
            (
                kind,
                self._node.create_subscription(
                    msg_type, topic, _never_called, qos, callback_group=self._group, raw=raw
                ),
            )
            for kind, msg_type, topic, raw in inputs
        ]

    def stop(self) -> None:
        """Unsubscribe and forget every frame: frames from before a pause must not answer
        questions after it."""
        with self._lock:
            for _kind, subscription in self._subscriptions:
                self._node.destroy_subscription(subscription)
            self._subscriptions.clear()
        self.frames.clear()
        self.camera_info = None

    def drain(self) -> None:
        """Take every message waiting in the subscriptions into the frame buffer."""
        with self._lock:
            for kind, subscription in self._subscriptions:
                while True:
                    try:
                        with subscription.handle:
                            taken = subscription.handle.take_message(
                                subscription.msg_type, subscription.raw
                            )
                    except Exception:  # destroyed while deactivating
                        break
                    if taken is None or taken[0] is None:
                        break
                    message, info = taken
                    received = info.get("received_timestamp", 0) * 1e-9 or time.time()
                    self._keep(kind, message, received)

    def _keep(self, kind: str, message: Any, received: float) -> None:
        if kind == "camera_info":
            self.camera_info = message
            self.camera_info_stats.record(received)
            return
        try:
            stamp = cdr_header_stamp(message)
        except ValueError as error:
            self._errors[kind] = f"undecodable {kind} message: {error}"
            return
        if kind == "image":
            self.frames.add_colour(stamp, message, received)
        else:
            self.frames.add_depth(stamp, message, received)

    def topic_stats(self, use_depth: bool) -> list[tuple[str, TopicStats]]:
        """``(kind, statistics)`` of every input, for diagnostics."""
        topics = [("image", self.frames.colour_stats)]
        if use_depth:
            topics += [("depth", self.frames.depth_stats), ("camera_info", self.camera_info_stats)]
        return topics
