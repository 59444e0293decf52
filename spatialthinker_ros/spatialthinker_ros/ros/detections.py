"""A scene graph as the standard ``vision_msgs`` detections (``Detection3DArray`` and
``Detection2DArray``), for the rest of a robot's perception stack: trackers, semantic mappers,
navigation layers and RViz's vision_msgs displays.

Both are made from the published ``SceneGraph`` message, so they hold exactly its numbers:

* ``Detection3DArray``, in the scene graph's frame (the target frame, or the camera's optical
  frame), stamped with the colour image's stamp: one detection per object with 3D; the box's
  centre, orientation and size as the scene graph has them. Objects without 3D are left out
  (their reason stays in ``SceneObject.no_3d_reason``).
* ``Detection2DArray``, in the image's frame (its boxes are pixels of that image), same stamp:
  one detection per object, the box's centre and size in pixels.

Each detection's ``id`` is the object's id and its one hypothesis has ``class_id`` = the label
and ``score`` = the probability the model gave to writing the object's id in its scene graph,
read from its own tokens (``core.confidence.object_probabilities``): a likelihood under the
model, not a calibrated probability that the object exists. NaN where it was not measured: a
backend or server that gives no token log-probabilities, or a scene graph published while the
answer is still being written (streaming).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from geometry_msgs.msg import Pose
from std_msgs.msg import Header
from vision_msgs.msg import (
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesisWithPose,
)

from spatialthinker_msgs.msg import SceneGraph

__all__ = ["detections_2d", "detections_3d"]


def _hypothesis(label: str, score: float, pose: Pose | None = None) -> ObjectHypothesisWithPose:
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = label
    hypothesis.hypothesis.score = float(score)
    if pose is not None:
        hypothesis.pose.pose = pose
    return hypothesis


def _score(scores: Sequence[float], index: int) -> float:
    return float(scores[index]) if index < len(scores) else math.nan


def detections_3d(graph: SceneGraph, scores: Sequence[float] = ()) -> Detection3DArray:
    """The scene graph's objects with 3D as a ``Detection3DArray`` (its frame and stamp).

    Args:
        graph: The published scene graph.
        scores: Per object (in the graph's order), the hypothesis score; NaN or missing: not
            measured.
    """
    array = Detection3DArray(header=graph.header)
    for index, obj in enumerate(graph.objects):
        if not obj.has_3d:
            continue
        pose = Pose(position=obj.center, orientation=obj.orientation)
        detection = Detection3D(header=graph.header, id=obj.id)
        detection.results = [_hypothesis(obj.label, _score(scores, index), pose)]
        detection.bbox.center = pose
        detection.bbox.size = obj.size
        array.detections.append(detection)
    return array


def detections_2d(
    graph: SceneGraph, image_header: Header, scores: Sequence[float] = ()
) -> Detection2DArray:
    """Every object of the scene graph as a ``Detection2DArray`` in the image's frame.

    Args:
        graph: The published scene graph (its boxes are pixels of the colour image).
        image_header: The colour image's header (its frame; the stamp is the graph's too).
        scores: As :func:`detections_3d`.
    """
    header = Header(stamp=graph.header.stamp, frame_id=image_header.frame_id)
    array = Detection2DArray(header=header)
    for index, obj in enumerate(graph.objects):
        detection = Detection2D(header=header, id=obj.id)
        detection.results = [_hypothesis(obj.label, _score(scores, index))]
        detection.bbox.center.position.x = (obj.x_min + obj.x_max) / 2.0
        detection.bbox.center.position.y = (obj.y_min + obj.y_max) / 2.0
        detection.bbox.size_x = float(obj.x_max - obj.x_min)
        detection.bbox.size_y = float(obj.y_max - obj.y_min)
        array.detections.append(detection)
    return array
