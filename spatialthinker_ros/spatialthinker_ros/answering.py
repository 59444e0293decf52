"""One answering pipeline for the node and every offline tool (ROS-free).

A request goes: frames -> model frame -> prompt -> engine -> parse (the engine does these) ->
lift to 3D -> depth-check the relations -> one typed :class:`SceneAnswer`. The node
(``spatialthinker_node``), ``spatialthinker ask``, ``replay``, ``eval`` and the demo all call
this module and only render its result (``ros_conversions`` for messages, ``answer_json`` for
files), so a capability added here reaches every one of them.

Settings come from one place: the node's parameter table (:mod:`spatialthinker_ros.parameters`).
The node passes its parameter values; the offline tools pass their flags, which carry the same
names. :func:`engine_config`, :func:`lift_params` and the backend registry
(:func:`spatialthinker_ros.backends.backend_options`) turn those values into the engine's, the
backend's and the lifting's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatialthinker_ros.backends import GenerationSettings, backend_options, create_backend
from spatialthinker_ros.camera import CameraIntrinsics, aspect_mismatch, depth_range_warning
from spatialthinker_ros.engine import (
    EngineConfig,
    EngineResult,
    InferenceEngine,
    Priority,
    RequestFailed,
    RequestHandle,
)
from spatialthinker_ros.lifting import Lifted3D, LiftParams, lift_boxes
from spatialthinker_ros.parsing import SpatialResult
from spatialthinker_ros.relation_check import RelationReport, verify_relations

__all__ = [
    "MAX_OPTIONS",
    "MAX_OPTION_CHARS",
    "AnswerHandle",
    "AnsweringPipeline",
    "Frames",
    "Lifting",
    "RequestRejected",
    "SceneAnswer",
    "build_answer",
    "check_question",
    "engine_config",
    "intrinsics_for_colour",
    "lift_params",
    "lift_scene",
]

#: Options a multiple-choice question may have (letters A-Z).
MAX_OPTIONS = 26
#: Longest option text accepted.
MAX_OPTION_CHARS = 1024


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
        "generation": GenerationSettings(max_new_tokens=int(values["max_new_tokens"])),
    }
    config.update(overrides)
    return EngineConfig(**config)


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
    """

    rgb: np.ndarray
    depth_m: np.ndarray | None = None
    intrinsics: CameraIntrinsics | None = None
    depth_scale: float | None = None
    no_depth_reason: str = ""
    depth_wanted: bool = True

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
    """

    lifted: list[Lifted3D] | None
    no_3d_reason: str
    warnings: list[str]
    depth_warning: str = ""


def lift_scene(parsed: SpatialResult, frames: Frames, params: LiftParams) -> Lifting:
    """Lift every object of an answer to 3D."""
    boxes = [obj.bbox for obj in parsed.objects]
    if frames.depth_m is None or frames.intrinsics is None:
        reason = frames.no_depth_reason
        wanted = bool(reason and boxes and frames.depth_wanted)
        return Lifting(None, reason, [f"no 3D: {reason}"] if wanted else [])
    units = depth_range_warning(
        frames.depth_m, params.min_depth, params.max_depth, frames.depth_scale
    )
    warnings = [units] if units else []
    if not boxes:
        return Lifting([], "", warnings, units)
    try:
        lifted = lift_boxes(
            boxes,
            frames.depth_m,
            frames.intrinsics,
            image_size=frames.size,
            params=params,
            labels=[obj.id for obj in parsed.objects],
        )
    except ValueError as error:
        return Lifting(None, str(error), [*warnings, f"no 3D: {error}"], units)
    missing = [item for item in lifted if not item.has_3d]
    if missing:
        warnings.append(f"no 3D for {len(missing)} of {len(lifted)} objects: {missing[0].reason}")
    return Lifting(lifted, "", warnings, units)


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
            contradicted relations the reasoning relies on.
        depth_warning: The implausible-depth-units warning ("" when none), also among
            ``warnings``; the node shows it in /diagnostics too.
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
    params: LiftParams,
) -> SceneAnswer:
    """Lift, depth-check and assemble one engine result into a :class:`SceneAnswer`."""
    lifting = lift_scene(result.result, frames, params)
    relations = verify_relations(result.result, lifting.lifted)
    return SceneAnswer(
        request_id=request_id,
        question=question,
        options=tuple(options),
        engine=result,
        lifted=None if lifting.lifted is None else tuple(lifting.lifted),
        no_3d_reason=lifting.no_3d_reason,
        relations=relations,
        warnings=(*result.result.warnings, *lifting.warnings, *relations.warnings),
        depth_warning=lifting.depth_warning,
    )


# ---------------------------------------------------------------------------- the pipeline


class AnswerHandle:
    """A submitted request: its engine handle and the future of its :class:`SceneAnswer`.

    The future fails with :class:`~spatialthinker_ros.engine.RequestFailed` (its ``reason``
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
        self.lift = lift_params(values)
        name = str(values["backend"])
        options = {**backend_options(name, values), **(backend_extras or {})}
        self.backend = create_backend(name, **options)
        self.engine = InferenceEngine(self.backend, engine_config(values, **engine_overrides))

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

    def submit(
        self,
        frames: Frames,
        question: str,
        options: Sequence[str],
        request_id: str,
        priority: Priority = Priority.QUERY,
        timeout: float | None = None,
        on_done: Callable[[AnswerHandle], None] | None = None,
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
        """
        engine_handle = self.engine.submit(
            frames.rgb, question, options, priority=priority, timeout=timeout
        )
        handle = AnswerHandle(request_id, engine_handle)
        # What the answer needs once the engine is done, dropped as soon as it is built: the
        # engine's future keeps this callback (and so the frames, megabytes) while anyone
        # holds the handle.
        held: dict[str, Any] = {"frames": frames, "handle": handle, "on_done": on_done}

        def finish(engine_future: Future) -> None:
            frames_, handle_, on_done_ = held.pop("frames"), held.pop("handle"), held.pop("on_done")
            try:
                result: EngineResult = engine_future.result()
                answer = build_answer(request_id, question, options, result, frames_, self.lift)
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
