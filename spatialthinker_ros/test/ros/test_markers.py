"""scene_graph_markers turns real SceneGraph messages into a clean, replaceable MarkerArray."""

from __future__ import annotations

import math

import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from spatialthinker_msgs.msg import SceneGraph, SceneObject, SceneRelation
from spatialthinker_ros.core.annotate import label_colour
from spatialthinker_ros.ros.markers import (
    EVIDENCE_LINES,
    MAX_TEXT_CHARS,
    UP_ARROW_M,
    VERDICT_COLOURS,
    scene_graph_markers,
)

FRAME = "camera_color_optical_frame"


def _object(
    object_id: str,
    center: tuple[float, float, float] | None = None,
    size: tuple[float, float, float] = (0.1, 0.2, 0.3),
) -> SceneObject:
    obj = SceneObject(id=object_id, label=object_id.split(".")[0].replace("_", " "))
    if center is None:
        obj.has_3d = False
        obj.no_3d_reason = "too few valid depth pixels"
    else:
        obj.has_3d = True
        obj.center = Point(x=center[0], y=center[1], z=center[2])
        obj.size = Vector3(x=size[0], y=size[1], z=size[2])
    return obj


def _graph(objects: list[SceneObject], relations: list[tuple[str, str, str]]) -> SceneGraph:
    return SceneGraph(
        header=Header(frame_id=FRAME, stamp=Time(sec=1234, nanosec=5678)),
        objects=objects,
        relations=[SceneRelation(subject=s, predicate=p, object=o) for s, p, o in relations],
    )


@pytest.fixture
def graph() -> SceneGraph:
    return _graph(
        [
            _object("cup.1", (0.1, 0.2, 1.0), (0.08, 0.1, 0.08)),
            _object("table.1", (0.0, 0.5, 2.0), (1.2, 0.05, 0.8)),
            _object("lamp.1"),  # no 3D
        ],
        [
            ("cup.1", "on", "table.1"),
            ("lamp.1", "behind", "cup.1"),  # subject without 3D
            ("cup.1", "left of", "ghost.7"),  # object the model never listed
        ],
    )


def _of_type(markers: list[Marker], marker_type: int) -> list[Marker]:
    return [m for m in markers if m.action == Marker.ADD and m.type == marker_type]


def test_first_marker_deletes_everything_and_only_first(graph: SceneGraph) -> None:
    markers = scene_graph_markers(graph).markers
    assert markers[0].action == Marker.DELETEALL
    assert all(m.action == Marker.ADD for m in markers[1:])


def test_empty_graph_still_clears_old_markers() -> None:
    markers = scene_graph_markers(_graph([], [])).markers
    assert len(markers) == 1
    assert markers[0].action == Marker.DELETEALL
    assert markers[0].header.frame_id == FRAME


def test_one_cube_per_3d_object_with_pose_and_scale(graph: SceneGraph) -> None:
    cubes = _of_type(scene_graph_markers(graph).markers, Marker.CUBE)
    assert len(cubes) == 2  # lamp.1 has no 3D
    cup, table = cubes
    assert (cup.pose.position.x, cup.pose.position.y, cup.pose.position.z) == pytest.approx(
        (0.1, 0.2, 1.0)
    )
    assert (cup.scale.x, cup.scale.y, cup.scale.z) == pytest.approx((0.08, 0.1, 0.08))
    assert (table.pose.position.z, table.scale.x) == pytest.approx((2.0, 1.2))
    for cube in cubes:
        assert cube.pose.orientation.w == 1.0
        assert 0.0 < cube.color.a < 1.0  # semi-transparent


def test_cube_colour_comes_from_the_shared_label_palette(graph: SceneGraph) -> None:
    cup = _of_type(scene_graph_markers(graph).markers, Marker.CUBE)[0]
    r, g, b = label_colour("cup")
    assert (cup.color.r, cup.color.g, cup.color.b) == pytest.approx((r / 255, g / 255, b / 255))
    # Same label in another graph and another call: same colour (no per-process salt).
    again = scene_graph_markers(_graph([_object("cup.2", (0, 0, 1))], [])).markers
    assert _of_type(again, Marker.CUBE)[0].color == cup.color


