"""What the node publishes about its answers: ``~/answer``, ``~/scene_graph``, ``~/markers`` and
``~/debug_image``.

The scene graph, the markers and the debug image are lifecycle publishers (ros2/demos' lifecycle
talker): only an active node sends them, and the lifecycle's activate/deactivate switches them.
``~/answer`` is a plain publisher because it also carries the failures of ``~/question``, which a
node answers in every state ("not active" is a reason, not silence). The markers and the debug
image are computed only while something subscribes.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from spatialthinker_msgs.msg import SceneGraph, SpatialAnswer
from spatialthinker_ros.core import images
from spatialthinker_ros.core.annotate import draw_annotations
from spatialthinker_ros.ros.markers import scene_graph_markers
from spatialthinker_ros.ros.ros_conversions import bounded, confidence_line


class NodeOutputs:
    """The node's answer outputs.

    Args:
        node: The lifecycle node the publishers belong to.
    """

    def __init__(self, node: LifecycleNode) -> None:
        self._logger = node.get_logger()
        self._answer_pub = node.create_publisher(SpatialAnswer, "~/answer", 10)
        self._graph_pub = node.create_lifecycle_publisher(SceneGraph, "~/scene_graph", 10)
        self._markers_pub = node.create_lifecycle_publisher(MarkerArray, "~/markers", 10)
        self._debug_pub = node.create_lifecycle_publisher(Image, "~/debug_image", 2)

    def answer(
        self, answer: SpatialAnswer, rgb: np.ndarray | None, question: str, header: Header
    ) -> None:
        """Publish one answer: its scene graph, the answer, and (while watched) the markers and
        the debug image drawn on ``rgb``, the request's colour frame."""
        self._graph_pub.publish(answer.scene_graph)
        self._answer_pub.publish(answer)
        if self._markers_pub.get_subscription_count() > 0:
            self._markers_pub.publish(scene_graph_markers(answer.scene_graph))
        if self._debug_pub.get_subscription_count() > 0 and rgb is not None:
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
            self._debug_pub.publish(images.numpy_to_image(annotated, "rgb8", header))

    def scene_graph(self, graph: SceneGraph) -> None:
        """Publish a scene graph ahead of its answer (streaming, at ``</scene>``)."""
        self._graph_pub.publish(graph)

    def failure(self, question: str, reason: str, stamp: Time) -> None:
        """A ``~/question`` that failed: said on ``~/answer`` as a warning, and in the log."""
        self._logger.warning(f"question failed: {reason}")
        answer = SpatialAnswer(question=bounded(question), choice_index=-1)
        answer.warnings = [bounded(f"request failed: {reason}", 1024)]
        answer.header.stamp = stamp
        self._answer_pub.publish(answer)
