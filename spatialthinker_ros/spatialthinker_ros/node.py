"""spatialthinker_node: the ROS 2 lifecycle node around the inference engine.

Thin glue. Colour and depth arrive serialized and are only buffered (their
stamps read from the CDR bytes); a request picks its frames, converts just
those, and hands the RGB image to the engine, whose own thread runs the model.
When a result comes back (on the engine's thread) the node lifts the boxes to
3D, publishes, and releases whoever waits: a service call, an action goal,
the ~/question topic or the continuous-mode timer.

Threading: one MultiThreadedExecutor with a few threads. Inputs and timers sit
in their own mutually exclusive groups and never block. A service call or an
action goal is a coroutine that awaits its request (PendingRequest): waiting
holds no executor thread, so any number of callers wait at once without
starving /diagnostics, lifecycle services or each other. rclpy resumes waiting
coroutines whenever the executor wakes, and the engine's done callback wakes it
(Executor.wake) once the outcome is in. One watch timer, running only while
calls wait, publishes action feedback, passes on client cancels and fails calls
past their deadline. The call interfaces have deep request histories, so a
burst of calls arriving at once is not overwritten before the executor takes
them (the default depth of 10 silently lost most of 34 simultaneous calls).
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import (
    CallbackGroup,
    MutuallyExclusiveCallbackGroup,
    ReentrantCallbackGroup,
)
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_msgs.msg import SceneGraph, SpatialAnswer
from spatialthinker_msgs.srv import Query
from spatialthinker_ros import images
from spatialthinker_ros.annotate import draw_annotations
from spatialthinker_ros.backends import GenerationSettings, create_backend
from spatialthinker_ros.camera import (
    CameraIntrinsics,
    aspect_mismatch,
    depth_range_warning,
    depth_to_metres,
)
from spatialthinker_ros.engine import (
    EngineConfig,
    EngineResult,
    InferenceEngine,
    Priority,
    RequestFailed,
    RequestHandle,
)
from spatialthinker_ros.frame_buffer import (
    FrameBuffer,
    FrameSelection,
    NoFrameError,
    TopicStats,
    cdr_header_stamp,
)
from spatialthinker_ros.lifting import LiftParams, lift_boxes
from spatialthinker_ros.markers import scene_graph_markers
from spatialthinker_ros.model_frame import native_frame_warning
from spatialthinker_ros.parameters import (
    MAX_TIMEOUT_S,
    PARAMETERS,
    PARAMETERS_BY_NAME,
    split_options,
    validate_all,
)
from spatialthinker_ros.relation_check import ContradictionCounter, verify_relations
from spatialthinker_ros.ros_conversions import answer_message, bounded, scene_graph_message

NODE_NAME = "spatialthinker"
MAX_OPTIONS = 26
# How long past its deadline a waiting call gives a running request before
# failing it itself (the engine fails queued requests at the deadline).
DEADLINE_GRACE_S = 2.0
# Longest deadline a request may ask for (an hour: far beyond any answer's seconds).
MAX_REQUEST_TIMEOUT_S = MAX_TIMEOUT_S
# History depth of the query service and action interfaces (requests and replies). Calls beyond
# max_queue_size are refused at once, so this only has to hold what arrives between two takes
# of the executor: 34 planners calling at the same moment lost 23 calls at the default 10.
CALL_QOS_DEPTH = 1000
# Executor threads: waiting calls hold none (they are coroutines), so a few serve inputs,
# timers, diagnostics, lifecycle and parameter services and the starting of requests.
EXECUTOR_THREADS = 6
# How often the watch timer looks at waiting calls (feedback, client cancels, deadlines).
WATCH_PERIOD_S = 0.1


def _never_called(_message: Any) -> None:
    """Callback of the polled input subscriptions (the executor never runs them)."""


class PolledCallbackGroup(CallbackGroup):
    """A callback group whose entities the executor never waits on or runs.

    The camera inputs are polled instead: at 30 Hz, an executor callback per
    frame costs a Python wake-up, a wait-set rebuild and a copy for frames that
    are never used (most of them). Messages wait in the subscription's
    KEEP_LAST history, and the node takes them when a request needs a frame
    (and once per diagnostics period for the input statistics).
    """

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


class RequestRejected(Exception):
    """A request that cannot start; the message is the reason users see."""


@dataclass
class PendingRequest:
    """One request from the moment it is accepted until its single outcome."""

    request_id: str
    question: str
    options: list[str]
    source: str
    started: float
    deadline: float
    selection: FrameSelection | None
    header: Header
    rgb: np.ndarray | None
    handle: RequestHandle | None = None
    answer: SpatialAnswer | None = None
    failure: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    # Called (on whichever thread resolves) once the outcome is in: wakes the executor so
    # that the coroutine awaiting this request resumes at once.
    wake: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __await__(self) -> Generator[None, None, None]:
        """Await the outcome in an executor coroutine without holding a thread."""
        while not self.done.is_set():
            yield

    def release(self) -> None:
        """Drop the frames (megabytes) once the request has ended and been published."""
        self.rgb = None
        self.selection = None
        self.handle = None

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


def _descriptor(name: str) -> ParameterDescriptor:
    spec = PARAMETERS_BY_NAME[name]
    text = spec.description
    if spec.choices:
        text += f" Choices: {', '.join(spec.choices)}."
    if spec.range_text():
        text += f" {spec.range_text()}"
    if spec.read_only:
        text += " Applied on configure."
    return ParameterDescriptor(description=text)


# The query interfaces' QoS: reliable, volatile, and deep (see CALL_QOS_DEPTH).
CALL_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=CALL_QOS_DEPTH,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)


@dataclass
class _Waiting:
    """A call whose coroutine awaits its request; the watch timer looks after it."""

    pending: PendingRequest
    goal_handle: Any = None  # action goals only
    last_feedback: tuple[str, int] | None = None


class _RateLimit:
    """Token bucket: ``rate`` per second on average, bursts up to one second's worth."""

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


