"""spatialthinker_node: the ROS 2 lifecycle node around the answering pipeline.

Thin glue: parameters, subscriptions, the query interfaces, publishing. What a request does
(model frame, prompt, engine, parsing, 3D, relation checks) is the ROS-free answering pipeline
(:mod:`spatialthinker_ros.answering.pipeline`) that the offline tools share. The camera inputs are
polled (:mod:`spatialthinker_ros.ros.node_inputs`), the service and action calls wait as coroutines
(:mod:`spatialthinker_ros.ros.node_calls`), /diagnostics are built in
:mod:`spatialthinker_ros.ros.node_diagnostics`. A request picks its frames, converts just those
and hands them to the pipeline, whose engine thread runs the model and owns every deadline;
the node publishes the answer there and releases whoever waits (a service call, an action
goal, the ~/question topic or the continuous-mode timer).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import String

from spatialthinker_ros.answering.parameters import (
    PARAMETERS,
    PARAMETERS_BY_NAME,
    describe,
    validate_all,
)
from spatialthinker_ros.answering.pipeline import (
    SCENE_PARAMETERS,
    AnswerHandle,
    AnsweringPipeline,
    Progress,
    RequestRejected,
)
from spatialthinker_ros.core.engine import Priority, RequestFailed
from spatialthinker_ros.core.relation_check import ContradictionCounter
from spatialthinker_ros.ros.node_calls import (
    PendingRequest,
    QueryInterfaces,
    RateLimit,
    unsendable,
)
from spatialthinker_ros.ros.node_cameras import Cameras
from spatialthinker_ros.ros.node_continuous import ContinuousMode
from spatialthinker_ros.ros.node_diagnostics import EngineSnapshot, engine_status
from spatialthinker_ros.ros.node_outputs import NodeOutputs
from spatialthinker_ros.ros.node_query_all import QueryAllInterfaces
from spatialthinker_ros.ros.node_requests import RequestStarting
from spatialthinker_ros.ros.node_runner import run
from spatialthinker_ros.ros.ros_conversions import (
    answer_message,
    bounded,
    scene_graph_message,
    tag_camera,
)
from spatialthinker_ros.ros.tf_listener import TfListener

NODE_NAME = "spatialthinker"
# Executor threads: waiting calls hold none (they are coroutines), so a few serve inputs,
# timers, diagnostics, lifecycle and parameter services and the starting of requests.
EXECUTOR_THREADS = 6
# Options the backend gets beside the parameters. A server that is down at start-up is a state
# for diagnostics, not a reason to refuse to configure: it may come up later.
BACKEND_EXTRAS: dict[str, dict[str, Any]] = {"openai": {"check_on_load": False}}


class SpatialThinkerNode(RequestStarting, LifecycleNode):
    """Answers spatial questions about the camera image with SpatialThinker."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            description = ParameterDescriptor(description=describe(spec.name))
            if isinstance(spec.default, list):
                # An empty list has no type for rclpy: typed by what the params file gives,
                # checked by validate_all. Fixed for the node's life (its topics depend on it).
                description.dynamic_typing = True
                description.read_only = True
            self.declare_parameter(spec.name, spec.default, description)
        self._input_errors: dict[str, str] = {}
        # Declares the cameras' own parameters: before the callbacks, which need the node whole.
        self._cameras = Cameras(self, self._input_errors)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._tf = TfListener(self, self._now)
        self._ids = itertools.count(1)
        self._pipeline: AnsweringPipeline | None = None
        self._backend_state = "unconfigured"
        self._last_backend_error: str | None = None
        # Relations the depth contradicted, per minute, for diagnostics.
        self._contradictions = ContradictionCounter(60.0)
        self._active = False
        # Set once: 'native' states a size the model does not see (logged, in diagnostics).
        self._frame_warning: str | None = None
        # Set by a signal's walk down the lifecycle: its cleanup fails the waiting calls with
        # "node shutting down" (what callers are told), not "node cleaned up".
        self._exiting = False

        self._input_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        # Diagnostics on their own, so a busy continuous-mode tick never delays them.
        self._diagnostics_group = MutuallyExclusiveCallbackGroup()
        self._request_group = ReentrantCallbackGroup()
        self._continuous = ContinuousMode(
            self, self._timer_group, self._start_request, self._input_errors, self._cameras.names
        )
        self._question_limit = RateLimit()
        self._questions_dropped = 0
        # Query interfaces exist in every lifecycle state, so a caller always
        # gets an answer: "inactive" is a reason, not silence.
        self._calls = QueryInterfaces(
            self, self._request_group, self._start_request, self._wake_executor
        )
        self._query_all = QueryAllInterfaces(
            self, self._request_group, self._start_all, self._wake_executor, self._calls
        )
        self.create_subscription(
            String, "~/question", self._on_question, 10, callback_group=self._input_group
        )
        self._outputs = NodeOutputs(self, lambda name: bool(self._param(name)), self._cameras.names)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = self._param("diagnostics_period")
        if validate_all({"diagnostics_period": period}):
            # A NaN or zero period would kill the node here; configure refuses it with why.
            period = PARAMETERS_BY_NAME["diagnostics_period"].default
        self.create_timer(period, self._publish_diagnostics, callback_group=self._diagnostics_group)

    # ------------------------------------------------------------------ helpers

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _wake_executor(self) -> None:
        """Make the executor resume the coroutines that await requests (any thread)."""
        executor = self.executor
        if executor is not None:
            executor.wake()

    def _parameter_values(self) -> dict[str, Any]:
        return {spec.name: self._param(spec.name) for spec in PARAMETERS}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        configured = self._pipeline is not None
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
        return SetParametersResult(successful=not reason, reason=reason or "")

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        names = {p.name for p in params}
        try:  # never out of a parameter callback: that kills the node
            if self._pipeline is not None and names.intersection(SCENE_PARAMETERS):
                self._pipeline.update_scene(self._parameter_values())  # the next answers'
            if self._active and "rate_hz" in names:
                self._continuous.start()
        except Exception as error:
            self._input_errors["parameters"] = f"{', '.join(sorted(names))} not applied: {error}"
            self.get_logger().error(self._input_errors["parameters"])

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._parameter_values()
        reason = validate_all(values) or self._cameras.problem()
        if reason:
            self._backend_state = f"configure failed: {reason}"
            self.get_logger().error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        # A retry after a failed transition must not leave an engine (and a model) behind.
        self._shutdown_pipeline("node configured again")
        backend = str(values["backend"])
        self.get_logger().info(f"loading backend '{backend}' with model '{values['model']}'")
        self._backend_state = "loading"
        extras = dict(BACKEND_EXTRAS.get(backend, {}))
        if backend == "transformers":
            extras["progress"] = lambda line: self.get_logger().info(line)
        try:
            pipeline = AnsweringPipeline(values, extras)
            pipeline.start()
        except Exception as error:  # any load failure is a reason, not a crash
            reason = getattr(error, "reason", None) or str(error)
            self._backend_state = f"load failed: {reason}"
            self.get_logger().error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        self._pipeline = pipeline
        self._backend_state = "ready"
        self.get_logger().info(f"backend '{backend}' ready")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._subscribe_inputs()
            self._tf.subscribe()
            self._active = True
            self._continuous.start()
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
        self._continuous.stop()
        self._cameras.stop()
        self._tf.unsubscribe()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shutdown_pipeline("node shutting down" if self._exiting else "node cleaned up")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._shutdown_pipeline("node shutting down")
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition raised: the lifecycle goes back to 'unconfigured', so the node must be
        # unconfigured too (no inputs, no engine), not answering under a state that says not.
        self.get_logger().error(f"transition from '{state.label}' failed; back to unconfigured")
        self._stop_inputs()
        self._shutdown_pipeline("transition failed")
        return super().on_error(state)

    def _shutdown_pipeline(self, reason: str) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            # Every pending request gets an explicit failure; the backend
            # unloads the model (and frees GPU memory).
            pipeline.shutdown(reason)
        self._backend_state = "unconfigured"

    def close(self) -> None:
        """Stop the engine; called once at process exit."""
        self._active = False
        self._shutdown_pipeline("node shutting down")

    def autostart(self) -> None:
        """Configure and activate when the ``autostart`` parameter says so (at start-up)."""
        if self._param("autostart"):
            self.trigger_configure()
            if self._pipeline is not None:
                self.trigger_activate()

    def shut_down_gracefully(self, wait_s: float = 5.0) -> None:
        """Walk the lifecycle down (deactivate, cleanup, shutdown) while the executor spins.

        Observers of ``~/transition_event`` see each step, the backend frees the GPU, and
        every waiting call gets its failure before the process exits.
        """
        self._exiting = True
        steps = []
        if self._active:
            steps.append(("deactivate", self.trigger_deactivate))
        if self._pipeline is not None:
            steps.append(("cleanup", self.trigger_cleanup))
        steps.append(("shutdown", self.trigger_shutdown))
        for name, step in steps:
            try:
                step()
            except Exception as error:  # an impossible transition: go on down
                self.get_logger().warning(f"{name} on exit: {error}")
        deadline = time.monotonic() + wait_s
        while self._calls.waiting and time.monotonic() < deadline:
            time.sleep(0.02)  # the executor sends the waiting calls their failures

    # ------------------------------------------------------------------- inputs

    def _subscribe_inputs(self) -> None:
        self._cameras.subscribe(self._parameter_values())

    # ----------------------------------------------------------------- requests

    def _on_answer(
        self,
        pending: PendingRequest,
        handle: AnswerHandle,
        depth_time: tuple[int, int] | None = None,
    ) -> None:
        """Runs on the engine's thread when a request ends: one outcome, published.

        ``depth_time`` is the stamp of the depth frame paired with the colour frame, reported as
        the answer's ``depth_stamp`` (zero without depth).
        """
        try:
            try:
                answer = handle.future.result()
            except RequestFailed as error:
                if error.kind == "backend":
                    # Kept for diagnostics until a request succeeds again.
                    self._last_backend_error = error.reason
                self._fail(pending, error.reason)
                return
            try:
                message = answer_message(pending.header, answer)
                tag_camera(message, pending.camera)
                if depth_time is not None:
                    message.depth_stamp.sec, message.depth_stamp.nanosec = depth_time
            except Exception as error:
                self.get_logger().error(f"{pending.request_id}: no answer built: {error}")
                self._fail(pending, f"could not build the answer: {error}")
                return
            why = unsendable(message)
            if why is not None:  # publishing it would raise, in the executor for a caller
                self._calls.note_unsent(f"{pending.request_id}: the answer", why)
                self._fail(pending, f"the answer could not be sent: {why}")
                return
            self._last_backend_error = None
            self._contradictions.add(message.relations_contradicted)
            errors = self._cameras.errors.get(pending.camera, self._input_errors)
            if answer.depth_warning:  # in /diagnostics too, until a plausible frame comes
                errors["depth_units"] = answer.depth_warning
            else:
                errors.pop("depth_units", None)
            if not pending.resolve(answer=message):
                return  # the caller already gave up; its failure stands
            if pending.source == "continuous":
                self._input_errors.pop("continuous", None)
            if self._active:
                self._outputs.answer(
                    message,
                    pending.rgb,
                    pending.question,
                    pending.header,
                    answer.engine.object_scores,
                    pending.camera,
                )
        finally:
            pending.release()

    def _fail(self, pending: PendingRequest, reason: str) -> None:
        """Record a failure; requests nobody waits on report it where users look."""
        if not pending.resolve(failure=reason):
            return
        if pending.source == "topic":
            self._publish_failure(pending.question, reason)
        elif pending.source == "continuous":
            self._input_errors["continuous"] = f"standing question failed: {reason}"

    def _on_progress(self, pending: PendingRequest, progress: Progress) -> None:
        """The engine's text thread: the scene graph goes out at </scene>, before the answer."""
        graph = scene_graph_message(pending.header, progress.scene) if progress.scene_new else None
        if graph is not None:
            tag_camera(graph, pending.camera)
        if graph is not None and self._active:
            self._outputs.scene_graph(graph, pending.header)
        self._calls.progress(pending, progress, graph)

    async def _on_question(self, msg: String) -> None:
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
            await self._start_request(msg.data, [], 0.0, 0.0, Priority.QUERY, "topic")
        except RequestRejected as error:
            self._publish_failure(msg.data, str(error))

    def _publish_failure(self, question: str, reason: str) -> None:
        self._outputs.failure(question, reason, self.get_clock().now().to_msg())

    # --------------------------------------------------------------- diagnostics

    def _state_label(self) -> str:
        if self._active:
            return "active"
        return "inactive" if self._pipeline is not None else "unconfigured"

    def _publish_diagnostics(self) -> None:
        if self._active:
            self._cameras.drain()
        hardware_id = bounded(f"{self._param('backend')}:{self._param('model')}", 256)
        pipeline = self._pipeline
        snapshot = EngineSnapshot(
            lifecycle_state=self._state_label(),
            backend=str(self._param("backend")),
            model=str(self._param("model")),
            backend_state=self._backend_state,
            stats=pipeline.stats() if pipeline is not None else None,
            frame_warning=self._frame_warning or "",
            contradicted_last_min=self._contradictions.in_window(),
            contradicted_total=self._contradictions.total,
            last_backend_error=self._last_backend_error,
        )
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        statuses = self._cameras.statuses(
            self.get_name(),
            hardware_id,
            self._active,
            time.time(),
            bool(self._param("use_depth")),
            float(self._param("max_frame_age")),
            self._questions_dropped,
            dict(self._input_errors),
            self._tf.diagnostics(),
        )
        engine = engine_status(f"{self.get_name()}: engine", hardware_id, snapshot)
        array.status = [*statuses, engine]
        self._diagnostics_pub.publish(array)


def main(args: list[str] | None = None) -> None:
    """Run spatialthinker_node until SIGINT or SIGTERM, then walk the lifecycle down
    (:func:`spatialthinker_ros.ros.node_runner.run`)."""
    run(SpatialThinkerNode, EXECUTOR_THREADS, args)


if __name__ == "__main__":
    main()
