"""A request is answered with the settings it started with (hardening round 3, issue 26,
Medium 3), end to end: the node (a real subprocess, openai backend) streams from the scripted
server, which holds the stream just after ``</scene>``; while it is held, ``relations.up`` and
``depth.max_depth`` are changed with a parameter client, as an operator would with
``ros2 param set``. The scene graph already streamed and the same request's answer used to
disagree (up, verdicts, 3D); both must now show the settings the request started with, and the
next request the new ones. Order is asserted, never time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from node_harness import (
    DEMO_SCENE,
    NODE,
    SCRIPTED_OBJECTS,
    openai_params,
    running_node,
    scripted_reply,
    set_parameters,
)
from rclpy.parameter_client import AsyncParameterClient
from scripted_openai_server import ScriptedOpenAIServer, StreamReply
from streaming_replies import REASONING_SENTENCE

from spatialthinker_msgs.action import Query as QueryAction

# A relation about gravity ("above"), so that the answer's up direction is measured and shown,
# beside one about depth; and a reasoning long enough to stream after </scene>.
RELATIONS = (
    ("red_box.1", "in front of", "green_box.1"),
    ("white_pillar.1", "above", "red_box.1"),
)
REPLY = scripted_reply(DEMO_SCENE, RELATIONS, think=(REASONING_SENTENCE * 8).strip())
CHUNK = 24
# The settings the node starts with, and those set while the request is held. Every object of
# the demo scene is beyond 0.3 m, so depth.max_depth 0.3 leaves none with 3D; relations.up
# 'level' leaves up all zero, 'down' gives the camera's -z.
START = {"relations.up": "level", "depth.max_depth": 10.0}
CHANGED = {"relations.up": "down", "depth.max_depth": 0.3}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(default_reply=REPLY) as scripted:
        yield scripted


@pytest.fixture(scope="module")
def node(server, rig):
    extra = {"model": "request-settings", "max_batch_size": 1, "request_timeout": 60.0, **START}
    with running_node(rig, openai_params(server.base_url, extra)) as process:
        yield process


def _graph(graph: Any) -> dict[str, Any]:
    """What a scene graph says, to compare the streamed one with the answer's."""
    return {
        "objects": [(o.id, o.has_3d, o.no_3d_reason) for o in graph.objects],
        "centres": np.array([[o.center.x, o.center.y, o.center.z] for o in graph.objects]),
        "relations": [
            (r.subject, r.predicate, r.object, r.verdict, r.evidence) for r in graph.relations
        ],
        "up": (graph.up.x, graph.up.y, graph.up.z),
    }


def test_a_parameter_changed_mid_request_applies_from_the_next_request(node, rig, server) -> None:
    rig.settle()
    scene_seen = threading.Event()  # a feedback brought the scene graph
    changed = threading.Event()  # the parameters were changed: the stream goes on
    graphs: list[Any] = []

    def reply(body: dict[str, Any]) -> StreamReply:
        text = REPLY(body)
        return StreamReply(
            text, CHUNK, hold=changed, hold_at=StreamReply.chunk_after(text, "</scene>", CHUNK)
        )

    def feedback(message: Any) -> None:
        if message.feedback.scene_graph.objects and not scene_seen.is_set():
            graphs.append(message.feedback.scene_graph)
            scene_seen.set()

    server.add_replies(reply)
    with rig.side_node("request_settings_parameters") as side:
        client = AsyncParameterClient(side, NODE)
        try:
            assert rig.action_client.wait_for_server(timeout_sec=10)
            goal = QueryAction.Goal(question="Which is nearer?", options=["red box", "green box"])
            send = rig.action_client.send_goal_async(goal, feedback_callback=feedback)
            handle = rig.wait_future(send, 20)
            assert handle.accepted
            assert scene_seen.wait(60), "no feedback brought the scene graph"
            set_parameters(client, CHANGED)
            changed.set()
            result = rig.wait_future(handle.get_result_async(), 60).result
            assert result.success, result.message

            # The streamed graph and the answer agree, and both used the settings the request
            # started with: 3D for every object (max_depth 10), up all zero ('level').
            early, final = _graph(graphs[0]), _graph(result.answer.scene_graph)
            assert [o[0] for o in final["objects"]] == list(SCRIPTED_OBJECTS)
            assert early["objects"] == final["objects"]
            assert all(has_3d for _, has_3d, _ in final["objects"]), final["objects"]
            np.testing.assert_array_equal(early["centres"], final["centres"])
            assert early["relations"] == final["relations"]
            assert early["up"] == final["up"] == (0.0, 0.0, 0.0)

            # The next request is answered with the new settings.
            rig.settle()
            response = rig.query(wait=60)
            assert response.success, response.message
            after = response.answer.scene_graph
            assert not any(o.has_3d for o in after.objects), after.objects[0].center
            assert (after.up.x, after.up.y, after.up.z) != (0.0, 0.0, 0.0)
        finally:
            changed.set()  # never leave the server's stream held
            set_parameters(client, START)
