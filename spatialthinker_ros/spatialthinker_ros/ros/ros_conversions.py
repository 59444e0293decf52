"""Answers (:class:`~spatialthinker_ros.answering.pipeline.SceneAnswer`) into
spatialthinker_msgs messages.

Every text field published is length-bounded here, whatever the model wrote.
"""

from __future__ import annotations

import math

from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import Header

from spatialthinker_msgs.msg import SceneGraph, SceneObject, SceneRelation, SpatialAnswer
from spatialthinker_ros.answering.pipeline import SceneAnswer, SceneProgress

MAX_FIELD_CHARS = 4096
MAX_RAW_OUTPUT_CHARS = 32768
MAX_WARNINGS = 64


def bounded(text: str | None, limit: int = MAX_FIELD_CHARS) -> str:
    """Cut a text to ``limit`` characters, marking the cut."""
    text = text or ""
    if len(text) <= limit:
        return text
    return text[: limit - 15] + " …[truncated]"


def scene_graph_message(header: Header, answer: SceneAnswer | SceneProgress) -> SceneGraph:
    """The SceneGraph of one answer: objects with their 3D (or why none), relations with the
    depth check's verdict and evidence, and the up direction they were checked along.

    Args:
        header: The source colour image's header.
        answer: The answer, or the scene graph of one still being written (boxes in
            source-image pixels).

    Returns:
        The message.
    """
    graph = SceneGraph(header=header)
    lifted = answer.lifted
    for index, obj in enumerate(answer.parsed.objects):
        x1, y1, x2, y2 = obj.bbox
        item = SceneObject(
            id=bounded(obj.id, 256),
            label=bounded(obj.label, 256),
            x_min=float(x1),
            y_min=float(y1),
            x_max=float(x2),
            y_max=float(y2),
        )
        estimate = lifted[index] if lifted is not None and index < len(lifted) else None
        if estimate is not None and estimate.has_3d:
            cx, cy, cz = estimate.center
            sx, sy, sz = estimate.size
            item.has_3d = True
            item.center = Point(x=float(cx), y=float(cy), z=float(cz))
            if estimate.surface is not None:
                fx, fy, fz = estimate.surface
                item.surface = Point(x=float(fx), y=float(fy), z=float(fz))
            item.size = Vector3(x=float(sx), y=float(sy), z=float(sz))
        else:
            reason = estimate.reason if estimate is not None else answer.no_3d_reason
            item.no_3d_reason = bounded(reason)
        if estimate is not None:
            item.valid_depth_pixels = int(estimate.valid_pixels)
            item.depth_fill = float(estimate.fill) if math.isfinite(estimate.fill) else 0.0
        graph.objects.append(item)
    checks = answer.relations.checks
    for index, rel in enumerate(answer.parsed.relations):
        relation = SceneRelation(
            subject=bounded(rel.subject, 256),
            predicate=bounded(rel.predicate, 256),
            object=bounded(rel.object, 256),
        )
        if index < len(checks):
            relation.verdict = int(checks[index].verdict)
            relation.evidence = bounded(checks[index].evidence, 1024)
        graph.relations.append(relation)
    up = answer.relations.up
    if up is not None:
        graph.up = Vector3(x=float(up.vector[0]), y=float(up.vector[1]), z=float(up.vector[2]))
    return graph


def answer_message(header: Header, answer: SceneAnswer) -> SpatialAnswer:
    """The SpatialAnswer of one answer (its scene graph included)."""
    parsed, result = answer.parsed, answer.engine
    width, height = result.model_image_size
    return SpatialAnswer(
        header=header,
        request_id=bounded(answer.request_id, 256),
        question=bounded(answer.question),
        options=[bounded(o, 1024) for o in answer.options],
        answer=bounded(parsed.answer),
        choice=parsed.choice or "",
        choice_index=-1 if parsed.choice_index is None else int(parsed.choice_index),
        observation=bounded(parsed.observation),
        reasoning=bounded(parsed.reasoning, MAX_RAW_OUTPUT_CHARS),
        scene_graph=scene_graph_message(header, answer),
        relations_contradicted=int(answer.relations.contradicted),
        raw_output=bounded(result.raw_text, MAX_RAW_OUTPUT_CHARS),
        strict_format=bool(parsed.strict),
        warnings=[bounded(w, 1024) for w in answer.warnings[:MAX_WARNINGS]],
        model=bounded(result.model_name, 512),
        model_image_width=int(width),
        model_image_height=int(height),
        queue_wait_s=float(result.queue_wait_s),
        inference_s=float(result.inference_s),
        total_s=float(result.total_s),
        scene_s=float(answer.scene_s if math.isfinite(answer.scene_s) else result.total_s),
    )