def test_labels_name_id_and_distance_above_the_box(graph: SceneGraph) -> None:
    texts = _of_type(scene_graph_markers(graph, text_height=0.07).markers, Marker.TEXT_VIEW_FACING)
    cup_label = next(t for t in texts if t.text.startswith("cup.1"))
    assert cup_label.text == f"cup.1 {math.sqrt(0.1**2 + 0.2**2 + 1.0**2):.2f} m"
    assert cup_label.scale.z == pytest.approx(0.07)
    # Optical frame: -y is up, so the label sits above the top face of the box.
    assert cup_label.pose.position.y < 0.2 - 0.1 / 2
    assert not any(t.text.startswith("lamp.1") for t in texts)


def test_relation_edges_only_between_3d_objects(graph: SceneGraph) -> None:
    markers = scene_graph_markers(graph, line_width=0.02).markers
    edges = _of_type(markers, Marker.LINE_LIST)
    assert len(edges) == 1
    (edge,) = edges
    flat = [v for p in edge.points for v in (p.x, p.y, p.z)]
    assert flat == pytest.approx([0.1, 0.2, 1.0, 0.0, 0.5, 2.0])
    assert edge.scale.x == pytest.approx(0.02)
    predicates = [
        t for t in _of_type(markers, Marker.TEXT_VIEW_FACING) if not t.text.endswith(" m")
    ]
    assert [t.text for t in predicates] == ["on"]
    mid = predicates[0].pose.position
    assert (mid.x, mid.y, mid.z) == pytest.approx((0.05, 0.35, 1.5))


def test_every_marker_carries_the_graph_header_and_persists(graph: SceneGraph) -> None:
    for marker in scene_graph_markers(graph).markers:
        assert marker.header.frame_id == FRAME
        assert (marker.header.stamp.sec, marker.header.stamp.nanosec) == (1234, 5678)
        assert (marker.lifetime.sec, marker.lifetime.nanosec) == (0, 0)
        assert marker.frame_locked is False


def test_namespace_and_ids_unique(graph: SceneGraph) -> None:
    markers = scene_graph_markers(graph, namespace="cam_left").markers
    keys = [(m.ns, m.id) for m in markers]
    assert len(keys) == len(set(keys))
    assert {m.ns for m in markers} == {"cam_left"}
    # cube + label per 3D object, edge + predicate per drawable relation, plus DELETEALL
    assert len(markers) == 1 + 2 * 2 + 2 * 1


def test_texts_are_length_bounded() -> None:
    long_id = "x" * 500 + ".1"
    graph = _graph(
        [_object(long_id, (0, 0, 1)), _object("b.1", (1, 0, 1))],
        [(long_id, "very " * 200 + "far", "b.1")],
    )
    texts = _of_type(scene_graph_markers(graph).markers, Marker.TEXT_VIEW_FACING)
    assert len(texts) == 3
    for text in texts:
        assert 0 < len(text.text) <= MAX_TEXT_CHARS
    # The distance survives the cut: it is the informative part.
    assert any(t.text.endswith(" 1.00 m") and t.text.startswith("xxx") for t in texts)


def test_non_finite_or_degenerate_3d_is_not_sent_to_rviz() -> None:
    broken = _object("bad.1", (math.nan, 0, 1))
    flat = _object("flat.1", (0, 0, 1), size=(0.2, 0.0, 0.2))
    markers = scene_graph_markers(_graph([broken, flat], [("bad.1", "near", "flat.1")])).markers
    cubes = _of_type(markers, Marker.CUBE)
    assert len(cubes) == 1
    assert cubes[0].scale.y > 0.0  # RViz rejects zero scales
    assert not _of_type(markers, Marker.LINE_LIST)


