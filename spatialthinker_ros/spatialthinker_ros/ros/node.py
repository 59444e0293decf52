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
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from spatialthinker_msgs.msg import SceneGraph, SpatialAnswer
from spatialthinker_ros.answering.parameters import (
    MAX_TIMEOUT_S,
    PARAMETERS,
    PARAMETERS_BY_NAME,
    describe,
    split_options,
    validate_all,
)
from spatialthinker_ros.answering.pipeline import (
    SCENE_PARAMETERS,
    AnswerHandle,
    AnsweringPipeline,
    Frames,
    Progress,
    RequestRejected,
    check_question,
    intrinsics_for_colour,
)
from spatialthinker_ros.core import images
from spatialthinker_ros.core.annotate import draw_annotations
from spatialthinker_ros.core.camera import CameraIntrinsics
from spatialthinker_ros.core.engine import Priority, RequestFailed
from spatialthinker_ros.core.frame_buffer import FrameSelection, NoFrameError
from spatialthinker_ros.core.model_frame import native_frame_warning
from spatialthinker_ros.core.relation_check import ContradictionCounter
from spatialthinker_ros.ros.markers import scene_graph_markers
from spatialthinker_ros.ros.node_calls import PendingRequest, QueryInterfaces, RateLimit
from spatialthinker_ros.ros.node_diagnostics import EngineSnapshot, engine_status, inputs_status
from spatialthinker_ros.ros.node_inputs import CameraInputs
from spatialthinker_ros.ros.ros_conversions import answer_message, bounded, scene_graph_message

NODE_NAME = "spatialthinker"
# Executor threads: waiting calls hold none (they are coroutines), so a few serve inputs,
# timers, diagnostics, lifecycle and parameter services and the starting of requests.
EXECUTOR_THREADS = 6
# Options the backend gets beside the parameters. A server that is down at start-up is a state
# for diagnostics, not a reason to refuse to configure: it may come up later.
BACKEND_EXTRAS: dict[str, dict[str, Any]] = {"openai": {"check_on_load": False}}


