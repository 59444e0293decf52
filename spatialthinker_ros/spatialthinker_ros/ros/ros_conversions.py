"""Answers (:class:`~spatialthinker_ros.answering.pipeline.SceneAnswer`) into
spatialthinker_msgs messages.

Every text field published is length-bounded here, whatever the model wrote.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import Point, Quaternion, Vector3
from std_msgs.msg import Header

from spatialthinker_msgs.msg import SceneGraph, SceneObject, SceneRelation, SpatialAnswer
from spatialthinker_ros.answering.pipeline import SceneAnswer, SceneProgress
from spatialthinker_ros.core.annotate import confidence_text
from spatialthinker_ros.core.gravity import CAMERA_UP
from spatialthinker_ros.core.relation_check import VERTICAL_FAMILIES, normalise_predicate

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

    With a placement (a target frame) the 3D is in that frame: ``header.frame_id`` names it,
    centres, surfaces and up are transformed (all at once), and each box's orientation is the
    camera's rotation there (the box was measured along the camera's axes).

    Args:
        header: The source colour image's header.
        answer: The answer, or the scene graph of one still being written (boxes in
            source-image pixels).

    Returns:
        The message.
    """
    placement = answer.placement
    frame_id = header.frame_id if placement is None else placement.frame_id
    graph = SceneGraph(header=Header(stamp=header.stamp, frame_id=frame_id))
    lifted = answer.lifted
    points = _placed_points(answer)
    x, y, z, w = (0.0, 0.0, 0.0, 1.0) if placement is None else placement.transform.quaternion
    orientation = Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))
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
            cx, cy, cz = points[index, 0]
            sx, sy, sz = estimate.size
            item.has_3d = True
            item.center = Point(x=float(cx), y=float(cy), z=float(cz))
            if estimate.surface is not None:
                fx, fy, fz = points[index, 1]
                item.surface = Point(x=float(fx), y=float(fy), z=float(fz))
            item.size = Vector3(x=float(sx), y=float(sy), z=float(sz))
            item.orientation = orientation
            item.distance = float(np.linalg.norm(estimate.center))
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
    # All zero whenever the camera's -y stood for up (the message's contract), an estimate that
    # was unsure and fell back to it included.
    if up is not None and not (up.unsure and tuple(up.vector) == CAMERA_UP):
        vector = up.vector if placement is None else placement.transform.rotate(up.vector)
        graph.up = Vector3(x=float(vector[0]), y=float(vector[1]), z=float(vector[2]))
    if up is not None:
        graph.up_source = up.source
    elif any(
        normalise_predicate(rel.predicate) in VERTICAL_FAMILIES for rel in answer.parsed.relations
    ):
        graph.up_source = "camera"
    return graph


def _placed_points(answer: SceneAnswer | SceneProgress) -> np.ndarray:
    """Every object's ``(centre, surface)`` in the reported frame, ``(N, 2, 3)`` (NaN where an
    object has none): one transform for the whole answer."""
    lifted = answer.lifted or ()
    points = np.full((len(answer.parsed.objects), 2, 3), np.nan)
    for index, estimate in enumerate(lifted[: len(points)]):
        if estimate.has_3d:
            points[index, 0] = estimate.center
            if estimate.surface is not None:
                points[index, 1] = estimate.surface
    if answer.placement is not None and len(points):
        points = answer.placement.transform.apply(points.reshape(-1, 3)).reshape(points.shape)
    return points


def _finite(value: float, default: float = 0.0) -> float:
    """A number as a message field takes it: ``default`` for NaN or infinity."""
    return float(value) if math.isfinite(value) else default


def confidence_line(answer: SpatialAnswer) -> str | None:
    """The debug image's confidence line of an answer message (None for an open question)."""
    measured = answer.confidence_source == SpatialAnswer.CONFIDENCE_TOKENS
    return confidence_text(
        len(answer.options),
        list(answer.option_probabilities),
        float(answer.confidence) if measured else None,
        answer.choice,
        answer.confidence_note,
    )


