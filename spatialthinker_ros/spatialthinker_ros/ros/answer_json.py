"""The one JSON rendering of an answer, for files (``ask``, ``replay``, ``eval``, the demo).

It renders the ``SpatialAnswer`` message, so what a tool writes is field for field what the node
publishes: the tools render their :class:`~spatialthinker_ros.answering.pipeline.SceneAnswer` with
:func:`~spatialthinker_ros.ros.ros_conversions.answer_message` first, the demo renders what the
node sent it. Numbers are rounded for people (0.1 mm, 1 ms; probabilities to 6 digits, enough
for ``eval`` to fit a temperature on); a non-finite number is written as null, so strict JSON
readers accept every file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from spatialthinker_msgs.msg import SpatialAnswer
from spatialthinker_ros.core.engine import EngineResult
from spatialthinker_ros.core.relation_check import verdict_name

__all__ = ["answer_to_json", "message_to_json"]


def _number(value: float, digits: int = 4) -> float | None:
    """``value`` rounded, or None when it is NaN or infinite (JSON has no such numbers)."""
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _vector(values: Iterable[float]) -> list[float | None]:
    return [_number(v) for v in values]


def _confidence(answer: SpatialAnswer) -> dict[str, Any]:
    """The confidence fields; probabilities to 6 digits (float32 holds about 7), and the
    numbers that mean nothing without a measurement null."""
    measured = answer.confidence_source == SpatialAnswer.CONFIDENCE_TOKENS
    return {
        "option_probabilities": [_number(p, 6) for p in answer.option_probabilities],
        "confidence": _number(answer.confidence, 6) if measured else None,
        "confidence_source": answer.confidence_source,
        "confidence_note": answer.confidence_note,
        "option_mass": _number(answer.option_mass, 6) if measured else None,
        "other_letters_mass": _number(answer.other_letters_mass, 6) if measured else None,
        "answer_mean_logprob": _number(answer.answer_mean_logprob),
    }


def answer_to_json(answer: SpatialAnswer, result: EngineResult | None = None) -> dict[str, Any]:
    """JSON-ready data of an answer.

    Args:
        answer: The answer message.
        result: The engine's result, when at hand, for what the message does not carry (the
            size stated in the prompt, token counts).
    """
    objects = []
    for o in answer.scene_graph.objects:
        item: dict[str, Any] = {
            "id": o.id,
            "label": o.label,
            "bbox": [_number(v, 2) for v in (o.x_min, o.y_min, o.x_max, o.y_max)],
            "has_3d": bool(o.has_3d),
            "center": None,
            "surface": None,
            "size": None,
            "distance": None,
        }
        if o.has_3d:
            centre = (o.center.x, o.center.y, o.center.z)
            item.update(
                center=_vector(centre),
                surface=_vector((o.surface.x, o.surface.y, o.surface.z)),
                size=_vector((o.size.x, o.size.y, o.size.z)),
                orientation=_vector(
                    (o.orientation.x, o.orientation.y, o.orientation.z, o.orientation.w)
                ),
                distance=_number(o.distance),
                valid_depth_pixels=int(o.valid_depth_pixels),
                depth_fill=_number(o.depth_fill),
            )
        elif o.no_3d_reason:
            item["no_3d_reason"] = o.no_3d_reason
        objects.append(item)
    stamp = answer.header.stamp
    up = answer.scene_graph.up
    data: dict[str, Any] = {
        "request_id": answer.request_id,
        "stamp": stamp.sec + stamp.nanosec * 1e-9,
        # The frame of every 3D value below: the image's optical frame or the target frame.
        "frame_id": answer.scene_graph.header.frame_id or answer.header.frame_id,
        "image_frame_id": answer.header.frame_id,
        "question": answer.question,
        "options": list(answer.options),
        "answer": answer.answer,
        "choice": answer.choice or None,
        "choice_index": answer.choice_index if answer.choice_index >= 0 else None,
        **_confidence(answer),
        "observation": answer.observation,
        "reasoning": answer.reasoning,
        "objects": objects,
        "relations": [
            {
                "subject": r.subject,
                "predicate": r.predicate,
                "object": r.object,
                "verdict": verdict_name(r.verdict),
                "evidence": r.evidence,
            }
            for r in answer.scene_graph.relations
        ],
        "up": _vector((up.x, up.y, up.z)) if any((up.x, up.y, up.z)) else None,
        "up_source": answer.scene_graph.up_source or None,
        "relations_contradicted": int(answer.relations_contradicted),
        "strict_format": bool(answer.strict_format),
        "warnings": list(answer.warnings),
        "raw_output": answer.raw_output,
        "model": answer.model,
        "model_image_size": [answer.model_image_width, answer.model_image_height],
        "camera": answer.camera,
        "batch_size": int(answer.batch_size),
        "queue_wait_s": _number(answer.queue_wait_s, 3),
        "inference_s": _number(answer.inference_s, 3),
        "total_s": _number(answer.total_s, 3),
        "scene_s": _number(answer.scene_s, 3),
    }
    if result is not None:
        data["stated_size"] = list(result.stated_size)
        data["prompt_tokens"] = result.prompt_tokens
        data["output_tokens"] = result.output_tokens
    return data


def message_to_json(message: Any) -> Any:
    """Any ROS message as plain JSON data, field for field by the message's own field names (as
    ``ros2 topic echo --json`` would), numbers unrounded except that a non-finite float is null.
    Used for the ``vision_msgs`` detections the tools write."""
    if hasattr(message, "get_fields_and_field_types"):
        return {
            name: message_to_json(getattr(message, name))
            for name in message.get_fields_and_field_types()
        }
    if isinstance(message, str | bytes | bool | int):
        return message
    if isinstance(message, float):
        return message if math.isfinite(message) else None
    if hasattr(message, "tolist"):  # numpy arrays of fixed-size fields (covariances)
        return [message_to_json(v) for v in message.tolist()]
    if isinstance(message, list | tuple):
        return [message_to_json(v) for v in message]
    return message