class SpatialThinkerNode(LifecycleNode):
    """Answers spatial questions about the camera image with SpatialThinker."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            description = ParameterDescriptor(description=describe(spec.name))
            self.declare_parameter(spec.name, spec.default, description)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._input_errors: dict[str, str] = {}
        self._inputs = CameraInputs(self, self._input_errors)
        self._ids = itertools.count(1)
        self._pipeline: AnsweringPipeline | None = None
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
        self._continuous_timer = None
        self._question_limit = RateLimit()
        self._questions_dropped = 0
        # Query interfaces exist in every lifecycle state, so a caller always
        # gets an answer: "inactive" is a reason, not silence.
        self._calls = QueryInterfaces(
            self, self._request_group, self._start_request, self._wake_executor
        )
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
                self._start_continuous()
        except Exception as error:
            self._input_errors["parameters"] = f"{', '.join(sorted(names))} not applied: {error}"
            self.get_logger().error(self._input_errors["parameters"])

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._parameter_values()
        reason = validate_all(values)
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
        self._inputs.stop()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shutdown_pipeline("node cleaned up")
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

    def shut_down_gracefully(self, wait_s: float = 5.0) -> None:
        """Walk the lifecycle down (deactivate, cleanup, shutdown) while the executor spins.

        Observers of ``~/transition_event`` see each step, the backend frees the GPU, and
        every waiting call gets its failure before the process exits.
        """
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
        names = ("qos_reliability", "qos_depth", "image_transport", "depth_transport", "use_depth")
        self._inputs.subscribe(*(self._param(name) for name in names))  # typed by declaration

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
        """Validate, choose and convert the frames, and queue the request.

        Raises:
            RequestRejected: With the reason users see.
        """
        pipeline = self._pipeline
        if not self._active or pipeline is None:
            raise RequestRejected(
                f"node is not active (lifecycle state '{self._state_label()}'):"
                " configure and activate it first"
            )
        question, options = check_question(
            question, options, int(self._param("max_question_chars"))
        )
        # 0 (and NaN) mean "the node's default"; a deadline is capped so that a huge or
        # infinite one (a planner's bug) cannot overflow a wait.
        if not max_frame_age > 0:
            max_frame_age = float(self._param("max_frame_age"))
        if not timeout > 0:
            timeout = float(self._param("request_timeout"))
        timeout = min(timeout, MAX_TIMEOUT_S)
        self._inputs.drain()
        try:
            selection = self._inputs.frames.select(
                self.get_clock().now().nanoseconds * 1e-9,
                max_frame_age,
                float(self._param("sync_slop")),
                float(self._param("future_stamp_tolerance")),
                bool(self._param("use_depth")),
            )
        except NoFrameError as error:
            raise RequestRejected(str(error)) from error
        header, rgb = self._inputs.frames.decoded(selection.colour, self._convert_colour)
        self._check_model_frame(rgb.shape[1], rgb.shape[0])
        frames = self._frames_for(selection, rgb)
        pending = PendingRequest(
            request_id=f"{source}-{next(self._ids)}",
            question=question,
            source=source,
            header=header,
            rgb=rgb,
            wake=self._wake_executor,
        )
        pending.handle = pipeline.submit(
            frames,
            question,
            options,
            pending.request_id,
            priority=priority,
            timeout=timeout,
            on_done=lambda handle: self._on_answer(pending, handle),
            on_progress=lambda progress: self._on_progress(pending, progress),
        )
        return pending

    def _convert_colour(self, data: bytes) -> tuple[Header, np.ndarray]:
        """Deserialize and convert the one colour frame a request uses."""
        try:
            msg = deserialize_message(data, self._inputs.image_type)
            if isinstance(msg, Image):
                rgb = images.image_to_rgb(msg)
            else:
                limit = int(self._param("max_image_size"))
                rgb = images.decode_compressed_image(msg, max_size=(limit, limit))
        except Exception as error:
            reason = f"colour frame unusable: {error}"
            self._input_errors["image"] = reason
            raise RequestRejected(reason) from error
        self._input_errors.pop("image", None)
        header = msg.header
        if not header.frame_id and self._param("frame_id"):
            header.frame_id = self._param("frame_id")
        return header, rgb

    def _convert_depth(self, data: bytes) -> tuple[float | None, np.ndarray]:
        """Deserialize and convert a depth frame to metres (its applied scale, the depth)."""
        msg = deserialize_message(data, self._inputs.depth_type)
        limit = int(self._param("max_image_size"))
        depth_m, scale = images.depth_message_to_metres(
            msg, float(self._param("depth.scale")), (limit, limit)
        )
        return scale, depth_m

    def _frames_for(self, selection: FrameSelection, rgb: np.ndarray) -> Frames:
        """The request's frames: depth in metres and intrinsics for this colour size, or why
        there is no 3D (input problems are also kept for /diagnostics)."""
        if selection.depth is None:
            return Frames(
                rgb,
                no_depth_reason=selection.depth_reason,
                depth_wanted=bool(self._param("use_depth")),
            )
        info = self._inputs.camera_info
        if info is None:
            return Frames(rgb, no_depth_reason="no camera_info received on 'camera_info'")
        try:
            intrinsics = CameraIntrinsics.from_camera_info(
                info, use_projection=bool(self._param("camera.rectified"))
            )
        except ValueError as error:
            self._input_errors["camera_info"] = f"camera_info unusable: {error}"
            return Frames(rgb, no_depth_reason=f"camera_info unusable: {error}")
        intrinsics, reason = intrinsics_for_colour(intrinsics, rgb.shape[1], rgb.shape[0])
        if intrinsics is None:
            self._input_errors["camera_info"] = reason
            return Frames(rgb, no_depth_reason=reason)
        self._input_errors.pop("camera_info", None)
        try:
            scale, depth_m = self._inputs.frames.decoded(selection.depth, self._convert_depth)
        except Exception as error:
            reason = f"depth frame unusable: {error}"
            self._input_errors["depth"] = reason
            return Frames(rgb, no_depth_reason=reason)
        self._input_errors.pop("depth", None)
        return Frames(rgb, depth_m, intrinsics, scale)

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

    def _on_answer(self, pending: PendingRequest, handle: AnswerHandle) -> None:
        """Runs on the engine's thread when a request ends: one outcome, published."""
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
            except Exception as error:
                self.get_logger().error(f"{pending.request_id}: no answer built: {error}")
                self._fail(pending, f"could not build the answer: {error}")
                return
            self._last_backend_error = None
            self._contradictions.add(message.relations_contradicted)
            if answer.depth_warning:  # in /diagnostics too, until a plausible frame comes
                self._input_errors["depth_units"] = answer.depth_warning
            else:
                self._input_errors.pop("depth_units", None)
            if not pending.resolve(answer=message):
                return  # the caller already gave up; its failure stands
            if pending.source == "continuous":
                self._input_errors.pop("continuous", None)
            if self._active:
                self._publish_outputs(pending, message)
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

    def _publish_outputs(self, pending: PendingRequest, answer: SpatialAnswer) -> None:
        self._graph_pub.publish(answer.scene_graph)
        self._answer_pub.publish(answer)
        # Heavy outputs only while someone looks at them.
        if self._markers_pub.get_subscription_count() > 0:
            self._markers_pub.publish(scene_graph_markers(answer.scene_graph))
        if self._debug_pub.get_subscription_count() > 0 and pending.rgb is not None:
            objects = []
            for o in answer.scene_graph.objects:
                distance = float(np.linalg.norm([o.center.x, o.center.y, o.center.z]))
                label = f"{distance:.2f} m" if o.has_3d else None
                objects.append((o.id, (o.x_min, o.y_min, o.x_max, o.y_max), label))
            annotated = draw_annotations(
                pending.rgb, objects, answer=answer.answer or None, question=pending.question
            )
            self._debug_pub.publish(images.numpy_to_image(annotated, "rgb8", pending.header))

    def _on_progress(self, pending: PendingRequest, progress: Progress) -> None:
        """The engine's text thread: the scene graph goes out at </scene>, before the answer."""
        graph = scene_graph_message(pending.header, progress.scene) if progress.scene_new else None
        if graph is not None and self._active:
            self._graph_pub.publish(graph)
        self._calls.progress(pending, progress, graph)

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
        return "inactive" if self._pipeline is not None else "unconfigured"

    def _publish_diagnostics(self) -> None:
        if self._active:
            self._inputs.drain()
        use_depth = bool(self._param("use_depth"))
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
        array.status = [
            inputs_status(
                f"{self.get_name()}: inputs",
                hardware_id,
                self._active,
                time.time(),
                self._inputs.topic_stats(use_depth),
                float(self._param("max_frame_age")),
                self._questions_dropped,
                dict(self._input_errors),  # a copy: other threads update the errors
            ),
            engine_status(f"{self.get_name()}: engine", hardware_id, snapshot),
        ]
        self._diagnostics_pub.publish(array)


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
            if node._pipeline is not None:
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