def answer_message(header: Header, answer: SceneAnswer) -> SpatialAnswer:
    """The SpatialAnswer of one answer (its scene graph and confidence included)."""
    parsed, result, confidence = answer.parsed, answer.engine, answer.confidence
    width, height = result.model_image_size
    measured = confidence.measured
    return SpatialAnswer(
        header=header,
        request_id=bounded(answer.request_id, 256),
        question=bounded(answer.question),
        options=[bounded(o, 1024) for o in answer.options],
        answer=bounded(parsed.answer),
        choice=parsed.choice or "",
        choice_index=-1 if parsed.choice_index is None else int(parsed.choice_index),
        option_probabilities=[float(p) for p in confidence.option_probabilities]
        if measured
        else [],
        confidence=_finite(confidence.confidence) if measured else 0.0,
        confidence_source=(
            SpatialAnswer.CONFIDENCE_TOKENS if measured else SpatialAnswer.CONFIDENCE_UNAVAILABLE
        ),
        confidence_note="" if measured else bounded(confidence.note, 1024),
        option_mass=_finite(confidence.option_mass) if measured else 0.0,
        other_letters_mass=_finite(confidence.other_letters_mass) if measured else 0.0,
        answer_mean_logprob=_finite(confidence.answer_mean_logprob, math.nan),
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
        batch_size=int(result.batch_size),
        queue_wait_s=float(result.queue_wait_s),
        inference_s=float(result.inference_s),
        total_s=float(result.total_s),
        scene_s=float(answer.scene_s if math.isfinite(answer.scene_s) else result.total_s),
    )


def tag_camera(message: SpatialAnswer | SceneGraph, camera: str) -> None:
    """Name the camera an answer (or a scene graph) came from, on it, its scene graph and
    every object."""
    graph = message.scene_graph if isinstance(message, SpatialAnswer) else message
    if isinstance(message, SpatialAnswer):
        message.camera = camera
    graph.camera = camera
    for obj in graph.objects:
        obj.camera = camera


def combined_scene_graph(graphs: Sequence[tuple[str, SceneGraph]]) -> tuple[SceneGraph, str]:
    """Every camera's scene graph in one: objects and relations with their ids prefixed
    ``<camera>/`` and their camera named, in the frame they share.

    Args:
        graphs: ``(camera, its answer's scene graph)`` of every camera that answered.

    Returns:
        The combined graph (stamped with the newest of the graphs' stamps; empty when the
        graphs are in different frames) and why it is empty ("" when it is not).
    """
    combined = SceneGraph()
    if not graphs:
        return combined, ""
    frames = sorted({graph.header.frame_id for _, graph in graphs})
    if len(frames) > 1:
        return combined, (
            f"no combined scene graph: the cameras' answers are in different frames"
            f" ({', '.join(frames)}); ask with a target_frame (TF) they share"
        )
    newest = max(graphs, key=lambda item: (item[1].header.stamp.sec, item[1].header.stamp.nanosec))
    combined.header = copy.deepcopy(newest[1].header)

    def prefixed(camera: str, object_id: str) -> str:
        return bounded(f"{camera}/{object_id}" if camera else object_id, 256)

    for camera, graph in graphs:
        for obj in graph.objects:
            item = copy.deepcopy(obj)
            item.id, item.camera = prefixed(camera, obj.id), camera
            combined.objects.append(item)
        for relation in graph.relations:
            item = copy.deepcopy(relation)
            item.subject = prefixed(camera, relation.subject)
            item.object = prefixed(camera, relation.object)
            combined.relations.append(item)
    # Up is the scene's when every camera has it from TF (one gravity frame, one target frame).
    sources = {graph.up_source for _, graph in graphs}
    if len(sources) == 1 and next(iter(sources)).startswith("tf:"):
        combined.up, combined.up_source = copy.deepcopy(graphs[0][1].up), graphs[0][1].up_source
    return combined, ""
