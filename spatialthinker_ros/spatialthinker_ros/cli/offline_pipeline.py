"""The answering pipeline as the command-line tools run it (``ask``, ``replay``, ``eval``).

The tools answer through the same
:class:`~spatialthinker_ros.answering.pipeline.AnsweringPipeline` as the node and render its
answers with the same two steps: the ``SpatialAnswer`` message
(:func:`spatialthinker_ros.ros.ros_conversions.answer_message`) and its one JSON rendering
(:func:`spatialthinker_ros.ros.answer_json.answer_to_json`). What differs offline lives here: no
real-time deadline, a server that is down is an error now, model-load progress on stderr, and
failures as one line.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from spatialthinker_ros.answering.pipeline import AnsweringPipeline, Frames, intrinsics_for_colour
from spatialthinker_ros.cli.args import CommandError

if TYPE_CHECKING:
    from spatialthinker_ros.answering.pipeline import AnswerHandle, SceneAnswer
    from spatialthinker_ros.core.camera import CameraIntrinsics

__all__ = [
    "NO_DEADLINE_S",
    "answer_in_order",
    "frames_for",
    "render",
    "render_detections",
    "start_pipeline",
]

#: Offline runs have no real-time deadline: a 7B model on a CPU may take minutes per answer, and
#: replay/eval keep several requests queued, so a request never expires in the queue.
NO_DEADLINE_S = 1e9


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# Backend options beyond the node's parameters, per backend. Offline there is no "later": a
# server that is down is an error now; a model being loaded shows its progress.
_BACKEND_EXTRAS: dict[str, dict[str, Any]] = {
    "openai": {"check_on_load": True},
    "transformers": {"progress": _progress},
}


def start_pipeline(values: Mapping[str, Any]) -> AnsweringPipeline:
    """A started pipeline from parameter values (:func:`.args.parameter_values`).

    Up to ``max_batch_size`` requests may be kept queued by the caller; none expires.

    Raises:
        CommandError: The backend could not be created or loaded (the reason, one line).
    """
    from spatialthinker_ros.core.backends import BackendError

    window = int(values["max_batch_size"])
    try:
        pipeline = AnsweringPipeline(
            values,
            _BACKEND_EXTRAS.get(str(values["backend"]), {}),
            default_timeout_s=NO_DEADLINE_S,
            max_queue_size=max(int(values["max_queue_size"]), 2 * window),
        )
        pipeline.start()
    except BackendError as error:
        raise CommandError(f"cannot load the model: {error.reason}") from None
    except ValueError as error:
        raise CommandError(str(error)) from None
    return pipeline


_Item = TypeVar("_Item")


def answer_in_order(
    pipeline: AnsweringPipeline,
    items: Iterable[_Item],
    submit: Callable[[_Item], AnswerHandle | None],
    finish: Callable[[_Item, AnswerHandle | None], None],
) -> None:
    """Answer ``items`` with up to ``max_batch_size`` requests queued, finishing them in order.

    Keeping a batch's worth queued lets the engine batch them; finishing in input order keeps
    the output files in the order of the input. The pipeline is shut down at the end (a
    request still queued then fails with the reason).

    Args:
        pipeline: A started pipeline (:func:`start_pipeline`).
        items: What to answer (read lazily: a bag's frames, a data set's lines).
        submit: Queues one item; returns its handle, or None for an item that cannot be asked.
        finish: Called with each item and its handle, in input order.
    """
    window = int(pipeline.values["max_batch_size"])
    in_flight: deque[tuple[_Item, AnswerHandle | None]] = deque()
    try:
        for item in items:
            in_flight.append((item, submit(item)))
            while len(in_flight) >= window:
                finish(*in_flight.popleft())
        while in_flight:
            finish(*in_flight.popleft())
    finally:
        pipeline.shutdown("offline run finished")


def frames_for(
    rgb: np.ndarray,
    depth_m: np.ndarray | None = None,
    intrinsics: CameraIntrinsics | None = None,
    depth_scale: float | None = None,
    no_depth_reason: str = "",
) -> Frames:
    """What a request sees, as the node builds it: intrinsics rescaled to the colour image (or
    refused with the reason when they belong to another shape of image)."""
    if depth_m is not None and intrinsics is not None:
        height, width = rgb.shape[:2]
        intrinsics, reason = intrinsics_for_colour(intrinsics, width, height)
        if intrinsics is None:
            depth_m, no_depth_reason = None, reason
    return Frames(
        rgb=rgb,
        depth_m=depth_m,
        intrinsics=intrinsics,
        depth_scale=depth_scale,
        no_depth_reason=no_depth_reason,
    )


def _header(stamp: tuple[int, int], frame_id: str) -> Any:
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=int(stamp[0]), nanosec=int(stamp[1])), frame_id=frame_id)


def render_detections(
    answer: SceneAnswer, stamp: tuple[int, int] = (0, 0), frame_id: str = ""
) -> dict:
    """The answer's ``vision_msgs`` detections as the node publishes them (``~/detections_3d``,
    ``~/detections_2d``), as JSON data with the messages' own field names.

    Args:
        answer: The answer.
        stamp: As :func:`render`.
        frame_id: As :func:`render`.
    """
    from spatialthinker_ros.ros.answer_json import message_to_json
    from spatialthinker_ros.ros.detections import detections_2d, detections_3d
    from spatialthinker_ros.ros.ros_conversions import answer_message

    header = _header(stamp, frame_id)
    graph = answer_message(header, answer).scene_graph
    scores = answer.engine.object_scores
    return {
        "detections_3d": message_to_json(detections_3d(graph, scores)),
        "detections_2d": message_to_json(detections_2d(graph, header, scores)),
    }


def render(answer: SceneAnswer, stamp: tuple[int, int] = (0, 0), frame_id: str = "") -> dict:
    """The answer's JSON data: its ``SpatialAnswer`` message rendered by the one renderer.

    Args:
        answer: The answer.
        stamp: ``(sec, nanosec)`` of the colour frame (a bag's), or zero for a file.
        frame_id: The colour frame's ``frame_id`` ("" for a file).
    """
    from spatialthinker_ros.ros.answer_json import answer_to_json
    from spatialthinker_ros.ros.ros_conversions import answer_message

    return answer_to_json(answer_message(_header(stamp, frame_id), answer), answer.engine)
