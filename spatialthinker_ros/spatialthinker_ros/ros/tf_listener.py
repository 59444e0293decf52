"""TF for the node: /tf and /tf_static into a core
:class:`~spatialthinker_ros.core.transforms.TransformBuffer`, and the transforms a request needs,
looked up at its colour image's stamp.

tf2_ros is not needed: the maths is the core buffer's (scipy), and the wire is the standard
``tf2_msgs/msg/TFMessage`` on ``/tf`` (volatile) and ``/tf_static`` (transient local, as tf2's
static broadcaster publishes it), so any tf2 publisher of a robot feeds it and the tests run the
very path a robot runs.

TF is polled, as the camera inputs are (``node_inputs``): a robot's ``/tf`` brings 50-500 messages
a second, and an executor callback per message costs a Python wake-up and a wait-set rebuild
(5 % of a core at 50 Hz, measured). The subscriptions sit in a callback group the executor never
runs; their messages wait in the KEEP_LAST history and are taken into the buffer when a request
looks a transform up, while requests wait for one, and on a slow timer that keeps the history
from overflowing.

A request looks its transforms up at the image's stamp, not the latest: a robot moving at 1 m/s
whose camera stamps frames 100 ms before they arrive would otherwise put every object 10 cm
off. When TF has not caught up with the stamp yet, the request waits for it up to
``tf_timeout``, as a coroutine (no executor thread held): each /tf message and a short timer end
the waits. A transform that does not come never loses the answer: it is reported in the camera
frame, with a warning naming the missing link and TF's reason.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from diagnostic_msgs.msg import KeyValue
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from tf2_msgs.msg import TFMessage

from spatialthinker_ros.answering.robot_frames import (
    FrameRequest,
    FrameTransforms,
    keep_tf_message,
    look_up,
)
from spatialthinker_ros.core.transforms import TransformBuffer
from spatialthinker_ros.ros.node_inputs import PolledCallbackGroup
from spatialthinker_ros.ros.timed_waits import TimedWaits, steady_timer


def _never_called(_message: TFMessage) -> None:
    """Callback of the polled TF subscriptions (the executor never runs them)."""


# How long the buffer keeps a dynamic transform's history (tf2's default): a request looks up its
# image's stamp before inference, so seconds are plenty.
TF_CACHE_S = 10.0
# How often waiting requests are looked at while some wait (new TF, their deadlines).
TF_WAIT_POLL_S = 0.02
# How often /tf is taken into the buffer while nobody asks: the history (TF_HISTORY messages)
# must not overflow in between, at a robot's few hundred TF messages a second.
TF_DRAIN_PERIOD_S = 0.5
TF_HISTORY = 1000
# Failed lookups remembered for /diagnostics' "in the last minute" figure.
FAILURE_WINDOW_S = 60.0
# tf2's own listener QoS (reliable; /tf_static transient local), /tf deeper: it is polled.
TF_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=TF_HISTORY,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)
TF_STATIC_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


class TfListener:
    """The node's TF: subscriptions while active, the buffer, and waits for transforms.

    Args:
        node: The node the subscriptions and the wait timer belong to.
        now: The node's clock in seconds (sim time with ``use_sim_time``), for transform ages.
    """

    def __init__(self, node: Node, now: Callable[[], float]) -> None:
        self._node = node
        self._now = now
        self.buffer = TransformBuffer(TF_CACHE_S)
        self._group = PolledCallbackGroup()
        self._drain_lock = threading.Lock()
        self._subscriptions: list = []
        self._lock = threading.Lock()
        self._failures: deque[float] = deque(maxlen=1024)
        self.failed_total = 0
        self.last_failure = ""
        self.rejected_total = 0
        self._tf_waits = TimedWaits(node, TF_WAIT_POLL_S, self.drain)
        # Runs only while subscribed; on the steady clock, like the waits (simulated time may
        # stand still while TF still comes).
        self._drain_timer = steady_timer(node, TF_DRAIN_PERIOD_S, self.drain)

    # ------------------------------------------------------------ subscriptions

    def subscribe(self) -> None:
        """Subscribe to /tf and /tf_static (idempotent)."""
        if self._subscriptions:
            return
        with self._drain_lock:
            self._subscriptions = [
                (
                    self._node.create_subscription(
                        TFMessage, topic, _never_called, profile, callback_group=self._group
                    ),
                    static,
                )
                for topic, profile, static in (
                    ("/tf", TF_QOS, False),
                    ("/tf_static", TF_STATIC_QOS, True),
                )
            ]
        self._drain_timer.reset()

    def unsubscribe(self) -> None:
        """Drop the subscriptions and what the buffer holds; end every wait."""
        self._drain_timer.cancel()
        with self._drain_lock:
            for subscription, _static in self._subscriptions:
                self._node.destroy_subscription(subscription)
            self._subscriptions = []
        self.buffer.clear()
        self._tf_waits.end(everything=True)

    def drain(self) -> None:
        """Take every TF message waiting in the subscriptions into the buffer (any thread)."""
        with self._drain_lock:
            for subscription, static in self._subscriptions:
                while True:
                    try:
                        with subscription.handle:
                            taken = subscription.handle.take_message(TFMessage, False)
                    except Exception:  # destroyed while deactivating
                        break
                    if taken is None or taken[0] is None:
                        break
                    self._keep(taken[0], static)

    def _keep(self, message: TFMessage, static: bool) -> None:
        for error in keep_tf_message(self.buffer, message, static):
            # A broken publisher: named, counted, never raised.
            self.rejected_total += 1
            self._node.get_logger().warning(
                f"TF transform ignored: {error}", throttle_duration_sec=10.0
            )

    # ------------------------------------------------------------ a request's transforms

    async def transforms(
        self, camera_frame: str, stamp: float, target_frame: str, gravity_frame: str, timeout: float
    ) -> FrameTransforms:
        """The target frame's placement and TF's up for one image, waiting for TF up to
        ``timeout`` seconds (a coroutine: no thread is held).

        Args:
            camera_frame: The image's frame_id (its optical frame).
            stamp: The image's stamp, seconds on the node's clock.
            target_frame: Where to report the 3D ("" or the camera frame: no transform).
            gravity_frame: A z-up frame for up ("" for none).
            timeout: Longest wait for a transform TF has not caught up with.
        """
        request = FrameRequest.of(camera_frame, target_frame, gravity_frame)
        if not request.lookups:
            return FrameTransforms()
        self.drain()
        if (
            camera_frame
            and timeout > 0
            and any(self.buffer.can_transform(t, s, stamp) for t, s in request.lookups)
        ):
            await self._tf_waits.wait(
                time.time() + timeout,
                lambda: not any(self.buffer.can_transform(t, s, stamp) for t, s in request.lookups),
            )
        return look_up(self.buffer, request, stamp, self._failed)

    def _failed(self, what: str) -> None:
        with self._lock:
            self.failed_total += 1
            self._failures.append(time.time())
            self.last_failure = what
        self._node.get_logger().warning(f"TF lookup failed: {what}", throttle_duration_sec=5.0)

    # ------------------------------------------------------------ diagnostics

    def diagnostics(self) -> list[KeyValue]:
        """The TF figures of the inputs' status."""
        self.drain()  # the latest transform's age as of now
        with self._lock:
            recent = sum(1 for at in self._failures if time.time() - at <= FAILURE_WINDOW_S)
            total, last = self.failed_total, self.last_failure
        newest = self.buffer.newest_stamp()
        age = "none received" if newest is None else f"{max(self._now() - newest, 0.0):.3f}"
        return [
            KeyValue(key="tf lookups failed", value=str(total)),
            KeyValue(key="tf lookups failed (last min)", value=str(recent)),
            KeyValue(key="tf last failure", value=last),
            KeyValue(key="tf latest transform age (s)", value=age),
            KeyValue(key="tf transforms rejected", value=str(self.rejected_total)),
        ]
