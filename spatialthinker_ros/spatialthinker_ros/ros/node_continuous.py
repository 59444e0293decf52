"""Continuous mode: a standing question asked on the latest frame at ``rate_hz``, of each camera
(or each of ``continuous_cameras``) in turn (``rate_hz`` in total).

One standing question at a time (a tick while the last one runs is skipped, so stale frames never
pile up), at low priority behind on-demand queries. What goes wrong is kept in the node's input
errors, where ``/diagnostics`` shows it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node

from spatialthinker_ros.answering.parameters import split_camera_list, split_options
from spatialthinker_ros.answering.pipeline import RequestRejected
from spatialthinker_ros.core.engine import Priority
from spatialthinker_ros.ros.node_calls import PendingRequest

#: ``start_request(question, options, max_frame_age, timeout, priority, source, camera=...)``.
StartRequest = Callable[..., Awaitable[PendingRequest]]


class ContinuousMode:
    """The continuous-mode timer of a node.

    Args:
        node: The node (its parameters ``rate_hz``, ``continuous_question``,
            ``continuous_options``, ``continuous_cameras`` and ``request_timeout`` are read at
            each tick).
        group: The callback group of the timer.
        start_request: The node's way to start a request (raises RequestRejected).
        errors: The node's input errors (key ``continuous``).
        cameras: The node's cameras, asked in turn unless ``continuous_cameras`` lists some
            ("" for the single camera).
    """

    def __init__(
        self,
        node: Node,
        group: CallbackGroup,
        start_request: StartRequest,
        errors: dict[str, str],
        cameras: Sequence[str] = ("",),
    ) -> None:
        self._node = node
        self._cameras = list(cameras) or [""]
        self._turn = 0  # how many standing questions were started: whose turn it is
        self._group = group
        self._start_request = start_request
        self._errors = errors
        self._timer: Any = None
        self._pending: PendingRequest | None = None

    def _param(self, name: str) -> Any:
        return self._node.get_parameter(name).value

    def start(self) -> None:
        """(Re)start the timer at ``rate_hz`` (none at 0)."""
        self.stop()
        rate = float(self._param("rate_hz"))
        if rate > 0:
            self._timer = self._node.create_timer(
                1.0 / rate, self._tick, callback_group=self._group
            )

    def stop(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None

    def _next_camera(self) -> str:
        """The camera whose turn it is, of ``continuous_cameras`` (read now, so a change applies
        at the next tick) or else of every camera."""
        listed = split_camera_list(str(self._param("continuous_cameras"))) or self._cameras
        camera = listed[self._turn % len(listed)]
        self._turn += 1
        return camera

    async def _tick(self) -> None:
        question = str(self._param("continuous_question"))
        if not question.strip():
            self._errors["continuous"] = "rate_hz > 0 but continuous_question is empty"
            return
        if self._pending is not None and not self._pending.done.is_set():
            return  # one standing question at a time: never pile up stale frames
        try:
            self._pending = await self._start_request(
                question,
                split_options(str(self._param("continuous_options"))),
                0.0,
                max(1.0 / float(self._param("rate_hz")), float(self._param("request_timeout"))),
                Priority.CONTINUOUS,
                "continuous",
                camera=self._next_camera(),
            )
            self._errors.pop("continuous", None)
        except RequestRejected as error:
            self._errors["continuous"] = str(error)
