"""What the running node says about the scene's depth and up (issue 26, findings 5 and 6).

The node runs with ``depth.max_depth`` 3 m, below the demo scene's wall at 5 m (85 % of the
frame), as a table-top robot runs it: that range is the robot's choice, not a sign of wrong depth
units, so no answer and no ``/diagnostics`` may tell the user to check the depth scale; depth in
wrong units still must. Then the camera shows a room seen pitched 50 deg down with a wall 2 m ahead,
and the scripted model claims a relation about gravity: the wall must not be taken for the floor
("up measured from the horizontal surfaces"), and the evidence says up was not measured and which
setting such a camera needs.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import DEMO_SCENE, Rig, openai_params, running_node, spatialthinker_reply

from spatialthinker_ros.core.images import numpy_to_image
from spatialthinker_ros.core.synthetic_scene import room_view

pytestmark = pytest.mark.usefixtures("healthy_camera")

# Below the demo scene's wall (5 m), above every scripted object (0.51 to 1.77 m).
MAX_DEPTH = 3.0


@pytest.fixture(scope="module")
def node(server, rig):
    with running_node(
        rig,
        openai_params(server.base_url, {"depth.max_depth": MAX_DEPTH, "openai.max_in_flight": 1}),
    ) as process:
        yield process


def _diagnostics_after(rig: Rig, count: int, wait: float = 20.0) -> DiagnosticArray:
    """The newest /diagnostics array once two more than ``count`` have arrived (the node
    publishes every 0.2 s; the second one surely follows the answer)."""
    deadline = time.monotonic() + wait
    while len(rig.diagnostics) < count + 2:
        assert time.monotonic() < deadline, "no /diagnostics arrived"
        time.sleep(0.05)
    return rig.diagnostics[-1]


def _depth_units(array: DiagnosticArray) -> list[str]:
    """The ``depth_units`` entries of every status of ``array``."""
    return [
        f"{kv.key}: {kv.value}" for s in array.status for kv in s.values if "depth_units" in kv.key
    ]


def test_a_range_narrower_than_the_scene_is_not_blamed_on_the_depth_scale(node, rig) -> None:
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    answer = response.answer
    # The scripted objects lie within the range and are lifted as usual.
    assert all(o.has_3d for o in answer.scene_graph.objects), answer.scene_graph.objects
    assert not [w for w in answer.warnings if "depth" in w], list(answer.warnings)
    seen = len(rig.diagnostics)
    assert _depth_units(_diagnostics_after(rig, seen)) == []

    # Depth in the wrong units (TUM's 1/5000 m read as millimetres: the wall at 25 m) is still
    # named, with this range, in the answer and in /diagnostics.
    tum_units = (DEMO_SCENE.depth_mm.astype(np.uint32) * 5).clip(0, 65535).astype(np.uint16)
    rig.depth_override = lambda: numpy_to_image(tum_units, "16UC1")
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    warnings = [w for w in response.answer.warnings if "check the depth scale" in w]
    assert len(warnings) == 1 and "depth.scale 0.001 m per unit" in warnings[0], warnings
    seen = len(rig.diagnostics)
    assert _depth_units(_diagnostics_after(rig, seen)), "no depth_units entry in /diagnostics"


def test_a_wall_before_a_steeply_pitched_camera_is_not_taken_for_the_floor(
    node, rig, server
) -> None:
    k = DEMO_SCENE.intrinsics
    room = room_view(k, 50.0, ahead=2.0)
    rig.depth_override = lambda: numpy_to_image(room.depth_mm, "16UC1")
    # A cup on the wall's face, the floor below it: boxes the scripted model draws there.
    boxes = {"cup.1": (290, 60, 340, 110), "floor.1": (200, 330, 440, 450)}
    server.add_replies(
        spatialthinker_reply(
            boxes,
            (k.width, k.height),
            [("cup.1", "above", "floor.1")],
            think="The cup is above the floor.",
            observe="A cup on a wall, the floor below.",
            answer="(A) yes",
        )
    )
    rig.settle()
    response = rig.query(question="Is the cup above the floor?", options=["yes", "no"])
    assert response.success, response.message
    graph = response.answer.scene_graph
    assert all(o.has_3d for o in graph.objects), graph.objects
    (relation,) = graph.relations
    assert "up measured from the horizontal surfaces" not in relation.evidence
    assert "up taken as the camera's -y, not measured: the surfaces found are seen from below" in (
        relation.evidence
    )
    assert "relations.up 'down'" in relation.evidence
    # The camera's -y stood for up: SceneGraph.up is all zero, as its comment promises.
    assert (graph.up.x, graph.up.y, graph.up.z) == (0.0, 0.0, 0.0)
