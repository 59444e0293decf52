"""Plain results (engine, lifting) into spatialthinker_msgs messages.

Every text field published is length-bounded here, whatever the model wrote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import Header

from spatialthinker_msgs.msg import SceneGraph, SceneObject, SceneRelation, SpatialAnswer
from spatialthinker_ros.engine import EngineResult
from spatialthinker_ros.lifting import Lifted3D
from spatialthinker_ros.relation_check import RelationCheck

MAX_FIELD_CHARS = 4096
MAX_RAW_OUTPUT_CHARS = 32768
MAX_WARNINGS = 64


def bounded(text: str | None, limit: int = MAX_FIELD_CHARS) -> str:
    """Cut a text to ``limit`` characters, marking the cut."""
    text = text or ""
    if len(text) <= limit:
        return text
    return text[: limit - 15] + " …[truncated]"


def scene_graph_message(
    header: Header,
    result: EngineResult,
    lifted: Sequence[Lifted3D | None] | None,
    no_3d_reason: str,
    checks: Sequence[RelationCheck] = (),
) -> SceneGraph:
    """Build the SceneGraph of one answer.

    Args:
        header: The source colour image's header.
        result: The engine's result (boxes already in source-image pixels).
        lifted: One 3D estimate per object (same order), or None when no depth was used.
        no_3d_reason: Why objects have no 3D when ``lifted`` is None.
        checks: The depth check of each relation (same order, from
            :func:`spatialthinker_ros.relation_check.verify_relations`); relations without one
            stay ``VERDICT_UNKNOWN`` with no evidence.

    Returns:
        The message.
    """
    graph = SceneGraph(header=header)
    for index, obj in enumerate(result.result.objects):
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
            item.no_3d_reason = bounded(estimate.reason if estimate is not None else no_3d_reason)
        if estimate is not None:
            item.valid_depth_pixels = int(estimate.valid_pixels)
            item.depth_fill = float(estimate.fill) if math.isfinite(estimate.fill) else 0.0
        graph.objects.append(item)
    for index, rel in enumerate(result.result.relations):
        relation = SceneRelation(
            subject=bounded(rel.subject, 256),
            predicate=bounded(rel.predicate, 256),
            object=bounded(rel.object, 256),
        )
        if index < len(checks):
            relation.verdict = int(checks[index].verdict)
            relation.evidence = bounded(checks[index].evidence, 1024)
        graph.relations.append(relation)
    return graph


def answer_message(
    header: Header,
    request_id: str,
    question: str,
    options: Sequence[str],
    result: EngineResult,
    graph: SceneGraph,
    extra_warnings: Sequence[str] = (),
    relations_contradicted: int = 0,
) -> SpatialAnswer:
    """Build the SpatialAnswer of one result (``relations_contradicted`` from the relations'
    depth check)."""
    parsed = result.result
    warnings = [bounded(w, 1024) for w in [*parsed.warnings, *extra_warnings][:MAX_WARNINGS]]
    width, height = result.model_image_size
    return SpatialAnswer(
        header=header,
        request_id=request_id,
        question=bounded(question),
        options=[bounded(o, 1024) for o in options],
        answer=bounded(parsed.answer),
        choice=parsed.choice or "",
        choice_index=-1 if parsed.choice_index is None else int(parsed.choice_index),
        observation=bounded(parsed.observation),
        reasoning=bounded(parsed.reasoning, MAX_RAW_OUTPUT_CHARS),
        scene_graph=graph,
        relations_contradicted=int(relations_contradicted),
        raw_output=bounded(result.raw_text, MAX_RAW_OUTPUT_CHARS),
        strict_format=bool(parsed.strict),
        warnings=warnings,
        model=bounded(result.model_name, 512),
        model_image_width=int(width),
        model_image_height=int(height),
        queue_wait_s=float(result.queue_wait_s),
        inference_s=float(result.inference_s),
        total_s=float(result.total_s),
    )