class SpatialThinkerNode(LifecycleNode):
    """Answers spatial questions about the camera image with SpatialThinker."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec.name))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._frames = FrameBuffer()
        self._camera_info: CameraInfo | None = None
        self._camera_info_stats = TopicStats()
        self._input_errors: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._engine: InferenceEngine | None = None
        self._backend_state = "unconfigured"
        self._last_backend_error: str | None = None
        # Relations the depth contradicted, per minute, for diagnostics.
        self._contradictions = ContradictionCounter(60.0)
        self._active = False
        self._continuous_pending: PendingRequest | None = None
        # Set once: 'native' states a size the model does not see (logged, in diagnostics).
        self._frame_warning: str | None = None

        self._input_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        # Diagnostics on their own, so a busy continuous-mode tick never delays them.
        self._diagnostics_group = MutuallyExclusiveCallbackGroup()
        self._request_group = ReentrantCallbackGroup()
        self._input_subscriptions: list[tuple[str, Any]] = []
        self._polled_group = PolledCallbackGroup()
        self._drain_lock = threading.Lock()
        self._continuous_timer = None
        # Calls awaiting their request, by request id (see _Waiting and _watch_waiting).
        self._waiting: dict[str, _Waiting] = {}
        self._waiting_lock = threading.Lock()
        self._question_limit = _RateLimit()
        self._questions_dropped = 0

        # Query interfaces exist in every lifecycle state, so a caller always
        # gets an answer: "inactive" is a reason, not silence.
        self.create_service(
            Query,
            "~/query",
            self._on_query_service,
            qos_profile=CALL_QOS,
            callback_group=self._request_group,
        )
        self._action_server = ActionServer(
            self,
            QueryAction,
            "~/query",
            execute_callback=self._on_action_execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=self._request_group,
            goal_service_qos_profile=CALL_QOS,
            result_service_qos_profile=CALL_QOS,
            cancel_service_qos_profile=CALL_QOS,
            feedback_pub_qos_profile=QoSProfile(depth=100),
            # Finished goals' results are kept for late get_result calls; rclpy's
            # default (15 min) would hold every answer of a busy robot in memory.
            result_timeout=60,
        )
        self._watch_timer = self.create_timer(
            WATCH_PERIOD_S, self._watch_waiting, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self._watch_timer.cancel()  # runs only while calls wait
        self.create_subscription(
            String, "~/question", self._on_question, 10, callback_group=self._input_group
        )
        self._answer_pub = self.create_publisher(SpatialAnswer, "~/answer", 10)
        self._graph_pub = self.create_publisher(SceneGraph, "~/scene_graph", 10)
        self._markers_pub = self.create_publisher(MarkerArray, "~/markers", 10)
        self._debug_pub = self.create_publisher(Image, "~/debug_image", 2)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self._param("diagnostics_period")
        if validate_all({"diagnostics_period": period}):
            # A NaN or zero period would kill the node here; configure refuses it with why.
            period = PARAMETERS_BY_NAME["diagnostics_period"].default
        self.create_timer(period, self._publish_diagnostics, callback_group=self._diagnostics_group)

    # ------------------------------------------------------------------ helpers

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _wake_executor(self) -> None:
        """Make the executor resume the coroutines that await requests (any thread)."""
        executor = self.executor
        if executor is not None:
            executor.wake()

    def _parameter_values(self) -> dict[str, Any]:
        return {spec.name: self._param(spec.name) for spec in PARAMETERS}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        configured = self._engine is not None
        proposed = self._parameter_values()
        for param in params:
            spec = PARAMETERS_BY_NAME.get(param.name)
            if spec is None:
                continue
            if spec.read_only and configured:
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} is applied on configure: deactivate and clean up the"
                    " node, set it, then configure again",
                )
            proposed[param.name] = param.value
        # The whole set, so that a pair (min_depth < max_depth) is checked as it would be.
        reason = validate_all(proposed)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        if self._active and any(p.name == "rate_hz" for p in params):
            try:
                self._start_continuous()
            except Exception as error:  # never out of a parameter callback: that kills the node
                self._input_errors["continuous"] = f"continuous mode not started: {error}"
                self.get_logger().error(f"continuous mode not started: {error}")

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        backend_name = self._param("backend")
        model = self._param("model")
        reason = validate_all(self._parameter_values())
        if reason:
            self._backend_state = f"configure failed: {reason}"
            self.get_logger().error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        # A retry after a failed transition must not leave an engine (and a model) behind.
        self._shutdown_engine("node configured again")
        self.get_logger().info(f"loading backend '{backend_name}' with model '{model}'")
        self._backend_state = "loading"
        config = EngineConfig(
            max_queue_size=int(self._param("max_queue_size")),
            max_batch_size=int(self._param("max_batch_size")),
            default_timeout_s=float(self._param("request_timeout")),
            frame_policy=self._param("coordinate_policy"),
            min_pixels=int(self._param("min_pixels")),
            max_pixels=int(self._param("max_pixels")),
            generation=GenerationSettings(max_new_tokens=int(self._param("max_new_tokens"))),
        )
        engine = None
        try:
            backend = create_backend(backend_name, **self._backend_options(backend_name))
            engine = InferenceEngine(backend, config)
            engine.start()
        except Exception as error:  # any load failure is a reason, not a crash
            if engine is not None:
                engine.shutdown("load failed")
            reason = getattr(error, "reason", None) or str(error)
            self._backend_state = f"load failed: {reason}"
            self.get_logger().error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        self._engine = engine
        self._backend_state = "ready"
        self.get_logger().info(f"backend '{backend_name}' ready")
        return super().on_configure(state)

    def _backend_options(self, backend_name: str) -> dict[str, Any]:
        model = self._param("model")
        if backend_name == "openai":
            return {
                "model": model,
                "base_url": self._param("openai.base_url"),
                "api_key_env": self._param("openai.api_key_env"),
                "timeout_s": float(self._param("openai.timeout")),
                "max_retries": int(self._param("openai.max_retries")),
                "max_in_flight": int(self._param("openai.max_in_flight")),
                "image_format": self._param("openai.image_format"),
                "jpeg_quality": int(self._param("openai.jpeg_quality")),
                # A server that is down at start-up is a state for diagnostics,
                # not a reason to refuse to configure: it may come up later.
                "check_on_load": False,
            }
        return {
            "model": model,
            "device": self._param("device"),
            "dtype": self._param("dtype"),
            "attn_implementation": self._param("attn_implementation"),
            "min_pixels": int(self._param("min_pixels")),
            "max_pixels": int(self._param("max_pixels")),
            "progress": lambda line: self.get_logger().info(line),
        }

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._subscribe_inputs()
            self._active = True
            self._start_continuous()
        except Exception as error:
            # Undo what was started, so the node is what the lifecycle says: inactive.
            self._stop_inputs()
            self.get_logger().error(f"cannot activate: {error}")
            self._input_errors["activate"] = f"activation failed: {error}"
            return TransitionCallbackReturn.FAILURE
        self._input_errors.pop("activate", None)
        return super().on_activate(state)

    def _stop_inputs(self) -> None:
        """Stop answering: no continuous timer, no input subscriptions, no old frames."""
        self._active = False
        self._stop_continuous()
        with self._drain_lock:
            for _kind, subscription in self._input_subscriptions:
                self.destroy_subscription(subscription)
        self._input_subscriptions.clear()
        # Frames from before the pause must not answer questions after it.
        self._frames.clear()
        self._camera_info = None

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shutdown_engine("node cleaned up")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._shutdown_engine("node shutting down")
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition raised: the lifecycle goes back to 'unconfigured', so the node must be
        # unconfigured too (no inputs, no engine), not answering under a state that says not.
        self.get_logger().error(f"transition from '{state.label}' failed; back to unconfigured")
        self._stop_inputs()
        self._shutdown_engine("transition failed")
        return super().on_error(state)

    def _shutdown_engine(self, reason: str) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            # Every pending request gets an explicit failure; the backend
            # unloads the model (and frees GPU memory).
            engine.shutdown(reason)
        self._backend_state = "unconfigured"

    def close(self) -> None:
        """Stop the engine; called once at process exit."""
        self._active = False
        self._shutdown_engine("node shutting down")

    def shut_down_gracefully(self, wait_s: float = 5.0) -> None:
        """Walk the lifecycle down (deactivate, cleanup, shutdown) while the executor spins.

        Observers of ``~/transition_event`` see each step, the backend frees the GPU, and
        every waiting call gets its failure before the process exits.
        """
        steps = []
        if self._active:
            steps.append(("deactivate", self.trigger_deactivate))
        if self._engine is not None:
            steps.append(("cleanup", self.trigger_cleanup))
        steps.append(("shutdown", self.trigger_shutdown))
        for name, step in steps:
            try:
                step()
            except Exception as error:  # an impossible transition: go on down
                self.get_logger().warning(f"{name} on exit: {error}")
        deadline = time.monotonic() + wait_s
        while self._waiting and time.monotonic() < deadline:
            time.sleep(0.02)  # the executor sends the waiting calls their failures

    # ------------------------------------------------------------------- inputs

    def _input_qos(self) -> QoSProfile:
        reliability = (
            QoSReliabilityPolicy.RELIABLE
            if self._param("qos_reliability") == "reliable"
            else QoSReliabilityPolicy.BEST_EFFORT
        )
        return QoSProfile(
            history=QoSHistoryPolicy.KEEP_LAST,
            depth=int(self._param("qos_depth")),
            reliability=reliability,
        )

    def _subscribe_inputs(self) -> None:
        qos = self._input_qos()
        compressed = self._param("image_transport") == "compressed"
        image_type, image_topic = (
            (CompressedImage, "image/compressed") if compressed else (Image, "image")
        )
        # Serialized (raw) and polled: see PolledCallbackGroup. The colour and
        # depth frames wait in the subscriptions' KEEP_LAST history.
        inputs = [("image", image_type, image_topic, True)]
        if self._param("use_depth"):
            inputs += [
                ("depth", Image, "depth", True),
                ("camera_info", CameraInfo, "camera_info", False),
            ]
        self._input_subscriptions = [
            (
                kind,
                self.create_subscription(
                    msg_type,
                    topic,
                    _never_called,
                    qos,
                    callback_group=self._polled_group,
                    raw=raw,
                ),
            )
            for kind, msg_type, topic, raw in inputs
        ]

    def _drain_inputs(self) -> None:
        """Take every message waiting in the input subscriptions into the frame buffer.

        Called when a request picks its frames and by the diagnostics timer.
        Only the header stamp of a frame is read here; nothing is converted.
        """
        with self._drain_lock:
            for kind, subscription in self._input_subscriptions:
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
                    self._keep_input(kind, message, received)

    def _keep_input(self, kind: str, message: Any, received: float) -> None:
        if kind == "camera_info":
            self._camera_info = message
            self._camera_info_stats.record(received)
            return
        try:
            stamp = cdr_header_stamp(message)
        except ValueError as error:
            self._input_errors[kind] = f"undecodable {kind} message: {error}"
            return
        if kind == "image":
            self._frames.add_colour(stamp, message, received)
        else:
            self._frames.add_depth(stamp, message, received)

    # ----------------------------------------------------------------- requests

    def _start_request(
        self,
        question: str,
        options: Sequence[str],
        max_frame_age: float,
        timeout: float,
        priority: Priority,
        source: str,
    ) -> PendingRequest:
        """Validate, choose frames, convert the colour frame, and queue the request.

        Raises:
            RequestRejected: With the reason users see.
        """
        engine = self._engine
        if not self._active or engine is None:
            raise RequestRejected(
                f"node is not active (lifecycle state '{self._state_label()}'):"
                " configure and activate it first"
            )
        question = question.strip()
        if not question:
            raise RequestRejected("question is empty")
        limit = int(self._param("max_question_chars"))
        if len(question) > limit:
            raise RequestRejected(
                f"question is {len(question)} characters long (max_question_chars {limit})"
            )
        options = [str(o) for o in options]
        if len(options) > MAX_OPTIONS:
            raise RequestRejected(f"{len(options)} options given; at most {MAX_OPTIONS} (A-Z)")
        for index, option in enumerate(options):
            if not option.strip():
                raise RequestRejected(f"option {chr(65 + index)} is empty")
            if len(option) > 1024:
                raise RequestRejected(f"option {chr(65 + index)} is longer than 1024 characters")
        # 0 (and NaN) mean "the node's default"; a deadline is capped so that a huge or
        # infinite one (a planner's bug) cannot overflow a wait.
        if not max_frame_age > 0:
            max_frame_age = float(self._param("max_frame_age"))
        if not timeout > 0:
            timeout = float(self._param("request_timeout"))
        timeout = min(timeout, MAX_REQUEST_TIMEOUT_S)
        self._drain_inputs()
        try:
            selection = self._frames.select(
                self._now(),
                max_frame_age,
                float(self._param("sync_slop")),
                float(self._param("future_stamp_tolerance")),
                bool(self._param("use_depth")),
            )
        except NoFrameError as error:
            raise RequestRejected(str(error)) from error
        # Requests on the same frame share one decoded copy of it.
        header, rgb = self._frames.decoded(selection.colour, self._convert_colour)
        self._check_model_frame(rgb.shape[1], rgb.shape[0])
        request_id = f"{source}-{next(self._ids)}"
        now = time.monotonic()
        pending = PendingRequest(
            request_id=request_id,
            question=question,
            options=options,
            source=source,
            started=now,
            deadline=now + timeout,
            selection=selection,
            header=header,
            rgb=rgb,
            wake=self._wake_executor,
        )
        handle = engine.submit(rgb, question, options, priority=priority, timeout=timeout)
        pending.handle = handle
        handle.future.add_done_callback(lambda future: self._on_engine_done(pending, future))
        return pending

    def _convert_colour(self, data: bytes) -> tuple[Header, np.ndarray]:
        """Deserialize and convert the one colour frame a request uses."""
        compressed = self._param("image_transport") == "compressed"
        try:
            if compressed:
                msg = deserialize_message(data, CompressedImage)
                limit = int(self._param("max_image_size"))
                rgb = images.decode_compressed_image(msg, max_size=(limit, limit))
            else:
                msg = deserialize_message(data, Image)
                rgb = images.to_rgb(images.image_to_numpy(msg), msg.encoding)
        except Exception as error:
            reason = f"colour frame unusable: {error}"
            self._input_errors["image"] = reason
            raise RequestRejected(reason) from error
        self._input_errors.pop("image", None)
        header = msg.header
        if not header.frame_id and self._param("frame_id"):
            header.frame_id = self._param("frame_id")
        return header, rgb

    def _check_model_frame(self, width: int, height: int) -> None:
        """Warn once when coordinate_policy 'native' states a size the model does not see."""
        if self._frame_warning is not None or self._param("coordinate_policy") != "native":
            return
        try:
            warning = native_frame_warning(
                width, height, int(self._param("min_pixels")), int(self._param("max_pixels"))
            )
        except ValueError:
            return  # an image the processor refuses: the engine fails the request with why
        if warning:
            self._frame_warning = warning
            self.get_logger().warning(warning)

    def _on_engine_done(self, pending: PendingRequest, future: Any) -> None:
        """Runs on the engine's thread when a request ends."""
        try:
            self._finish(pending, future)
        finally:
            # The future's callback list refers back to the request: drop its frames now
            # rather than when the cyclic garbage collector gets round to the cycle.
            pending.release()

    def _finish(self, pending: PendingRequest, future: Any) -> None:
        try:
            result: EngineResult = future.result()
        except RequestFailed as error:
            if error.kind == "backend":
                # Kept for diagnostics until a request succeeds again.
                self._last_backend_error = error.reason
            self._fail(pending, error.reason)
            return
        except Exception as error:  # a cancelled future or an engine bug: still one outcome
            self._fail(pending, f"request failed: {error or type(error).__name__}")
            return
        try:
            answer, distances = self._build_answer(pending, result)
        except Exception as error:
            self.get_logger().error(f"{pending.request_id}: could not build the answer: {error}")
            self._fail(pending, f"could not build the answer: {error}")
            return
        self._last_backend_error = None
        self._contradictions.add(answer.relations_contradicted)
        if not pending.resolve(answer=answer):
            return  # the caller already gave up (deadline); its failure stands
        if pending.source == "continuous":
            self._input_errors.pop("continuous", None)
        if self._active:
            self._publish_outputs(pending, answer, distances)

    def _fail(self, pending: PendingRequest, reason: str) -> None:
        """Record a failure; requests nobody waits on report it where users look."""
        if not pending.resolve(failure=reason):
            return
        if pending.source == "topic":
            self._publish_failure(pending.question, reason)
        elif pending.source == "continuous":
            self._input_errors["continuous"] = f"standing question failed: {reason}"

    def _build_answer(
        self, pending: PendingRequest, result: EngineResult
    ) -> tuple[SpatialAnswer, list[str | None]]:
        lifted = None
        reason = pending.selection.depth_reason
        warnings: list[str] = []
        boxes = [obj.bbox for obj in result.result.objects]
        if pending.selection.depth is not None and boxes:
            labels = [obj.id for obj in result.result.objects]
            lifted, reason = self._lift(pending, boxes, labels, warnings)
            if lifted is None:
                warnings.append(f"no 3D: {reason}")
            else:
                missing = [item for item in lifted if not item.has_3d]
                if missing:
                    warnings.append(
                        f"no 3D for {len(missing)} of {len(lifted)} objects: {missing[0].reason}"
                    )
        elif not pending.selection.depth and boxes and self._param("use_depth"):
            warnings.append(f"no 3D: {reason}")
        relations = verify_relations(result.result, lifted)
        graph = scene_graph_message(pending.header, result, lifted, reason, relations.checks)
        answer = answer_message(
            pending.header,
            pending.request_id,
            pending.question,
            pending.options,
            result,
            graph,
            [*warnings, *relations.warnings],
            relations.contradicted,
        )
        distances = [
            f"{np.linalg.norm([o.center.x, o.center.y, o.center.z]):.2f} m" if o.has_3d else None
            for o in graph.objects
        ]
        return answer, distances

    def _lift(
        self, pending: PendingRequest, boxes: list, labels: list[str], warnings: list[str]
    ) -> tuple[list | None, str]:
        info = self._camera_info
        if info is None:
            return None, "no camera_info received on 'camera_info'"
        height, width = pending.rgb.shape[:2]
        try:
            intrinsics = CameraIntrinsics.from_camera_info(
                info, use_projection=bool(self._param("camera.rectified"))
            )
        except ValueError as error:
            self._input_errors["camera_info"] = f"camera_info unusable: {error}"
            return None, f"camera_info unusable: {error}"
        self._input_errors.pop("camera_info", None)
        if (intrinsics.width, intrinsics.height) != (width, height):
            # A camera_info for another resolution of the same view is rescaled; one
            # of another shape belongs to another camera or crop and is refused.
            mismatch = aspect_mismatch(intrinsics.size, (width, height))
            if mismatch:
                reason = (
                    f"camera_info is {intrinsics.width}x{intrinsics.height} but the colour image"
                    f" is {width}x{height}: {mismatch}"
                )
                self._input_errors["camera_info"] = reason
                return None, reason
            intrinsics = intrinsics.scaled(width, height)
        try:
            depth_msg = deserialize_message(pending.selection.depth.message, Image)
            # depth.scale is the unit of 16-bit depth only; 32FC1 is metres.
            scale = float(self._param("depth.scale")) if depth_msg.encoding != "32FC1" else None
            depth_m = depth_to_metres(images.image_to_numpy(depth_msg), depth_msg.encoding, scale)
        except Exception as error:
            reason = f"depth frame unusable: {error}"
            self._input_errors["depth"] = reason
            return None, reason
        self._input_errors.pop("depth", None)
        units = depth_range_warning(
            depth_m, self._param("depth.min_depth"), self._param("depth.max_depth"), scale
        )
        if units:  # in the answer and in /diagnostics, until a plausible frame comes
            warnings.append(units)
            self._input_errors["depth_units"] = units
        else:
            self._input_errors.pop("depth_units", None)
        params = LiftParams(
            shrink=float(self._param("depth.shrink")),
            min_depth=float(self._param("depth.min_depth")),
            max_depth=float(self._param("depth.max_depth")),
            min_valid_pixels=int(self._param("depth.min_valid_pixels")),
            min_size=float(self._param("depth.min_size")),
        )
        try:
            lifted = lift_boxes(
                boxes, depth_m, intrinsics, image_size=(width, height), params=params, labels=labels
            )
        except ValueError as error:
            return None, str(error)
        return lifted, ""

    def _publish_outputs(
        self, pending: PendingRequest, answer: SpatialAnswer, distances: list[str | None]
    ) -> None:
        self._graph_pub.publish(answer.scene_graph)
        self._answer_pub.publish(answer)
        # Heavy outputs only while someone looks at them.
        if self._markers_pub.get_subscription_count() > 0:
            self._markers_pub.publish(scene_graph_markers(answer.scene_graph))
        if self._debug_pub.get_subscription_count() > 0:
            objects = [
                (o.id, (o.x_min, o.y_min, o.x_max, o.y_max), distance)
                for o, distance in zip(answer.scene_graph.objects, distances, strict=True)
            ]
            annotated = draw_annotations(
                pending.rgb, objects, answer=answer.answer or None, question=pending.question
            )
            self._debug_pub.publish(images.numpy_to_image(annotated, "rgb8", pending.header))

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
        """Watch timer: feedback, client cancels and deadlines of the calls that wait."""
        with self._waiting_lock:
            waiting = list(self._waiting.values())
            if not waiting:
                self._watch_timer.cancel()
                return
        now = time.monotonic()
        for item in waiting:
            pending, goal_handle = item.pending, item.goal_handle
            if pending.done.is_set():
                continue
            handle = pending.handle  # read once: the engine thread may release it
            if goal_handle is not None and goal_handle.is_cancel_requested:
                if handle is not None:
                    handle.cancel()
                pending.resolve(failure="cancelled by the client")
            elif now > pending.deadline + DEADLINE_GRACE_S:
                # The engine fails queued requests at the deadline; a running one that the
                # backend does not give back is failed here.
                if handle is not None:
                    handle.cancel()
                budget = pending.deadline - pending.started
                self._fail(pending, f"deadline passed: no answer within {budget:g} s")
            elif goal_handle is not None:
                self._send_feedback(item)

    def _send_feedback(self, waiting: _Waiting) -> None:
        feedback = self._feedback(waiting.pending)
        if feedback != waiting.last_feedback and not waiting.pending.done.is_set():
            waiting.goal_handle.publish_feedback(
                QueryAction.Feedback(state=feedback[0], queue_position=feedback[1])
            )
            waiting.last_feedback = feedback

    async def _on_query_service(
        self, request: Query.Request, response: Query.Response
    ) -> Query.Response:
        try:
            pending = self._start_request(
                request.question,
                list(request.options),
                request.max_frame_age,
                request.timeout,
                Priority.QUERY,
                "service",
            )
        except RequestRejected as error:
            self.get_logger().warning(f"query rejected: {error}")
            response.success, response.message = False, bounded(str(error))
            return response
        await self._outcome(pending)
        if pending.answer is not None:
            response.success, response.answer = True, pending.answer
        else:
            self.get_logger().warning(f"{pending.request_id} failed: {pending.failure}")
            response.success, response.message = False, bounded(pending.failure)
        return response

    async def _on_action_execute(self, goal_handle: Any) -> QueryAction.Result:
        goal = goal_handle.request
        result = QueryAction.Result()
        try:
            pending = self._start_request(
                goal.question,
                list(goal.options),
                goal.max_frame_age,
                goal.timeout,
                Priority.QUERY,
                "action",
            )
        except RequestRejected as error:
            goal_handle.abort()
            result.success, result.message = False, bounded(str(error))
            return result
        await self._outcome(pending, goal_handle)
        if pending.answer is not None:
            goal_handle.succeed()
            result.success, result.answer = True, pending.answer
        elif goal_handle.is_cancel_requested:
            goal_handle.canceled()
            result.success, result.message = False, bounded(pending.failure)
        else:
            goal_handle.abort()
            result.success, result.message = False, bounded(pending.failure)
        return result

    def _feedback(self, pending: PendingRequest) -> tuple[str, int]:
        engine, handle = self._engine, pending.handle
        if handle is None or engine is None:
            return "queued", 0
        state = handle.state
        if state == "queued":
            return "queued", max(int(engine.queue_position(handle)), 0)
        return "running", 0

    def _on_question(self, msg: String) -> None:
        """~/question: answer on ~/answer; a failure is published there too, as a warning."""
        rate = float(self._param("question_rate_limit"))
        if not self._question_limit.allow(rate, time.monotonic()):
            # A flooding publisher must not starve the callers: drop, count, say so (rarely).
            self._questions_dropped += 1
            self.get_logger().warning(
                f"~/question arrives faster than question_rate_limit {rate:g}/s: dropping"
                f" ({self._questions_dropped} dropped so far)",
                throttle_duration_sec=5.0,
            )
            return
        try:
            self._start_request(msg.data, [], 0.0, 0.0, Priority.QUERY, "topic")
        except RequestRejected as error:
            self._publish_failure(msg.data, str(error))

    def _publish_failure(self, question: str, reason: str) -> None:
        self.get_logger().warning(f"question failed: {reason}")
        answer = SpatialAnswer(question=bounded(question), choice_index=-1)
        answer.warnings = [bounded(f"request failed: {reason}", 1024)]
        answer.header.stamp = self.get_clock().now().to_msg()
        self._answer_pub.publish(answer)

    # ------------------------------------------------------------ continuous mode

    def _start_continuous(self) -> None:
        self._stop_continuous()
        rate = float(self._param("rate_hz"))
        if rate > 0 and self._active:
            self._continuous_timer = self.create_timer(
                1.0 / rate, self._on_continuous_tick, callback_group=self._timer_group
            )

    def _stop_continuous(self) -> None:
        if self._continuous_timer is not None:
            self.destroy_timer(self._continuous_timer)
            self._continuous_timer = None

    def _on_continuous_tick(self) -> None:
        question = str(self._param("continuous_question"))
        if not question.strip():
            self._input_errors["continuous"] = "rate_hz > 0 but continuous_question is empty"
            return
        previous = self._continuous_pending
        if previous is not None and not previous.done.is_set():
            return  # one standing question at a time: never pile up stale frames
        try:
            self._continuous_pending = self._start_request(
                question,
                split_options(str(self._param("continuous_options"))),
                0.0,
                max(1.0 / float(self._param("rate_hz")), float(self._param("request_timeout"))),
                Priority.CONTINUOUS,
                "continuous",
            )
            self._input_errors.pop("continuous", None)
        except RequestRejected as error:
            self._input_errors["continuous"] = str(error)

    # --------------------------------------------------------------- diagnostics

    def _state_label(self) -> str:
        if self._active:
            return "active"
        return "inactive" if self._engine is not None else "unconfigured"

    def _publish_diagnostics(self) -> None:
        if self._active:
            self._drain_inputs()
        now = time.time()
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self._inputs_status(now), self._engine_status()]
        self._diagnostics_pub.publish(array)

    def _inputs_status(self, now: float) -> DiagnosticStatus:
        status = DiagnosticStatus(
            name=f"{self.get_name()}: inputs", hardware_id=self._hardware_id()
        )
        values: list[KeyValue] = []
        stale = []
        topics = [("image", self._frames.colour_stats)]
        if self._param("use_depth"):
            topics += [
                ("depth", self._frames.depth_stats),
                ("camera_info", self._camera_info_stats),
            ]
        for name, stats in topics:
            age = now - stats.last_received if stats.last_received is not None else None
            values.append(KeyValue(key=f"{name} rate (Hz)", value=f"{stats.rate_hz(now):.1f}"))
            values.append(
                KeyValue(key=f"{name} age (s)", value="never" if age is None else f"{age:.2f}")
            )
            values.append(KeyValue(key=f"{name} received", value=str(stats.count)))
            if age is None or age > float(self._param("max_frame_age")):
                stale.append(name)
        values.append(
            KeyValue(key="questions dropped (rate limit)", value=str(self._questions_dropped))
        )
        # A copy: request and engine threads update the errors while we read them.
        errors = dict(self._input_errors)
        for name, error in sorted(errors.items()):
            values.append(KeyValue(key=f"{name} error", value=bounded(error, 512)))
        status.values = values
        if not self._active:
            status.level, status.message = DiagnosticStatus.OK, "inactive: inputs not subscribed"
        elif errors:
            status.level = DiagnosticStatus.WARN
            status.message = bounded("; ".join(sorted(errors.values())), 512)
        elif stale:
            status.level, status.message = DiagnosticStatus.WARN, f"no recent {', '.join(stale)}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "receiving"
        return status

    def _engine_status(self) -> DiagnosticStatus:
        status = DiagnosticStatus(
            name=f"{self.get_name()}: engine", hardware_id=self._hardware_id()
        )
        engine = self._engine
        values = [
            KeyValue(key="lifecycle state", value=self._state_label()),
            KeyValue(key="backend", value=str(self._param("backend"))),
            KeyValue(key="model", value=bounded(str(self._param("model")), 512)),
        ]
        backend_state = self._backend_state
        if engine is not None:
            stats = engine.stats()
            backend_state = str(stats.get("backend_state", backend_state))
            for key, value in stats.items():
                if key == "backend_state":
                    continue
                text = f"{value:.3f}" if isinstance(value, float) else str(value)
                values.append(KeyValue(key=str(key), value=bounded(text, 512)))
        values.append(KeyValue(key="backend state", value=bounded(backend_state, 512)))
        frame_warning = self._frame_warning
        if frame_warning:
            values.append(KeyValue(key="model frame", value=bounded(frame_warning, 512)))
        # The model's claims the depth refuted: a quality signal, not a fault of the node.
        values.append(
            KeyValue(
                key="relations contradicted (last min)",
                value=str(self._contradictions.in_window()),
            )
        )
        values.append(KeyValue(key="relations contradicted", value=str(self._contradictions.total)))
        last_error = self._last_backend_error
        if last_error:
            values.append(KeyValue(key="last backend error", value=bounded(last_error, 512)))
        status.values = values
        healthy = backend_state in ("ready", "loaded", "ok", "idle", "busy", "running")
        if engine is None:
            level = DiagnosticStatus.WARN if "failed" in backend_state else DiagnosticStatus.OK
            status.level, status.message = level, bounded(f"backend {backend_state}", 512)
        elif last_error:
            # The backend loaded but its latest request failed (server down, 5xx, timeout).
            status.level = DiagnosticStatus.ERROR
            status.message = bounded(f"backend failing: {last_error}", 512)
        elif healthy:
            status.level, status.message = DiagnosticStatus.OK, f"backend {backend_state}"
        else:
            status.level, status.message = (
                DiagnosticStatus.ERROR,
                bounded(f"backend {backend_state}", 512),
            )
        if frame_warning and status.level == DiagnosticStatus.OK:
            status.level = DiagnosticStatus.WARN
            status.message = f"{status.message}; 'native' states a size the model does not see"
        return status

    def _hardware_id(self) -> str:
        return bounded(f"{self._param('backend')}:{self._param('model')}", 256)