def _verdict_graph() -> SceneGraph:
    graph = _graph(
        [_object("cup.1", (0.1, 0.2, 1.0)), _object("box.1", (0.5, 0.2, 2.0))],
        [
            ("cup.1", "in front of", "box.1"),
            ("box.1", "in front of", "cup.1"),
            ("cup.1", "near", "box.1"),
        ],
    )
    evidence = [
        "cup.1's front is 1.00 m nearer the camera than box.1's (front surfaces at z 0.85 / "
        "1.85 m, margin 0.04 m)",
        "box.1's front is 1.00 m farther from the camera than cup.1's (front surfaces at z "
        "1.85 / 0.85 m, margin 0.04 m)",
        "neither near nor far: cup.1 and box.1 are 0.62 m apart (near up to 0.15 m, far from "
        "0.60 m, margin 0.04 m)",
    ]
    verdicts = [
        SceneRelation.VERDICT_CONSISTENT,
        SceneRelation.VERDICT_CONTRADICTED,
        SceneRelation.VERDICT_UNKNOWN,
    ]
    for relation, verdict, text in zip(graph.relations, verdicts, evidence, strict=True):
        relation.verdict, relation.evidence = verdict, text
    return graph


def test_relation_edges_are_coloured_by_verdict() -> None:
    markers = scene_graph_markers(_verdict_graph()).markers
    edges = _of_type(markers, Marker.LINE_LIST)
    colours = [(e.color.r, e.color.g, e.color.b) for e in edges]
    expected = [
        VERDICT_COLOURS[SceneRelation.VERDICT_CONSISTENT],  # green
        VERDICT_COLOURS[SceneRelation.VERDICT_CONTRADICTED],  # red
        VERDICT_COLOURS[SceneRelation.VERDICT_UNKNOWN],  # grey
    ]
    assert [v for c in colours for v in c] == pytest.approx([v for c in expected for v in c])
    green, red, grey = expected
    assert green[1] > max(green[0], green[2]) and red[0] > max(red[1], red[2])
    assert grey[0] == grey[1] == grey[2]


def test_relation_labels_carry_verdict_and_evidence() -> None:
    texts = [
        t.text
        for t in _of_type(scene_graph_markers(_verdict_graph()).markers, Marker.TEXT_VIEW_FACING)
        if not t.text.endswith(" m")
    ]
    assert len(texts) == 3
    head, *evidence = texts[1].split("\n")
    assert head == "in front of [contradicted]"
    # The evidence's sentence, wrapped; its numbers in parentheses stay in the message.
    assert " ".join(evidence) == "box.1's front is 1.00 m farther from the camera than cup.1's"
    assert texts[0].startswith("in front of [consistent]\ncup.1's front is 1.00 m nearer")
    assert texts[2].startswith("near [unknown]\nneither near nor far")
    for text in texts:
        lines = text.split("\n")
        assert len(lines) <= 1 + EVIDENCE_LINES
        assert all(0 < len(line) <= MAX_TEXT_CHARS for line in lines)


def test_unknown_verdict_values_draw_grey() -> None:
    graph = _verdict_graph()
    graph.relations[0].verdict = 77  # a newer message version's value
    (edge, *_) = _of_type(scene_graph_markers(graph).markers, Marker.LINE_LIST)
    colour = [edge.color.r, edge.color.g, edge.color.b]
    assert colour == pytest.approx(list(VERDICT_COLOURS[SceneRelation.VERDICT_UNKNOWN]))


def test_the_up_direction_is_an_arrow_from_the_objects_middle(graph: SceneGraph) -> None:
    # No up (the camera's -y stood for it): no arrow.
    assert not [m for m in scene_graph_markers(graph).markers if m.type == Marker.ARROW]
    graph.up = Vector3(x=0.0, y=-0.8, z=-0.6)  # a camera pitched ~37 deg down
    (arrow,) = [m for m in scene_graph_markers(graph).markers if m.type == Marker.ARROW]
    start, tip = arrow.points
    # The middle of the objects with 3D (cup.1 and table.1).
    assert (start.x, start.y, start.z) == pytest.approx((0.05, 0.35, 1.5))
    assert (tip.x - start.x, tip.y - start.y, tip.z - start.z) == pytest.approx(
        (0.0, -0.8 * UP_ARROW_M, -0.6 * UP_ARROW_M)
    )
    assert arrow.header.frame_id == FRAME and arrow.action == Marker.ADD
