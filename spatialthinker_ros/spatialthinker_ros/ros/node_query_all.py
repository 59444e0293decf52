"""``~/query_all``: one question to every camera (or the listed ones), as one batch.

The node queues the cameras' requests together (``AnsweringPipeline.together``), so the
in-process backend answers them in one model call (``SpatialAnswer.batch_size`` says how many
shared it) and a server gets them at once. A camera without a usable frame gets its reason in
its ``CameraAnswer``; the others are still asked. The reply holds one outcome per camera and
one scene graph of every answered camera's objects in the frame they share
(``ros_conversions.combined_scene_graph``).

Like ``~/query``, a call is a coroutine that awaits its requests without holding an executor
thread; the action sends the cameras done so far as feedback and passes a cancel on to every
camera's request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile

from spatialthinker_msgs.action import QueryAll as QueryAllAction
from spatialthinker_msgs.msg import CameraAnswer
from spatialthinker_msgs.srv import QueryAll
from spatialthinker_ros.answering.pipeline import RequestRejected
from spatialthinker_ros.ros.node_calls import CALL_QOS, PendingRequest, QueryInterfaces
from spatialthinker_ros.ros.ros_conversions import bounded, combined_scene_graph

__all__ = ["CameraOutcome", "QueryAllInterfaces"]


@dataclass
class CameraOutcome:
    """One camera's part of a ``~/query_all``: its queued request, or why it was not asked."""

    camera: str
    pending: PendingRequest | None = None
    failure: str = ""


#: ``start_all(question, options, cameras, max_frame_age, timeout, target_frame, source)``.
StartAll = Callable[..., Awaitable[list[CameraOutcome]]]


class _UntilDone:
    """Awaits a request's outcome, or a client's cancel of the action goal (then every
    request of the goal fails with that reason)."""

    def __init__(self, pending: PendingRequest, goal_handle: Any, outcomes: list[CameraOutcome]):
        self._pending, self._goal_handle, self._outcomes = pending, goal_handle, outcomes

    def __await__(self) -> Generator[None, None, None]:
        while not self._pending.done.is_set():
            if self._goal_handle is not None and self._goal_handle.is_cancel_requested:
                for outcome in self._outcomes:
                    pending = outcome.pending
                    cancelled = pending is not None and pending.resolve(
                        failure="cancelled by the client"
                    )
                    if cancelled and pending.handle is not None:
                        pending.handle.cancel()
                return
            yield


class QueryAllInterfaces:
    """The ~/query_all service and action of a node.

    Args:
        node: The node.
        group: Their (reentrant) callback group.
        start_all: Coroutine function queueing the cameras' requests (raises
            ``RequestRejected`` with the reason when nothing could be asked).
        wake: Wakes the executor (any thread).
        calls: The node's ~/query interfaces (what cannot be sent is counted there).
    """

    def __init__(
        self,
        node: Node,
        group: CallbackGroup,
        start_all: StartAll,
        wake: Callable[[], None],
        calls: QueryInterfaces,
    ) -> None:
        self._node = node
        self._start_all = start_all
        self._wake = wake
        self._calls = calls
        node.create_service(
            QueryAll,
            "~/query_all",
            self._on_service,
            qos_profile=CALL_QOS,
            callback_group=group,
        )
        ActionServer(
            node,
            QueryAllAction,
            "~/query_all",
            execute_callback=self._on_action,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=self._on_cancel,
            callback_group=group,
            goal_service_qos_profile=CALL_QOS,
            result_service_qos_profile=CALL_QOS,
            cancel_service_qos_profile=CALL_QOS,
            feedback_pub_qos_profile=QoSProfile(depth=100),
            result_timeout=60,
        )

    def _on_cancel(self, _goal: Any) -> CancelResponse:
        self._wake()  # the waiting goal looks at its cancel when the executor resumes it
        return CancelResponse.ACCEPT

    async def _run(self, goal: Any, source: str, goal_handle: Any = None) -> Any:
        """Ask, await every camera, and fill a result (``QueryAll.Response`` fields)."""
        reply = QueryAll.Response()
        try:
            outcomes = await self._start_all(
                goal.question,
                list(goal.options),
                list(goal.cameras),
                goal.max_frame_age,
                goal.timeout,
                goal.target_frame,
                source,
            )
        except RequestRejected as error:
            self._node.get_logger().warning(f"query_all rejected: {error}")
            reply.success, reply.message = False, bounded(str(error))
            return reply
        done: list[str] = []
        for outcome in outcomes:
            if outcome.pending is not None:
                await _UntilDone(outcome.pending, goal_handle, outcomes)
            done.append(outcome.camera)
            if goal_handle is not None and not goal_handle.is_cancel_requested:
                try:
                    goal_handle.publish_feedback(QueryAllAction.Feedback(done=list(done)))
                except Exception as error:  # best effort; the result still comes
                    self._calls.note_unsent(
                        "query_all feedback", f"{type(error).__name__}: {error}"
                    )
        answers = [_camera_answer(outcome) for outcome in outcomes]
        reply.answers = answers
        reply.success = any(a.success for a in answers)
        failed = [f"{a.camera or 'camera'}: {a.message}" for a in answers if not a.success]
        reply.scene_graph, note = combined_scene_graph(
            [(a.camera, a.answer.scene_graph) for a in answers if a.success]
        )
        reply.message = bounded("; ".join([*failed, *([note] if note else [])]))
        return reply

    async def _on_service(
        self, request: QueryAll.Request, response: QueryAll.Response
    ) -> QueryAll.Response:
        reply = await self._run(request, "query_all")
        response.success, response.message = reply.success, reply.message
        response.answers, response.scene_graph = reply.answers, reply.scene_graph
        return self._calls.sendable("query_all", response, QueryAll.Response())

    async def _on_action(self, goal_handle: Any) -> QueryAllAction.Result:
        reply = await self._run(goal_handle.request, "query_all_action", goal_handle)
        result = QueryAllAction.Result(
            success=reply.success,
            message=reply.message,
            answers=reply.answers,
            scene_graph=reply.scene_graph,
        )
        result = self._calls.sendable("query_all", result, QueryAllAction.Result())
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif result.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result


def _camera_answer(outcome: CameraOutcome) -> CameraAnswer:
    """A camera's outcome as the message says it."""
    answer = CameraAnswer(camera=outcome.camera)
    pending = outcome.pending
    if pending is not None and pending.answer is not None:
        answer.success, answer.answer = True, pending.answer
    else:
        reason = outcome.failure or (pending.failure if pending is not None else "") or "no answer"
        answer.success, answer.message = False, bounded(reason)
    return answer