def main(args: list[str] | None = None) -> None:
    """Run spatialthinker_node until SIGINT or SIGTERM, then walk the lifecycle down.

    rclpy's own signal handlers would shut the context down at once, before the node could
    deactivate, clean up (free the GPU) and shut down with ``transition_event`` observers
    seeing each step. So the executor spins in a thread, and a signal only tells the main
    thread to run those transitions while the executor still serves; a second Ctrl-C quits
    at once.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = SpatialThinkerNode()
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    errors: list[BaseException] = []
    spinner = threading.Thread(target=_spin, args=(executor, stop, errors), name="executor")
    spinner.start()
    try:
        if node.get_parameter("autostart").value:
            node.trigger_configure()
            if node._engine is not None:
                node.trigger_activate()
        while not stop.wait(1.0):  # a timed wait: signal handlers run in this thread
            pass
        node.shut_down_gracefully()
    finally:
        node.close()
        executor.shutdown()
        spinner.join(10.0)
        node.destroy_node()
        rclpy.try_shutdown()
    if errors:
        raise errors[0]  # a callback's exception ends the process with a failure status


def _spin(
    executor: MultiThreadedExecutor, stop: threading.Event, errors: list[BaseException]
) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    except BaseException as error:
        errors.append(error)
    finally:
        stop.set()  # the context went away (or the executor failed): exit too


if __name__ == "__main__":
    main()
