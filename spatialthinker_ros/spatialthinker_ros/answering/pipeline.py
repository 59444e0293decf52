"""One answering pipeline for the node and every offline tool (ROS-free).

A request goes: frames -> model frame -> prompt -> engine -> parse (the engine does these) ->
lift to 3D -> depth-check the relations -> one typed :class:`SceneAnswer`. The node
(``spatialthinker_node``), ``spatialthinker ask``, ``replay``, ``eval`` and the demo all call
this module and only render its result (``ros_conversions`` for messages, ``answer_json`` for
files), so a capability added here reaches every one of them.

While the model writes, a request submitted with ``on_progress`` is told its stage (observing,
scene, thinking, answering), the text so far, and, as soon as ``</scene>`` is written, its scene
graph lifted to 3D (:class:`Progress`, :class:`SceneProgress`): a planner that needs "where is
the mug" does not wait for the reasoning. The final answer is parsed from the whole text as
always; its scene graph follows.

Settings come from one place: the node's parameter table
(:mod:`spatialthinker_ros.answering.parameters`). The node passes its parameter values; the
offline tools pass their flags, which carry the same names. :func:`engine_config`,
:func:`lift_params` and the backend registry
(:func:`spatialthinker_ros.core.backends.backend_options`) turn those values into the engine's,
the backend's and the lifting's settings.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatialthinker_ros.core.backends import GenerationSettings, backend_options, create_backend
from spatialthinker_ros.core.camera import CameraIntrinsics, aspect_mismatch, depth_range_warning
from spatialthinker_ros.core.confidence import (
    AnswerConfidence,
    confidence_summary,
    low_confidence_warning,
    unavailable,
    with_temperature,
)
from spatialthinker_ros.core.engine import (
    EngineConfig,
    EngineResult,
    InferenceEngine,
    Priority,
    RequestFailed,
    RequestHandle,
    StreamedText,
    percentile,
    to_source_pixels,
)
from spatialthinker_ros.core.gravity import UpEstimate, check_up_policy, scene_up
from spatialthinker_ros.core.lifting import Lifted3D, LiftParams, lift_boxes
from spatialthinker_ros.core.parsing import SpatialResult
from spatialthinker_ros.core.relation_check import (
    VERTICAL_FAMILIES,
    RelationReport,
    normalise_predicate,
    verify_relations,
)
from spatialthinker_ros.core.stream_reader import StreamReader
from spatialthinker_ros.core.transforms import Placement

__all__ = [
    "MAX_OPTIONS",
    "MAX_OPTION_CHARS",
    "MAX_PROGRESS_TEXT",
    "SCENE_PARAMETERS",
    "AnswerHandle",
    "AnsweringPipeline",
    "Frames",
    "Lifting",
    "Progress",
    "RequestRejected",
    "SceneAnswer",
    "SceneParams",
    "SceneProgress",
    "build_answer",
    "check_question",
    "engine_config",
    "intrinsics_for_colour",
    "lift_params",
    "lift_scene",
    "scene_params",
]

#: Options a multiple-choice question may have (letters A-Z).
MAX_OPTIONS = 26
#: Longest option text accepted.
MAX_OPTION_CHARS = 1024
#: Characters of the output so far that a progress report carries (the last ones).
MAX_PROGRESS_TEXT = 4096


class RequestRejected(ValueError):
    """A request that cannot start; the message is the reason users see."""


def check_question(
    question: str, options: Sequence[str], max_question_chars: int
) -> tuple[str, list[str]]:
    """The admission rules of a question: returns it stripped and the options as strings.

    Raises:
        RequestRejected: With the reason (empty or too long question, too many options, an
            empty or too long option).
    """
    question = str(question).strip()
    if not question:
        raise RequestRejected("question is empty")
    if len(question) > max_question_chars:
        raise RequestRejected(
            f"question is {len(question)} characters long (max_question_chars {max_question_chars})"
        )
    texts = [str(o) for o in options]
    if len(texts) > MAX_OPTIONS:
        raise RequestRejected(f"{len(texts)} options given; at most {MAX_OPTIONS} (A-Z)")
    for index, option in enumerate(texts):
        if not option.strip():
            raise RequestRejected(f"option {chr(65 + index)} is empty")
        if len(option) > MAX_OPTION_CHARS:
            raise RequestRejected(
                f"option {chr(65 + index)} is longer than {MAX_OPTION_CHARS} characters"
            )
    return question, texts


# ---------------------------------------------------------------------------- settings


def engine_config(values: Mapping[str, Any], **overrides: Any) -> EngineConfig:
    """The engine's settings from parameter values (the node's names), plus ``overrides``."""
    config = {
        "max_queue_size": int(values["max_queue_size"]),
        "max_batch_size": int(values["max_batch_size"]),
        "default_timeout_s": float(values["request_timeout"]),
        "frame_policy": str(values["coordinate_policy"]),
        "min_pixels": int(values["min_pixels"]),
        "max_pixels": int(values["max_pixels"]),
        "generation": GenerationSettings(
            max_new_tokens=int(values["max_new_tokens"]), stream=bool(values.get("stream", True))
        ),
    }
    config.update(overrides)
    return EngineConfig(**config)


#: The parameters :func:`scene_params` reads: a running node applies changes to them at once.
SCENE_PARAMETERS = (
    "depth.shrink",
    "depth.min_depth",
    "depth.max_depth",
    "depth.min_valid_pixels",
    "depth.min_size",
    "relations.up",
    "confidence_temperature",
    "min_confidence",
)


@dataclass(frozen=True)
class SceneParams:
    """How an answer's scene is measured and its confidence read.

    Attributes:
        lift: The lifting's settings (``depth.*``).
        up: Where up comes from for above, below and on (``relations.up``, one of
            :data:`spatialthinker_ros.core.gravity.UP_POLICIES`).
        confidence_temperature: Temperature applied to the option probabilities
            (:func:`spatialthinker_ros.core.confidence.with_temperature`; 1: the model's own).
        min_confidence: A multiple-choice answer less confident than this gets a
            ``low confidence`` warning (0: off).
    """

    lift: LiftParams = field(default_factory=LiftParams)
    up: str = "tf"
    confidence_temperature: float = 1.0
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        check_up_policy(self.up)
        if not (math.isfinite(self.confidence_temperature) and self.confidence_temperature > 0):
            raise ValueError(
                f"confidence_temperature must be positive, not {self.confidence_temperature}"
            )


def scene_params(values: Mapping[str, Any]) -> SceneParams:
    """The scene's settings from the ``depth.*``, ``relations.up`` and confidence parameter
    values.

    Raises:
        ValueError: Values out of range (the problem named).
    """
    return SceneParams(
        lift_params(values),
        str(values["relations.up"]),
        float(values["confidence_temperature"]),
        float(values["min_confidence"]),
    )


def lift_params(values: Mapping[str, Any]) -> LiftParams:
    """The lifting's settings from the ``depth.*`` parameter values.

    Raises:
        ValueError: Values out of range (the problem named).
    """
    return LiftParams(
        shrink=float(values["depth.shrink"]),
        min_depth=float(values["depth.min_depth"]),
        max_depth=float(values["depth.max_depth"]),
        min_valid_pixels=int(values["depth.min_valid_pixels"]),
        min_size=float(values["depth.min_size"]),
    )


# ---------------------------------------------------------------------------- frames and 3D


@dataclass(frozen=True)
class Frames:
    """What a request sees of the camera.

    Attributes:
        rgb: The colour image, ``HxWx3`` uint8 RGB.
        depth_m: Registered depth in metres (NaN invalid), any resolution of the same view; or
            None for no depth.
        intrinsics: The colour camera's intrinsics, for the colour image's size (see
            :func:`intrinsics_for_colour`); or None.
        depth_scale: Metres per unit of the 16-bit depth ``depth_m`` was read from (None: the
            depth was metres already); named in the implausible-depth warning.
        no_depth_reason: Why there is no 3D when ``depth_m`` or ``intrinsics`` is None; every
            object carries it.
        depth_wanted: Whether missing 3D is worth a warning on the answer (False when depth was
            turned off on purpose).
        placement: Where the answer's 3D is reported: the transform from the camera's optical
            frame into the target frame at the colour image's stamp (None: the camera frame).
        tf_up: Up from TF (``gravity.tf_up``) for ``relations.up: tf``; None: measured.
        tf_up_failure: Why up is not from TF though a gravity frame was asked for (said on an
            answer whose relations are about gravity).
        warnings: What the answer must say about these frames (a transform TF did not have).
    """

    rgb: np.ndarray
    depth_m: np.ndarray | None = None
    intrinsics: CameraIntrinsics | None = None
    depth_scale: float | None = None
    no_depth_reason: str = ""
    depth_wanted: bool = True
    placement: Placement | None = None
    tf_up: UpEstimate | None = None
    tf_up_failure: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the colour image."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def intrinsics_for_colour(
    intrinsics: CameraIntrinsics, width: int, height: int
) -> tuple[CameraIntrinsics | None, str]:
    """Intrinsics rescaled to a colour image of ``width x height``, or ``(None, reason)``.

    A camera_info for another resolution of the same view is rescaled; one of another shape
    belongs to another camera or crop and is refused with the reason users see.
    """
    if (intrinsics.width, intrinsics.height) == (width, height):
        return intrinsics, ""
    mismatch = aspect_mismatch(intrinsics.size, (width, height))
    if mismatch:
        return None, (
            f"camera_info is {intrinsics.width}x{intrinsics.height} but the colour image"
            f" is {width}x{height}: {mismatch}"
        )
    return intrinsics.scaled(width, height), ""


@dataclass(frozen=True)
class Lifting:
    """The 3D of one answer's objects.

    Attributes:
        lifted: One estimate per object, or None when no 3D was possible at all.
        no_3d_reason: Why, when ``lifted`` is None.
        warnings: What the answer says about it (implausible depth units, objects without 3D).
        depth_warning: The implausible-depth-units warning alone ("" when the depth looks
            plausible for its scale).
        up: The scene's up direction measured from the depth, when a relation is about
            gravity (above, below, on) and the frame shows enough horizontal surface.
    """

    lifted: list[Lifted3D] | None
    no_3d_reason: str
    warnings: list[str]
    depth_warning: str = ""
    up: UpEstimate | None = None


def lift_scene(parsed: SpatialResult, frames: Frames, params: SceneParams) -> Lifting:
    """Lift every object of an answer to 3D (and find up when a relation is about gravity)."""
    boxes = [obj.bbox for obj in parsed.objects]
    if frames.depth_m is None or frames.intrinsics is None:
        reason = frames.no_depth_reason
        wanted = bool(reason and boxes and frames.depth_wanted)
        return Lifting(None, reason, [f"no 3D: {reason}"] if wanted else [])
    lift = params.lift
    units = depth_range_warning(frames.depth_m, lift.min_depth, lift.max_depth, frames.depth_scale)
    warnings = [units] if units else []
    if not boxes:
        return Lifting([], "", warnings, units)
    try:
        lifted = lift_boxes(
            boxes,
            frames.depth_m,
            frames.intrinsics,
            image_size=frames.size,
            params=lift,
            labels=[obj.id for obj in parsed.objects],
        )
    except ValueError as error:
        return Lifting(None, str(error), [*warnings, f"no 3D: {error}"], units)
    missing = [item for item in lifted if not item.has_3d]
    if missing:
        warnings.append(f"no 3D for {len(missing)} of {len(lifted)} objects: {missing[0].reason}")
    vertical = any(
        normalise_predicate(rel.predicate) in VERTICAL_FAMILIES for rel in parsed.relations
    )
    # Measured only where a relation needs it (a plane fit costs milliseconds); TF's is free.
    from_tf = params.up == "tf" and frames.tf_up is not None
    up = (
        scene_up(frames.depth_m, frames.intrinsics, params.up, frames.tf_up)
        if vertical or from_tf
        else None
    )
    if vertical and params.up == "tf" and frames.tf_up is None and frames.tf_up_failure:
        warnings.append(f"up not from TF ({frames.tf_up_failure}): {_up_words(up)}")
    return Lifting(lifted, "", warnings, units, up)


def _up_words(up: UpEstimate | None) -> str:
    """What up was taken as instead of TF's."""
    return "up taken as the camera's -y" if up is None else up.describe()


# ---------------------------------------------------------------------------- the answer


@dataclass(frozen=True)
class SceneAnswer:
    """One answered request: what every output (message, JSON, image) is rendered from.

    Attributes:
        request_id: The request's id (the node's, e.g. ``service-3``; a tool's item name).
        question: The question as asked.
        options: The options as asked.
        engine: The engine's result: the parsed output (boxes in colour-image pixels), the raw
            text, the model frame, timings and token counts.
        lifted: One 3D estimate per object, or None when no 3D was possible or wanted.
        no_3d_reason: Why there is no 3D when ``lifted`` is None ("" when none was wanted).
        relations: The depth check of every relation.
        warnings: Every warning of the answer: the parser's, then the 3D ones, then the
            contradicted relations the reasoning relies on, then a low confidence.
        depth_warning: The implausible-depth-units warning ("" when none), also among
            ``warnings``; the node shows it in /diagnostics too.
        scene_s: Seconds from the request's submission until its scene graph (with 3D) was
            handed on: at ``</scene>`` when streaming, else with the answer (``total_s``).
        confidence: The option probabilities from the model's own tokens, with
            ``confidence_temperature`` applied (``core.confidence``), or why there are none.
        placement: Where the 3D is reported (:attr:`Frames.placement`); the estimates in
            ``lifted`` stay in the camera frame, the renderings apply it.
    """

    request_id: str
    question: str
    options: tuple[str, ...]
    engine: EngineResult
    lifted: tuple[Lifted3D, ...] | None
    no_3d_reason: str
    relations: RelationReport
    warnings: tuple[str, ...] = field(default_factory=tuple)
    depth_warning: str = ""
    scene_s: float = math.nan
    confidence: AnswerConfidence = field(default_factory=AnswerConfidence)
    placement: Placement | None = None

    @property
    def parsed(self) -> SpatialResult:
        """The parsed model output."""
        return self.engine.result

    def distance(self, index: int) -> float | None:
        """Distance from the camera to object ``index``'s centre, metres (None without 3D)."""
        estimate = self.lifted[index] if self.lifted is not None else None
        if estimate is None or not estimate.has_3d:
            return None
        return float(np.linalg.norm(estimate.center))


def build_answer(
    request_id: str,
    question: str,
    options: Sequence[str],
    result: EngineResult,
    frames: Frames,
    params: SceneParams,
    scene_s: float | None = None,
) -> SceneAnswer:
    """Lift, depth-check and assemble one engine result into a :class:`SceneAnswer`.

    ``scene_s`` is when the scene graph was handed on early (None: with this answer). The
    confidence gets ``params``' temperature, and a ``low confidence`` warning when it is below
    ``params.min_confidence``.
    """
    lifting = lift_scene(result.result, frames, params)
    relations = verify_relations(result.result, lifting.lifted, lifting.up)
    confidence = with_temperature(
        result.confidence or unavailable("the backend measures no token probabilities"),
        params.confidence_temperature,
    )
    low = low_confidence_warning(confidence, params.min_confidence, bool(options))
    return SceneAnswer(
        request_id=request_id,
        question=question,
        options=tuple(options),
        engine=result,
        lifted=None if lifting.lifted is None else tuple(lifting.lifted),
        no_3d_reason=lifting.no_3d_reason,
        relations=relations,
        warnings=(
            *result.result.warnings,
            *frames.warnings,
            *lifting.warnings,
            *relations.warnings,
            *([low] if low else []),
        ),
        depth_warning=lifting.depth_warning,
        # A scene report that raced the end of the request went out with the answer.
        scene_s=float(result.total_s if scene_s is None else min(scene_s, result.total_s)),
        confidence=confidence,
        placement=frames.placement,
    )


# ---------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class SceneProgress:
    """The scene graph of a request still being answered, lifted to 3D (what ``</scene>``
    closed). It renders like an answer's scene graph (``ros_conversions.scene_graph_message``).

    Attributes:
        request_id: The request's id.
        parsed: The output parsed up to ``</scene>``: its ``objects`` (boxes in source-image
            pixels) and ``relations`` are the scene graph.
        lifted: One 3D estimate per object, or None when no 3D was possible or wanted.
        no_3d_reason: Why there is no 3D when ``lifted`` is None.
        relations: The depth check of every relation.
        warnings: The parser's, the frames', the 3D and the relation warnings so far.
        placement: Where the 3D is reported (:attr:`Frames.placement`).
    """

    request_id: str
    parsed: SpatialResult
    lifted: tuple[Lifted3D, ...] | None
    no_3d_reason: str
    relations: RelationReport
    warnings: tuple[str, ...] = ()
    placement: Placement | None = None


@dataclass(frozen=True)
class Progress:
    """Where a running request stands (see ``AnsweringPipeline.submit``'s ``on_progress``).

    Attributes:
        request_id: The request's id.
        stage: ``observing``, ``scene``, ``thinking`` or ``answering``
            (``stream_reader.STAGES``).
        text: The output so far, its last :data:`MAX_PROGRESS_TEXT` characters.
        chars: Characters written so far.
        scene: The scene graph from the moment ``</scene>`` was written, else None.
        scene_new: True in the one report that brings ``scene`` first.
    """

    request_id: str
    stage: str
    text: str
    chars: int
    scene: SceneProgress | None = None
    scene_new: bool = False


class _Streaming:
    """One request's reading of its stream: reader, frames, and the end of its reports."""

    def __init__(
        self,
        request_id: str,
        options: Sequence[str],
        frames: Frames,
        params: SceneParams,
        on_progress: Callable[[Progress], None],
    ) -> None:
        self.request_id = request_id
        self.options = list(options)
        self.frames: Frames | None = frames
        self.params = params
        self.on_progress = on_progress
        self.reader: StreamReader | None = None
        self.scene: SceneProgress | None = None
        self.scene_s: float | None = None
        self.submitted = time.monotonic()
        self.tail = ""
        # Held while a report is made; the answer waits for it, so reports come before it.
        self.lock = threading.Lock()
        self.closed = False

    def on_text(self, streamed: StreamedText) -> None:
        """The engine's text callback (its text thread): read, lift at </scene>, report."""
        with self.lock:
            if self.closed or self.frames is None:
                return
            if self.reader is None:
                self.reader = StreamReader(streamed.stated_size, self.options or None)
            events = self.reader.feed(streamed.text)
            self.tail = (self.tail + streamed.text)[-MAX_PROGRESS_TEXT:]
            scene_new = False
            for event in events:
                if event.scene is not None and self.scene is None:
                    parsed = to_source_pixels(
                        event.scene, streamed.stated_size, streamed.source_size
                    )
                    lifting = lift_scene(parsed, self.frames, self.params)
                    relations = verify_relations(parsed, lifting.lifted, lifting.up)
                    self.scene = SceneProgress(
                        request_id=self.request_id,
                        parsed=parsed,
                        lifted=None if lifting.lifted is None else tuple(lifting.lifted),
                        no_3d_reason=lifting.no_3d_reason,
                        relations=relations,
                        warnings=(
                            *parsed.warnings,
                            *self.frames.warnings,
                            *lifting.warnings,
                            *relations.warnings,
                        ),
                        placement=self.frames.placement,
                    )
                    scene_new = True
            progress = Progress(
                self.request_id,
                self.reader.stage,
                self.tail,
                self.reader.chars,
                self.scene,
                scene_new,
            )
            self.on_progress(progress)
            if scene_new:
                self.scene_s = time.monotonic() - self.submitted

    def close(self) -> float | None:
        """No reports after this (waits for one in progress); returns when the scene went."""
        with self.lock:
            self.closed = True
            self.frames = None
            self.reader = None
            return self.scene_s


# ---------------------------------------------------------------------------- the pipeline


class AnswerHandle:
    """A submitted request: its engine handle and the future of its :class:`SceneAnswer`.

    The future fails with :class:`~spatialthinker_ros.core.engine.RequestFailed` (its ``reason``
    is what users see) when the engine fails the request or its answer cannot be built.
    """

    def __init__(self, request_id: str, handle: RequestHandle) -> None:
        self.request_id = request_id
        self.engine_handle = handle
        self.future: Future[SceneAnswer] = Future()

    def cancel(self) -> bool:
        """Cancel the request (see ``RequestHandle.cancel``)."""
        return self.engine_handle.cancel()

    @property
    def state(self) -> str:
        """The engine's state of the request (``queued``, ``running``, ``done``...)."""
        return self.engine_handle.state

    @property
    def queue_position(self) -> int:
        """Requests that would run before this one (0 = next); -1 when it is not queued."""
        return self.engine_handle.queue_position

    def result(self, timeout: float | None = None) -> SceneAnswer:
        """Wait for the answer (raises ``RequestFailed`` with the reason)."""
        return self.future.result(timeout)


class AnsweringPipeline:
    """The backend, the engine and the steps after it, built from parameter values.

    Args:
        values: Parameter values by the node's names (``backend``, ``model``,
            ``max_batch_size``, ``depth.*``, ``openai.*`` ...).
        backend_extras: Options for the backend beyond the parameters (e.g. ``progress``).
        **engine_overrides: :class:`EngineConfig` fields to set beyond the parameters.

    Raises:
        ValueError: An unknown backend or values out of range (the problem named).
    """

    def __init__(
        self,
        values: Mapping[str, Any],
        backend_extras: Mapping[str, Any] | None = None,
        **engine_overrides: Any,
    ) -> None:
        self.values = dict(values)
        self.scene = scene_params(values)
        name = str(values["backend"])
        options = {**backend_options(name, values), **(backend_extras or {})}
        self.backend = create_backend(name, **options)
        self.engine = InferenceEngine(self.backend, engine_config(values, **engine_overrides))
        # Seconds to each answer's scene graph, for its percentiles beside the total latency.
        self._scene_times: deque[float] = deque(maxlen=self.engine.config.latency_window)
        # Confidence of each recent multiple-choice answer (None: not measured).
        self._confidences: deque[float | None] = deque(maxlen=self.engine.config.latency_window)
        self._scene_lock = threading.Lock()

    def update_scene(self, values: Mapping[str, Any]) -> None:
        """Measure the scenes of the requests submitted from now on with ``values``
        (:data:`SCENE_PARAMETERS`): the one part of the pipeline a running node changes
        without configuring again. A request already submitted keeps the settings it started
        with, for its early scene graph and its answer alike.

        Raises:
            ValueError: Values out of range (the problem named); nothing changes.
        """
        self.scene = scene_params(values)

    @property
    def model_name(self) -> str:
        """The model the backend serves."""
        return self.backend.model_name

    def start(self) -> None:
        """Load the model (raises ``BackendError`` with the reason when it cannot)."""
        try:
            self.engine.start()
        except Exception:
            self.engine.shutdown("load failed")
            raise

    def shutdown(self, reason: str = "shut down") -> None:
        """Fail what is pending with ``reason`` and unload the model."""
        self.engine.shutdown(reason)

    def together(self) -> contextlib.AbstractContextManager[None]:
        """Requests submitted inside the block are answered in one backend call where the
        batch allows (``InferenceEngine.together``): the cameras of one question."""
        return self.engine.together()

    def stats(self) -> dict[str, Any]:
        """The engine's statistics plus the time to the scene graph (``scene_p50_s`` ...) and
        the recent answers' confidence distribution (``confidence_p50`` ...,
        :func:`~spatialthinker_ros.core.confidence.confidence_summary`)."""
        stats = self.engine.stats()
        with self._scene_lock:
            times = sorted(self._scene_times)
            confidences = list(self._confidences)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            stats[f"scene_{name}_s"] = percentile(times, q)
        stats.update(confidence_summary(confidences, self.scene.min_confidence))
        return stats

    def submit(
        self,
        frames: Frames,
        question: str,
        options: Sequence[str],
        request_id: str,
        priority: Priority = Priority.QUERY,
        timeout: float | None = None,
        on_done: Callable[[AnswerHandle], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> AnswerHandle:
        """Queue one question about ``frames``; the answer is built on the engine's thread.

        Args:
            frames: What the camera saw.
            question: The question (see :func:`check_question`).
            options: Its options.
            request_id: The id the answer carries.
            priority: ``Priority.QUERY`` runs before ``Priority.CONTINUOUS``.
            timeout: Seconds until the request expires if it has not started (None: the
                engine's default).
            on_done: Called with the handle once its future is resolved (answer or failure).
            on_progress: Called with a :class:`Progress` as the model writes (when the backend
                streams and the ``stream`` parameter is on), on the engine's text thread;
                never after the answer: its last report comes before ``on_done``.
        """
        # The settings this request started with, for its early scene graph and its answer
        # alike: a parameter changed while it runs applies from the next request on, else the
        # graph at </scene> and the answer would measure the same scene differently.
        scene = self.scene
        streaming = (
            _Streaming(request_id, options, frames, scene, on_progress)
            if on_progress is not None
            else None
        )
        engine_handle = self.engine.submit(
            frames.rgb,
            question,
            options,
            priority=priority,
            timeout=timeout,
            on_text=streaming.on_text if streaming is not None else None,
        )
        handle = AnswerHandle(request_id, engine_handle)
        # What the answer needs once the engine is done, dropped as soon as it is built: the
        # engine's future keeps this callback (and so the frames, megabytes) while anyone
        # holds the handle.
        held: dict[str, Any] = {"frames": frames, "handle": handle, "on_done": on_done}

        def finish(engine_future: Future) -> None:
            frames_, handle_, on_done_ = held.pop("frames"), held.pop("handle"), held.pop("on_done")
            scene_s = streaming.close() if streaming is not None else None
            try:
                result: EngineResult = engine_future.result()
                answer = build_answer(
                    request_id, question, options, result, frames_, scene, scene_s
                )
                with self._scene_lock:
                    self._scene_times.append(answer.scene_s)
                    if answer.options:
                        measured = answer.confidence.measured
                        self._confidences.append(answer.confidence.confidence if measured else None)
            except RequestFailed as failed:
                handle_.future.set_exception(failed)
            except Exception as error:  # a cancelled future or a bug: still one outcome
                handle_.future.set_exception(
                    RequestFailed(f"could not build the answer: {error or type(error).__name__}")
                )
            else:
                handle_.future.set_result(answer)
            if on_done_ is not None:
                on_done_(handle_)

        engine_handle.future.add_done_callback(finish)
        return handle

    def answer(
        self, frames: Frames, question: str, options: Sequence[str], request_id: str
    ) -> SceneAnswer:
        """Answer one question and wait (raises ``RequestFailed`` with the reason)."""
        return self.submit(frames, question, options, request_id).result()
