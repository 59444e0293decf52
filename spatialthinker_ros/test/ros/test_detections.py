"""The scene graph as vision_msgs detections (``ros/detections``)."""

from __future__ import annotations

import math

import pytest
from geometry_msgs.msg import Point, Quaternion, Vector3
from std_msgs.msg import Header

from spatialthinker_msgs.msg import SceneGraph, SceneObject
from spatialthinker_ros.ros.answer_json import message_to_json
from spatialthinker_ros.ros.detections import detections_2d, detections_3d


def _graph() -> SceneGraph:
    """Three objects in odom (a target frame), the second without 3D."""
    graph = SceneGraph()
    graph.header.frame_id = "odom"
    graph.header.stamp.sec, graph.header.stamp.nanosec = 1700000000, 250_000_000
    turned = Quaternion(x=0.0, y=0.2588190451, z=0.0, w=0.9659258263)
    for index, (label, has_3d) in enumerate((("cup", True), ("shelf", False), ("mug", True))):
        obj = SceneObject(id=f"{label}.1", label=label, has_3d=has_3d)
        obj.x_min, obj.y_min = 10.0 + index, 20.0 + 2 * index
        obj.x_max, obj.y_max = 110.5 + index, 60.0 + 3 * index
        if has_3d:
            obj.center = Point(x=1.0 + index, y=-0.5, z=0.75)
            obj.size = Vector3(x=0.1, y=0.2, z=0.3 + index)
            obj.orientation = turned
        else:
            obj.no_3d_reason = "too few valid depth pixels"
        graph.objects.append(obj)
    return graph


def test_3d_detections_are_the_objects_with_3d_as_the_scene_graph_has_them() -> None:
    graph = _graph()
    array = detections_3d(graph, (0.9, 0.5, float("nan")))
    assert array.header == graph.header
    assert [d.id for d in array.detections] == ["cup.1", "mug.1"]  # the shelf has no 3D
    for detection, obj, score in zip(
        array.detections, graph.objects[::2], (0.9, math.nan), strict=True
    ):
        assert detection.header == graph.header
        (hypothesis,) = detection.results
        assert hypothesis.hypothesis.class_id == obj.label
        assert hypothesis.hypothesis.score == pytest.approx(score, nan_ok=True)
        assert detection.bbox.center.position == obj.center
        assert detection.bbox.center.orientation == obj.orientation
        assert detection.bbox.size == obj.size
        assert hypothesis.pose.pose == detection.bbox.center


def test_2d_detections_are_every_object_in_the_images_frame() -> None:
    graph = _graph()
    image = Header(stamp=graph.header.stamp, frame_id="camera_color_optical_frame")
    array = detections_2d(graph, image, (0.9, 0.5))
    assert array.header.frame_id == "camera_color_optical_frame"
    assert array.header.stamp == graph.header.stamp
    assert [d.id for d in array.detections] == ["cup.1", "shelf.1", "mug.1"]
    for detection, obj in zip(array.detections, graph.objects, strict=True):
        assert detection.bbox.center.position.x == pytest.approx((obj.x_min + obj.x_max) / 2)
        assert detection.bbox.center.position.y == pytest.approx((obj.y_min + obj.y_max) / 2)
        assert detection.bbox.size_x == pytest.approx(obj.x_max - obj.x_min)
        assert detection.bbox.size_y == pytest.approx(obj.y_max - obj.y_min)
    scores = [d.results[0].hypothesis.score for d in array.detections]
    assert scores[:2] == [0.9, 0.5] and math.isnan(scores[2])  # a missing score: not measured


def test_detections_as_json_keep_the_message_field_names() -> None:
    data = message_to_json(detections_3d(_graph(), (0.9, 0.5, float("nan"))))
    assert data["header"]["frame_id"] == "odom"
    first, second = data["detections"]
    assert first["id"] == "cup.1"
    assert first["results"][0]["hypothesis"] == {"class_id": "cup", "score": 0.9}
    assert first["bbox"]["size"] == {"x": 0.1, "y": 0.2, "z": 0.3}
    assert len(first["results"][0]["pose"]["covariance"]) == 36
    assert second["results"][0]["hypothesis"]["score"] is None  # NaN: strict JSON's null
