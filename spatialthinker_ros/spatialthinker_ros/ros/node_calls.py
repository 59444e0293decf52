"""The node's query interfaces: the ~/query service and action, and the calls that wait.

A service call or an action goal is a coroutine that awaits its request (:class:`PendingRequest`):
waiting holds no executor thread, so any number of callers wait at once without starving
/diagnostics, lifecycle services or each other. One watch timer, running only while calls
wait, publishes action feedback and passes on client cancels.

While the model writes (the ``stream`` parameter), the pipeline's progress reaches an action
goal's feedback: a stage change and the scene graph at once (:meth:`QueryInterfaces.progress`),
the text so far with the watch timer, so at most every ``WATCH_PERIOD_S``.

Nothing a call sends may raise inside the executor: there, an exception ends the node (and
every robot's calls with it). A response or result is serialised before it is handed to rclpy
(:func:`unsendable`), and feedback that cannot be published is dropped; either is logged and
counted (:meth:`QueryInterfaces.note_unsent`), and the call still ends in one answer or one
failure with a reason.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_msgs.msg import SceneGraph, SpatialAnswer
from spatialthinker_msgs.srv import Query
from spatialthinker_ros.answering.pipeline import AnswerHandle, Progress, RequestRejected
from spatialthinker_ros.core.engine import Priority
from spatialthinker_ros.ros.ros_conversions import bounded
from spatialthinker_ros.ros.timed_waits import steady_timer

# History depth of the query service and action interfaces (requests and replies). Calls beyond
# max_queue_size are refused at once, so this only has to hold what arrives between two takes
# of the executor: 34 planners calling at the same moment lost 23 calls at the default 10.
CALL_QOS_DEPTH = 1000
# How often the watch timer looks at waiting calls (feedback, client cancels).
WATCH_PERIOD_S = 0.1
# The query interfaces' QoS: reliable, volatile, and deep (see CALL_QOS_DEPTH).
CALL_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=CALL_QOS_DEPTH,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)


def unsendable(message: Any) -> str | None:
    """Why ``message`` cannot be sent; None when it can.

    rclpy encodes every string as UTF-8 while it serialises a message, and a string no encoder
    accepts (a lone UTF-16 surrogate) raises there. For a service response or an action result
    that happens inside the executor, after the callback has returned, where nothing can catch
    it: so the node serialises what it is about to send first.
    """
    try:
        serialize_message(message)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


@dataclass
class PendingRequest:
    """One request from the moment it is accepted until its single outcome."""

    request_id: str
    question: str
    source: str
    header: Header
    rgb: np.ndarray | None
    handle: AnswerHandle | None = None
    answer: SpatialAnswer | None = None
    failure: str | None = None
    # What the model has written so far (streaming): stage, text tail, the early scene graph.
    stage: str = ""
    text: str = ""
    scene_graph: SceneGraph | None = None
    done: threading.Event = field(default_factory=threading.Event)
    # Called (on whichever thread resolves) once the outcome is in: wakes the executor so
    # that the coroutine awaiting this request resumes at once.
    wake: Callable[[], None] | None = None
    # The camera the frame came from ("" for the single camera).
    camera: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __await__(self) -> Generator[None, None, None]:
        """Await the outcome in an executor coroutine without holding a thread."""
        while not self.done.is_set():
            yield

    def release(self) -> None:
        """Drop the frame (megabytes) once the request has ended and been published."""
        self.rgb = None

    def feedback(self) -> QueryAction.Feedback:
        """The action feedback of this request now."""
        handle = self.handle
        state, position = "queued", 0
        if handle is not None and handle.state != "queued":
            state = "running"
        elif handle is not None:
            position = max(int(handle.queue_position), 0)
        stage = "queued" if state == "queued" else self.stage or "observing"
        return QueryAction.Feedback(
            state=state,
            queue_position=position,
            stage=stage,
            scene_graph=self.scene_graph or SceneGraph(),
            text=self.text,
        )

    def resolve(self, answer: SpatialAnswer | None = None, failure: str | None = None) -> bool:
        """Record the outcome; only the first call counts (exactly one outcome)."""
        with self._lock:
            if self.done.is_set():
                return False
            self.answer, self.failure = answer, failure
            self.done.set()
        if self.wake is not None:
            self.wake()
        return True


@dataclass
class _Waiting:
    """A call whose coroutine awaits its request; the watch timer looks after it."""

    pending: PendingRequest
    goal_handle: Any = None  # action goals only
    last_feedback: tuple[str, int, str, str, bool] | None = None
    # The watch timer and the engine's text thread both send feedback.
    lock: threading.Lock = field(default_factory=threading.Lock)


class RateLimit:
    """~/question's limit: a token bucket, ``rate`` per second, bursts of one second's worth."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._last: float | None = None

    def allow(self, rate: float, now: float) -> bool:
        capacity = max(1.0, rate)
        if self._last is None:
            self._tokens = capacity
        else:
            self._tokens = min(capacity, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class QueryInterfaces:
    """The ~/query service and action of a node.

    Args:
        node: The node.
        group: Their (reentrant) callback group.
        start_request: Coroutine function ``(question, options, max_frame_age, timeout,
            priority, source)`` -> a :class:`PendingRequest`, or raises ``RequestRejected``
            with the reason (it may await a due depth frame, holding no thread).
        wake: Wakes the executor (any thread).
    """

    def __init__(
        self,
        node: Node,
        group: CallbackGroup,
        start_request: Callable[..., Awaitable[PendingRequest]],
        wake: Callable[[], None],
    ) -> None:
        self._node = node
        self._start_request = start_request
        self._wake_executor = wake
        # Calls awaiting their request, by request id (see _Waiting and _watch_waiting).
        self._waiting: dict[str, _Waiting] = {}
        self._waiting_lock = threading.Lock()
        # Answers, results and feedback that could not be sent (see note_unsent).
        self.unsent = 0
        self._unsent_lock = threading.Lock()
        node.create_service(
            Query,
            "~/query",
            self._on_query_service,
            qos_profile=CALL_QOS,
            callback_group=group,
        )
        self._action_server = ActionServer(
            node,
            QueryAction,
            "~/query",
            execute_callback=self._on_action_execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=group,
            goal_service_qos_profile=CALL_QOS,
            result_service_qos_profile=CALL_QOS,
            cancel_service_qos_profile=CALL_QOS,
            feedback_pub_qos_profile=QoSProfile(depth=100),
            # Finished goals' results are kept for late get_result calls; rclpy's
            # default (15 min) would hold every answer of a busy robot in memory.
            result_timeout=60,
        )
        # Runs only while calls wait; on the steady clock, so that cancels and feedback go on
        # while simulated time stands still.
        self._watch_timer = steady_timer(node, WATCH_PERIOD_S, self._watch_waiting)

    @property
    def waiting(self) -> int:
        """Calls still awaiting their outcome."""
        with self._waiting_lock:
            return len(self._waiting)

    async def _outcome(self, pending: PendingRequest, goal_handle: Any = None) -> None:
        """Await the request's one outcome; the watch timer enforces the deadline meanwhile."""
        waiting = _Waiting(pending, goal_handle)
        if goal_handle is not None:
            self._send_feedback(waiting)
        with self._waiting_lock:
            self._waiting[pending.request_id] = waiting
            if self._watch_timer.is_canceled():
                self._watch_timer.reset()
                self._wake_executor()  # the wait in progress does not know the timer yet
        try:
            await pending
        finally:
            with self._waiting_lock:
                self._waiting.pop(pending.request_id, None)

    def _watch_waiting(self) -> None:
        """Watch timer: feedback and client cancels of the calls that wait."""
        with self._waiting_lock:
            waiting = list(self._waiting.values())
            if not waiting:
                self._watch_timer.cancel()
                return
        for item in waiting:
            pending, goal_handle = item.pending, item.goal_handle
            if pending.done.is_set() or goal_handle is None:
                continue
            if goal_handle.is_cancel_requested:
                # The client's reason first: the engine's own ("cancelled while running")
                # would otherwise win the one outcome.
                pending.resolve(failure="cancelled by the client")
                if pending.handle is not None:
                    pending.handle.cancel()
            else:
                self._send_feedback(item)

    def progress(
        self, pending: PendingRequest, progress: Progress, graph: SceneGraph | None
    ) -> None:
        """Record a request's progress (the engine's text thread); a new stage or the scene
        graph goes to its action client at once, new text with the next watch tick."""
        changed = graph is not None or progress.stage != pending.stage
        pending.stage, pending.text = progress.stage, progress.text
        if graph is not None:
            pending.scene_graph = graph
        if changed:
            with self._waiting_lock:
                waiting = self._waiting.get(pending.request_id)
            if waiting is not None and waiting.goal_handle is not None:
                self._send_feedback(waiting)

    def note_unsent(self, what: str, why: str) -> None:
        """Log and count a message that could not be sent (any thread)."""
        with self._unsent_lock:
            self.unsent += 1
            count = self.unsent
        self._node.get_logger().error(
            f"{what} could not be sent: {why} ({count} so far)", throttle_duration_sec=1.0
        )

    def _send_feedback(self, waiting: _Waiting) -> None:
        with waiting.lock:
            if waiting.pending.done.is_set():
                return
            feedback = waiting.pending.feedback()
            key = (
                feedback.state,
                feedback.queue_position,
                feedback.stage,
                feedback.text,
                waiting.pending.scene_graph is not None,
            )
            if key != waiting.last_feedback:
                waiting.last_feedback = key  # feedback that cannot be sent is not tried again
                try:
                    waiting.goal_handle.publish_feedback(feedback)
                except Exception as error:  # feedback is best effort; the outcome still comes
                    self.note_unsent(
                        f"{waiting.pending.request_id}: feedback",
                        f"{type(error).__name__}: {error}",
                    )

    def sendable(self, request_id: str, message: Any, failure: Any) -> Any:
        """``message`` (a response or result) when it can be sent; else ``failure``, a fresh
        one, failed with the reason."""
        why = unsendable(message)
        if why is None:
            return message
        self.note_unsent(f"{request_id}: the answer", why)
        failure.success, failure.message = False, bounded(f"the answer could not be sent: {why}")
        return failure

    async def _on_query_service(
        self, request: Query.Request, response: Query.Response
    ) -> Query.Response:
        try:
            pending = await self._start_request(
                request.question,
                list(request.options),
                request.max_frame_age,
                request.timeout,
                Priority.QUERY,
                "service",
                target_frame=request.target_frame,
                camera=request.camera,
            )
        except RequestRejected as error:
            self._node.get_logger().warning(f"query rejected: {error}")
            response.success, response.message = False, bounded(str(error))
            return self.sendable("a rejected query", response, Query.Response())
        await self._outcome(pending)
        if pending.answer is not None:
            response.success, response.answer = True, pending.answer
        else:
            response.success, response.message = False, bounded(pending.failure)
        response = self.sendable(pending.request_id, response, Query.Response())
        if not response.success:  # the message sent: the logger encodes it as UTF-8 too
            self._node.get_logger().warning(f"{pending.request_id} failed: {response.message}")
        return response

    async def _on_action_execute(self, goal_handle: Any) -> QueryAction.Result:
        goal = goal_handle.request
        result = QueryAction.Result()
        try:
            pending = await self._start_request(
                goal.question,
                list(goal.options),
                goal.max_frame_age,
                goal.timeout,
                Priority.QUERY,
                "action",
                target_frame=goal.target_frame,
                camera=goal.camera,
            )
        except RequestRejected as error:
            goal_handle.abort()
            result.success, result.message = False, bounded(str(error))
            return self.sendable("a rejected goal", result, QueryAction.Result())
        await self._outcome(pending, goal_handle)
        if pending.answer is not None:
            result.success, result.answer = True, pending.answer
        else:
            result.success, result.message = False, bounded(pending.failure)
        # Checked before the goal's state is set: an answer that cannot be sent is a failure.
        result = self.sendable(pending.request_id, result, QueryAction.Result())
        if result.success:
            goal_handle.succeed()
        elif goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return result
