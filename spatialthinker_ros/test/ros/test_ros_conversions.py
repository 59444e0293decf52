"""Answers into messages (ros/ros_conversions.py) with a target frame: every 3D value of the scene
graph, the markers and the JSON follows the placement; the camera frame stays as it was."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from scipy.spatial.transform import Rotation
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from spatialthinker_msgs.msg import SceneGraph, SceneObject, SceneRelation
from spatialthinker_ros.answering.pipeline import SceneAnswer
from spatialthinker_ros.core.engine import EngineResult
from spatialthinker_ros.core.gravity import tf_up
from spatialthinker_ros.core.lifting import Lifted3D
from spatialthinker_ros.core.parsing import parse_output
from spatialthinker_ros.core.relation_check import verify_relations
from spatialthinker_ros.core.transforms import Placement, RigidTransform
from spatialthinker_ros.ros.answer_json import answer_to_json
from spatialthinker_ros.ros.markers import scene_graph_markers
from spatialthinker_ros.ros.ros_conversions import (
    answer_message,
    combined_scene_graph,
    scene_graph_message,
    tag_camera,
)

TEXT = (
    "<observe>a mug and a box</observe><scene>{'objects': ["
    "{'id': 'mug.1', 'bbox': [100, 100, 160, 160]}, {'id': 'box.1', 'bbox': [300, 200, 400, 300]},"
    " {'id': 'ghost.1', 'bbox': [0, 0, 10, 10]}],"
    " 'relationships': [{'subject': 'mug.1', 'predicate': 'above', 'object': 'box.1'}]}</scene>"
    "<think>.</think><answer>(A) yes</answer>"
)
HEADER = Header(stamp=Time(sec=12, nanosec=500_000_000), frame_id="camera_optical")
# The camera 1.2 m up, pitched 30 deg down, 2 m along base_link's x (REP 103 optical axes).
CAMERA_IN_BASE = RigidTransform.from_xyz_quat(
    (2.0, 0.0, 1.2),
    (
        Rotation.from_euler("y", 30, degrees=True)
        * Rotation.from_euler("ZX", [-90, -90], degrees=True)
    ).as_quat(),
)


def _answer(placement: Placement | None) -> SceneAnswer:
    parsed = parse_output(TEXT, image_size=(640, 480), options=["yes", "no"])
    lifted = (
        Lifted3D((-0.4, -0.2, 1.0), (0.1, 0.1, 0.1), 200, 0.9, "", 0.95, (-0.4, -0.2, 0.95)),
        Lifted3D((0.3, 0.1, 2.0), (0.4, 0.3, 0.4), 900, 0.8, "", 1.8, (0.3, 0.1, 1.8)),
        Lifted3D(None, None, 0, 0.0, "too few valid depth pixels"),
    )
    up = tf_up(CAMERA_IN_BASE.inverse().rotate(np.array([0.0, 0.0, 1.0])), "base_link")
    result = EngineResult(1, parsed, TEXT, (640, 480), (640, 480), 0, 0, 0, 0, 0, "m")
    return SceneAnswer(
        request_id="r",
        question="Is the mug above the box?",
        options=("yes", "no"),
        engine=result,
        lifted=lifted,
        no_3d_reason="",
        relations=verify_relations(parsed, lifted, up),
        placement=placement,
    )


def _xyz(p) -> np.ndarray:
    return np.array([p.x, p.y, p.z])


def test_the_camera_frame_is_the_default_and_boxes_are_axis_aligned_there() -> None:
    graph = scene_graph_message(HEADER, _answer(None))
    assert graph.header.frame_id == "camera_optical" and graph.header.stamp == HEADER.stamp
    mug, _box, ghost = graph.objects
    assert _xyz(mug.center) == pytest.approx([-0.4, -0.2, 1.0])
    assert (mug.orientation.x, mug.orientation.y, mug.orientation.z, mug.orientation.w) == (
        0.0,
        0.0,
        0.0,
        1.0,
    )
    assert mug.distance == pytest.approx(np.linalg.norm([-0.4, -0.2, 1.0]))
    assert not ghost.has_3d and ghost.no_3d_reason == "too few valid depth pixels"
    assert graph.up_source == "tf:base_link"
    assert _xyz(graph.up) == pytest.approx(CAMERA_IN_BASE.inverse().rotate([0.0, 0.0, 1.0]))


def test_a_target_frame_moves_every_3d_value_and_turns_the_boxes() -> None:
    camera = scene_graph_message(HEADER, _answer(None))
    placed = scene_graph_message(HEADER, _answer(Placement("base_link", CAMERA_IN_BASE)))
    assert placed.header.frame_id == "base_link" and placed.header.stamp == HEADER.stamp
    for before, after in zip(camera.objects[:2], placed.objects[:2], strict=True):
        assert _xyz(after.center) == pytest.approx(CAMERA_IN_BASE.apply(_xyz(before.center)))
        assert _xyz(after.surface) == pytest.approx(CAMERA_IN_BASE.apply(_xyz(before.surface)))
        assert _xyz(after.size) == pytest.approx(_xyz(before.size))  # along the box's own axes
        q = after.orientation
        assert Rotation.from_quat([q.x, q.y, q.z, q.w]).approx_equal(CAMERA_IN_BASE.rotation)
        assert after.distance == pytest.approx(before.distance)  # from the camera, any frame
    # The mug (0.3 m nearer, higher in the image) is above the box along base_link's z.
    mug, box = placed.objects[:2]
    assert mug.center.z > box.center.z
    # Up is base_link's z, exactly.
    assert _xyz(placed.up) == pytest.approx([0.0, 0.0, 1.0], abs=1e-9)
    assert not placed.objects[2].has_3d


def test_markers_and_json_follow_the_target_frame() -> None:
    answer = _answer(Placement("odom", CAMERA_IN_BASE))
    message = answer_message(HEADER, answer)
    assert message.header.frame_id == "camera_optical"  # the image's own header
    markers = scene_graph_markers(message.scene_graph)
    assert {m.header.frame_id for m in markers.markers if m.action == Marker.ADD} == {"odom"}
    cubes = [m for m in markers.markers if m.type == Marker.CUBE and m.action == Marker.ADD]
    assert len(cubes) == 2
    for cube in cubes:
        q = cube.pose.orientation
        assert Rotation.from_quat([q.x, q.y, q.z, q.w]).approx_equal(CAMERA_IN_BASE.rotation)
    labels = [m for m in markers.markers if m.type == Marker.TEXT_VIEW_FACING and "m" in m.text]
    assert any(f"{np.linalg.norm([-0.4, -0.2, 1.0]):.2f} m" in m.text for m in labels)
    data = answer_to_json(message)
    assert data["frame_id"] == "odom" and data["image_frame_id"] == "camera_optical"
    assert data["up_source"] == "tf:base_link"
    mug = data["objects"][0]
    assert mug["center"] == pytest.approx(list(CAMERA_IN_BASE.apply([-0.4, -0.2, 1.0])), abs=1e-3)
    assert mug["distance"] == pytest.approx(np.linalg.norm([-0.4, -0.2, 1.0]), abs=1e-3)


def _camera_graph(camera: str, frame: str, sec: int, ids: list[str]) -> SceneGraph:
    graph = SceneGraph()
    graph.header.frame_id, graph.header.stamp.sec = frame, sec
    for index, object_id in enumerate(ids):
        obj = SceneObject(id=object_id, label=object_id.split(".")[0], has_3d=True)
        obj.center.x = float(index)
        graph.objects.append(obj)
    graph.relations.append(SceneRelation(subject=ids[0], predicate="left of", object=ids[-1]))
    graph.up_source = "tf:base_link"
    graph.up.z = 1.0
    tag_camera(graph, camera)
    return graph


def test_every_cameras_objects_in_one_scene_graph() -> None:
    front = _camera_graph("front", "base_link", 10, ["cup.1", "mug.1"])
    wrist = _camera_graph("wrist", "base_link", 12, ["cup.1"])
    combined, note = combined_scene_graph([("front", front), ("wrist", wrist)])
    assert note == ""
    assert combined.header.frame_id == "base_link" and combined.header.stamp.sec == 12
    assert [(o.id, o.camera) for o in combined.objects] == [
        ("front/cup.1", "front"),
        ("front/mug.1", "front"),
        ("wrist/cup.1", "wrist"),
    ]
    assert [(r.subject, r.object) for r in combined.relations] == [
        ("front/cup.1", "front/mug.1"),
        ("wrist/cup.1", "wrist/cup.1"),
    ]
    assert combined.up_source == "tf:base_link" and combined.up.z == 1.0
    # The inputs are left as they were.
    assert [o.id for o in front.objects] == ["cup.1", "mug.1"]
    # Different frames: no common frame to put them in, and that is said.
    optical = _camera_graph("wrist", "wrist_optical", 12, ["cup.1"])
    combined, note = combined_scene_graph([("front", front), ("wrist", optical)])
    assert not combined.objects and "different frames" in note and "target_frame" in note
