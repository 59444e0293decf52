"""How the node starts a request: the camera's frames taken and converted, their transforms looked
up, and the request queued on the answering pipeline (one camera, or every camera together for
``~/query_all``).

A mixin of :class:`~spatialthinker_ros.ros.node.SpatialThinkerNode`, kept apart so that the
node module stays the lifecycle and the publishing. It uses the node's parameters
(``_param``, ``_parameter_values``), cameras (``_cameras``), TF (``_tf``), pipeline
(``_pipeline``, ``_active``), request ids (``_ids``), ``_wake_executor``, and the callbacks
``_on_answer`` and ``_on_progress``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spatialthinker_ros.answering.parameters import MAX_TIMEOUT_S
from spatialthinker_ros.answering.pipeline import (
    AnsweringPipeline,
    Frames,
    RequestRejected,
    check_question,
)
from spatialthinker_ros.core.engine import Priority
from spatialthinker_ros.core.model_frame import native_frame_warning
from spatialthinker_ros.ros.node_calls import PendingRequest
from spatialthinker_ros.ros.node_inputs import CameraInputs, FrameSettings, TakenFrames
from spatialthinker_ros.ros.node_query_all import CameraOutcome

__all__ = ["RequestStarting"]


@dataclass(frozen=True)
class _Prepared:
    """A request's frames, ready to queue: its camera, what was taken, and the frames with
    their transforms applied."""

    camera: str
    taken: TakenFrames
    frames: Frames


class RequestStarting:
    """The node's request starting (see the module doc for what it uses of the node)."""

    _param: Any
    _parameter_values: Any
    _cameras: Any
    _tf: Any
    _pipeline: AnsweringPipeline | None
    _active: bool
    _ids: Any
    _frame_warning: str | None
    _wake_executor: Any
    _on_answer: Any
    _on_progress: Any
    _state_label: Any
    get_clock: Any

    async def _start_request(
        self,
        question: str,
        options: Sequence[str],
        max_frame_age: float,
        timeout: float,
        priority: Priority,
        source: str,
        target_frame: str = "",
        camera: str = "",
    ) -> PendingRequest:
        """Validate, pair and convert the frames of ``camera`` ("" = the only or first), look up
        their transforms, and queue the request.

        A coroutine: when the newest colour frame's depth is due (see
        :meth:`~spatialthinker_ros.core.frame_buffer.FrameBuffer.plan_wait`), it awaits that
        depth up to ``sync_wait``, and TF at the colour frame's stamp up to ``tf_timeout``
        (:meth:`~spatialthinker_ros.ros.tf_listener.TfListener.transforms`), without holding an
        executor thread. ``target_frame`` ("" = the parameter) is where the 3D is reported.

        Raises:
            RequestRejected: With the reason users see.
        """
        self._active_pipeline()
        inputs = self._cameras.get(camera)
        question, options = check_question(
            question, options, int(self._param("max_question_chars"))
        )
        max_frame_age, timeout = self._request_limits(max_frame_age, timeout)
        prepared = await self._prepare(inputs, max_frame_age, target_frame)
        return self._submit(prepared, question, options, timeout, priority, source)

    async def _start_all(
        self,
        question: str,
        options: Sequence[str],
        cameras: Sequence[str],
        max_frame_age: float,
        timeout: float,
        target_frame: str,
        source: str,
    ) -> list[CameraOutcome]:
        """The same question to every camera (or those named), queued together so that the
        engine answers them in one backend call; a camera without a usable frame gets its
        reason, the others are asked.

        Raises:
            RequestRejected: The node is not active, the question is refused, or a camera name
                is unknown (the whole request: nothing was asked).
        """
        self._active_pipeline()
        chosen = self._cameras.chosen(cameras)
        question, options = check_question(
            question, options, int(self._param("max_question_chars"))
        )
        max_frame_age, timeout = self._request_limits(max_frame_age, timeout)
        prepared: list[tuple[str, _Prepared | str]] = []
        for inputs in chosen:
            try:
                prepared.append(
                    (inputs.name, await self._prepare(inputs, max_frame_age, target_frame))
                )
            except RequestRejected as error:
                prepared.append((inputs.name, str(error)))
        pipeline = self._active_pipeline()
        outcomes = []
        with pipeline.together():
            for name, item in prepared:
                if isinstance(item, str):
                    outcomes.append(CameraOutcome(name, failure=item))
                else:
                    pending = self._submit(item, question, options, timeout, Priority.QUERY, source)
                    outcomes.append(CameraOutcome(name, pending=pending))
        return outcomes

    def _request_limits(self, max_frame_age: float, timeout: float) -> tuple[float, float]:
        """A request's frame age and deadline: 0 (and NaN) mean "the node's default"; a
        deadline is capped so that a huge or infinite one (a planner's bug) cannot overflow a
        wait."""
        if not max_frame_age > 0:
            max_frame_age = float(self._param("max_frame_age"))
        if not timeout > 0:
            timeout = float(self._param("request_timeout"))
        return max_frame_age, min(timeout, MAX_TIMEOUT_S)

    async def _prepare(
        self, inputs: CameraInputs, max_frame_age: float, target_frame: str
    ) -> _Prepared:
        """A camera's frames for one request, with their transforms (awaits, holds no thread)."""
        settings = self._frame_settings(max_frame_age, inputs.name)
        try:
            taken = await inputs.take(self._now(), settings)
        except RequestRejected:
            self._active_pipeline()  # deactivated while it waited: say that instead
            raise
        placed = await self._tf.transforms(
            taken.header.frame_id,
            taken.header.stamp.sec + taken.header.stamp.nanosec * 1e-9,
            target_frame or str(self._param("target_frame")),
            str(self._param("gravity_frame")) if self._param("relations.up") == "tf" else "",
            float(self._param("tf_timeout")),
        )
        return _Prepared(inputs.name, taken, placed.applied_to(taken.frames))

    def _submit(
        self,
        prepared: _Prepared,
        question: str,
        options: Sequence[str],
        timeout: float,
        priority: Priority,
        source: str,
    ) -> PendingRequest:
        """Queue a prepared request (no waiting)."""
        pipeline = self._active_pipeline()
        taken = prepared.taken
        rgb = taken.frames.rgb
        self._check_model_frame(rgb.shape[1], rgb.shape[0])
        pending = PendingRequest(
            request_id=f"{source}-{next(self._ids)}",
            question=question,
            source=source,
            header=taken.header,
            rgb=rgb,
            wake=self._wake_executor,
            camera=prepared.camera,
        )
        pending.handle = pipeline.submit(
            prepared.frames,
            question,
            options,
            pending.request_id,
            priority=priority,
            timeout=timeout,
            on_done=lambda handle: self._on_answer(pending, handle, taken.depth_time),
            on_progress=lambda progress: self._on_progress(pending, progress),
        )
        return pending

    def _active_pipeline(self) -> AnsweringPipeline:
        """The pipeline, or RequestRejected when the node is not active."""
        pipeline = self._pipeline
        if not self._active or pipeline is None:
            raise RequestRejected(
                f"node is not active (lifecycle state '{self._state_label()}'):"
                " configure and activate it first"
            )
        return pipeline

    def _now(self) -> float:
        """The node's clock (the clock frame stamps are compared with), seconds."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _frame_settings(self, max_frame_age: float, camera: str = "") -> FrameSettings:
        """The frame parameters of one request (its own max_frame_age) on ``camera``."""
        # Only what a camera may set for itself is looked up through its overrides.
        own = ("sync_slop", "sync_wait", "depth.scale")
        values = self._cameras.values(camera, {name: self._param(name) for name in own})
        return FrameSettings(
            max_frame_age=max_frame_age,
            sync_slop=float(values["sync_slop"]),
            sync_wait=float(values["sync_wait"]),
            future_stamp_tolerance=float(self._param("future_stamp_tolerance")),
            use_depth=bool(self._param("use_depth")),
            max_image_size=int(self._param("max_image_size")),
            depth_scale=float(values["depth.scale"]),
            rectified=bool(self._param("camera.rectified")),
            frame_id=str(self._param("frame_id")),
        )

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
