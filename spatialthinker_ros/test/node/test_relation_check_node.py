"""Depth-verified relations through the running node (openai backend, scripted server).

The scripted model makes claims about the demo scene, whose layout is known: the small red box
(x -0.02, front at z 0.51 m) is nearest, the green box (x -0.45, front at z 1.37 m) is to the left,
the white pillar (x +0.56, y -0.45..+0.15, front at z 1.77 m) to the right. The node must publish
every relation with the verdict and evidence the layout implies, count the contradicted ones,
warn about the one its reasoning relies on, leave its choice alone, colour the RViz edges and
count contradictions in /diagnostics.
"""

from __future__ import annotations

import re

import pytest
from node_harness import DEMO_SCENE, SCRIPTED_OBJECTS, openai_params, running_node, scripted_reply
from visualization_msgs.msg import Marker

from spatialthinker_msgs.msg import SceneRelation
from spatialthinker_ros.ros.markers import VERDICT_COLOURS

C = SceneRelation.VERDICT_CONSISTENT
X = SceneRelation.VERDICT_CONTRADICTED
U = SceneRelation.VERDICT_UNKNOWN

CLAIMS = (
    ("red_box.1", "in front of", "green_box.1"),  # true
    ("green_box.1", "is in front of", "red_box.1"),  # false, and the reasoning says it
    ("green_box.1", "to the left of", "white_pillar.1"),  # true
    ("white_pillar.1", "left of", "green_box.1"),  # false, the reasoning never names it
    ("red_box.1", "above", "white_pillar.1"),  # the pillar spans the red box's height
    ("red_box.1", "holding", "green_box.1"),  # not a spatial relation
)
THINK = "The green box is in front of the red box, so the red box is behind it."
RED = DEMO_SCENE.objects[SCRIPTED_OBJECTS["red_box.1"]]
GREEN = DEMO_SCENE.objects[SCRIPTED_OBJECTS["green_box.1"]]
PILLAR = DEMO_SCENE.objects[SCRIPTED_OBJECTS["white_pillar.1"]]


def _front(obj) -> float:
    return obj.center[2] - obj.size[2] / 2


# Per claim: the verdict, the evidence's sentence (its number captured) and the true value of
# that number from the scene's layout.
FRONTS = _front(GREEN) - _front(RED)
ACROSS = PILLAR.center[0] - GREEN.center[0]
EXPECTED = [
    (C, r"red_box\.1's front is (\d+\.\d+) m nearer the camera than green_box\.1's", FRONTS),
    (X, r"green_box\.1's front is (\d+\.\d+) m farther from the camera than red_box\.1's", FRONTS),
    (C, r"green_box\.1 is (\d+\.\d+) m left of white_pillar\.1", ACROSS),
    (X, r"white_pillar\.1 is (\d+\.\d+) m right of green_box\.1", ACROSS),
    (
        U,
        r"extents overlap along y: red_box\.1 is (\d+\.\d+) m lower than white_pillar\.1",
        RED.center[1] - PILLAR.center[1],
    ),
    (U, r"predicate 'holding' is not a spatial relation()", None),
]


@pytest.fixture(scope="module")
def node(server, rig):
    with running_node(
        rig,
        openai_params(server.base_url, {"model": "spatialthinker-test", "openai.max_in_flight": 1}),
    ) as process:
        yield process


def _check_relations(relations) -> None:
    assert [(r.subject, r.predicate, r.object) for r in relations] == list(CLAIMS)
    for relation, (verdict, pattern, truth) in zip(relations, EXPECTED, strict=True):
        assert relation.verdict == verdict, relation
        match = re.match(pattern, relation.evidence)
        assert match, relation.evidence
        if truth is not None:
            assert float(match[1]) == pytest.approx(truth, abs=0.05), relation.evidence


def test_published_relations_carry_verdicts_evidence_and_warnings(node, rig, server) -> None:
    server.add_replies(scripted_reply(DEMO_SCENE, CLAIMS, THINK))
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    answer = response.answer
    _check_relations(answer.scene_graph.relations)
    assert answer.relations_contradicted == 2
    # The contradicted claim the reasoning relies on is named; the one it never uses is not.
    relied = [w for w in answer.warnings if w.startswith("the reasoning relies on")]
    assert len(relied) == 1, list(answer.warnings)
    assert "'green_box.1 is in front of red_box.1'" in relied[0]
    assert "farther from the camera than red_box.1's" in relied[0]
    # Reported, not overruled: the model's choice stands.
    assert (answer.answer, answer.choice, answer.choice_index) == ("(A) in front", "A", 0)

    # The same on ~/answer and ~/scene_graph.
    published = rig.latest(rig.answers, lambda a: a.request_id == answer.request_id)
    assert published.relations_contradicted == 2
    _check_relations(published.scene_graph.relations)
    graph = rig.latest(rig.graphs, lambda g: len(g.relations) == len(CLAIMS))
    _check_relations(graph.relations)

    # RViz: one edge per relation, coloured by verdict; the evidence in its label.
    markers = rig.latest(
        rig.markers, lambda m: sum(x.type == Marker.LINE_LIST for x in m.markers) == len(CLAIMS)
    )
    edges = [m for m in markers.markers if m.type == Marker.LINE_LIST]
    for edge, (verdict, _, _) in zip(edges, EXPECTED, strict=True):
        colour = [edge.color.r, edge.color.g, edge.color.b]
        assert colour == pytest.approx(list(VERDICT_COLOURS[verdict]))
    labels = [m.text for m in markers.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert any(t.startswith("is in front of [contradicted]\ngreen_box.1's front") for t in labels)

    # /diagnostics counts the contradicted relations of the last minute.
    def counted(array) -> bool:
        values = {kv.key: kv.value for status in array.status for kv in status.values}
        return values.get("relations contradicted (last min)") == "2"

    rig.latest(rig.diagnostics, counted, wait=10.0)


def test_true_claims_are_consistent_and_raise_no_warning(node, rig, server) -> None:
    server.add_replies(scripted_reply(DEMO_SCENE))
    response = rig.query()
    assert response.success, response.message
    answer = response.answer
    assert [r.verdict for r in answer.scene_graph.relations] == [
        SceneRelation.VERDICT_CONSISTENT
    ] * 2
    assert answer.relations_contradicted == 0
    assert not [w for w in answer.warnings if "relies on" in w]


def test_without_depth_relations_are_unknown(node, rig, server) -> None:
    rig.send_depth = False
    try:
        rig.settle(1.0)
        server.add_replies(scripted_reply(DEMO_SCENE, CLAIMS, THINK))
        response = rig.query(max_frame_age=0.5)
        assert response.success, response.message
        relations = response.answer.scene_graph.relations
        assert [r.verdict for r in relations] == [SceneRelation.VERDICT_UNKNOWN] * len(CLAIMS)
        assert relations[0].evidence.startswith("no 3D for red_box.1")
        assert response.answer.relations_contradicted == 0
    finally:
        rig.send_depth = True
