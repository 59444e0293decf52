"""What the node publishes about its answers: ``~/answer``, ``~/scene_graph``, ``~/markers``,
``~/debug_image``, and the standard ``~/detections_3d`` and ``~/detections_2d`` (``vision_msgs``,
see ``ros/detections``).

The scene graph, the markers and the debug image are lifecycle publishers (ros2/demos' lifecycle
talker): only an active node sends them, and the lifecycle's activate/deactivate switches them.
``~/answer`` is a plain publisher because it also carries the failures of ``~/question``, which a
node answers in every state ("not active" is a reason, not silence). The markers, the debug
image and the detections are computed only while something subscribes; each detections output
has its off switch (``detections.publish_3d``, ``detections.publish_2d``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from spatialthinker_msgs.msg import SceneGraph, SpatialAnswer
from spatialthinker_ros.core import images
from spatialthinker_ros.core.annotate import draw_annotations
from spatialthinker_ros.ros.detections import detections_2d, detections_3d
from spatialthinker_ros.ros.markers import scene_graph_markers
from spatialthinker_ros.ros.ros_conversions import bounded, confidence_line


class NodeOutputs:
    """The node's answer outputs.

    Args:
        node: The lifecycle node the publishers belong to.
        switch: The value of a boolean parameter (the detections' off switches), read at each
            answer so that a runtime change applies to the next one.
        cameras: The node's named cameras: each gets its own markers and debug image
            (``~/<camera>/markers``, ``~/<camera>/debug_image``); none: ``~/markers`` and
            ``~/debug_image``.
    """

    def __init__(
        self, node: LifecycleNode, switch: Callable[[str], bool], cameras: Sequence[str] = ()
    ) -> None:
        self._logger = node.get_logger()
        self._switch = switch
        self._answer_pub = node.create_publisher(SpatialAnswer, "~/answer", 10)
        self._graph_pub = node.create_lifecycle_publisher(SceneGraph, "~/scene_graph", 10)
        # Per camera: each answer's markers replace the last ones (DELETEALL first), which must
        # not wipe another camera's.
        if cameras:
            self._markers_pubs = {
                camera: node.create_lifecycle_publisher(MarkerArray, f"~/{camera}/markers", 10)
                for camera in cameras
            }
            self._debug_pubs = {
                camera: node.create_lifecycle_publisher(Image, f"~/{camera}/debug_image", 2)
                for camera in cameras
            }
        else:
            self._markers_pubs = {"": node.create_lifecycle_publisher(MarkerArray, "~/markers", 10)}
            self._debug_pubs = {"": node.create_lifecycle_publisher(Image, "~/debug_image", 2)}
        self._detections_3d_pub = node.create_lifecycle_publisher(
            Detection3DArray, "~/detections_3d", 10
        )
        self._detections_2d_pub = node.create_lifecycle_publisher(
            Detection2DArray, "~/detections_2d", 10
        )

    def answer(
        self,
        answer: SpatialAnswer,
        rgb: np.ndarray | None,
        question: str,
        header: Header,
        object_scores: Sequence[float] = (),
        camera: str = "",
    ) -> None:
        """Publish one answer: its scene graph, the answer, and (while watched) the detections,
        the markers and the debug image drawn on ``rgb``, the request's colour frame.
        ``object_scores`` are the detections' scores (``EngineResult.object_scores``); the
        markers and the debug image go to ``camera``'s."""
        self._graph_pub.publish(answer.scene_graph)
        self._answer_pub.publish(answer)
        self.detections(answer.scene_graph, header, object_scores)
        markers_pub = self._markers_pubs.get(camera) or next(iter(self._markers_pubs.values()))
        debug_pub = self._debug_pubs.get(camera) or next(iter(self._debug_pubs.values()))
        if markers_pub.get_subscription_count() > 0:
            markers_pub.publish(scene_graph_markers(answer.scene_graph))
        if debug_pub.get_subscription_count() > 0 and rgb is not None:
            objects = []
            for o in answer.scene_graph.objects:
                distance = float(np.linalg.norm([o.center.x, o.center.y, o.center.z]))
                label = f"{distance:.2f} m" if o.has_3d else None
                objects.append((o.id, (o.x_min, o.y_min, o.x_max, o.y_max), label))
            annotated = draw_annotations(
                rgb,
                objects,
                answer=answer.answer or None,
                question=question,
                confidence=confidence_line(answer),
            )
            debug_pub.publish(images.numpy_to_image(annotated, "rgb8", header))

    def scene_graph(self, graph: SceneGraph, header: Header) -> None:
        """Publish a scene graph ahead of its answer (streaming, at ``</scene>``), with its
        detections (scores not measured yet: NaN). ``header``: the colour image's."""
        self._graph_pub.publish(graph)
        self.detections(graph, header)

    def detections(
        self, graph: SceneGraph, header: Header, object_scores: Sequence[float] = ()
    ) -> None:
        """The scene graph as ``vision_msgs`` detections, on each output that is switched on and
        watched."""
        if (
            self._switch("detections.publish_3d")
            and self._detections_3d_pub.get_subscription_count() > 0
        ):
            self._detections_3d_pub.publish(detections_3d(graph, object_scores))
        if (
            self._switch("detections.publish_2d")
            and self._detections_2d_pub.get_subscription_count() > 0
        ):
            self._detections_2d_pub.publish(detections_2d(graph, header, object_scores))

    def failure(self, question: str, reason: str, stamp: Time) -> None:
        """A ``~/question`` that failed: said on ``~/answer`` as a warning, and in the log."""
        self._logger.warning(f"question failed: {reason}")
        answer = SpatialAnswer(question=bounded(question), choice_index=-1)
        answer.warnings = [bounded(f"request failed: {reason}", 1024)]
        answer.header.stamp = stamp
        self._answer_pub.publish(answer)
