"""The interfaces work across processes over loopback DDS, in both directions."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from ros_peer import LATCHED, answer_query, graph_summary, make_graph

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_msgs.msg import SceneGraph, SceneRelation, SpatialAnswer
from spatialthinker_msgs.srv import Query

PEER = Path(__file__).resolve().parents[1] / "fixtures" / "ros_peer.py"


@pytest.fixture
def ros_node():
    """An rclpy context and node spinning in a background thread."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("interface_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    thread.join(timeout=5)


def test_interface_types_import_and_hold_their_fields() -> None:
    answer = SpatialAnswer(choice="A", choice_index=0, options=["x", "y"])
    assert answer.relations_contradicted == 0
    relation = SceneRelation(verdict=SceneRelation.VERDICT_CONTRADICTED, evidence="1.2 m nearer")
    assert (relation.verdict, relation.evidence) == (2, "1.2 m nearer")
    assert (SceneRelation.VERDICT_UNKNOWN, SceneRelation.VERDICT_CONSISTENT) == (0, 1)
    assert answer.scene_graph.objects == []
    assert Query.Request(question="q").max_frame_age == 0.0
    assert QueryAction.Feedback(state="queued", queue_position=3).queue_position == 3
    assert QueryAction.Result(success=False, message="cancelled").message == "cancelled"


def test_peer_publishes_and_calls_our_service(ros_node) -> None:
    received: list[dict] = []
    got_graph = threading.Event()

    def on_graph(msg: SceneGraph) -> None:
        received.append(graph_summary(msg))
        got_graph.set()

    ros_node.create_subscription(SceneGraph, "scene_graph", on_graph, LATCHED)
    ros_node.create_service(Query, "query", lambda req, resp: answer_query(req, resp, "test"))

    peer = subprocess.run(
        [sys.executable, str(PEER), "client"], capture_output=True, text=True, timeout=60
    )
    assert peer.returncode == 0, peer.stderr
    reply = json.loads(peer.stdout.strip().splitlines()[-1])
    assert reply["success"] is True
    assert reply["message"] == "served by test"
    assert reply["answer"] == "(B) right"
    assert reply["choice_index"] == 1
    assert reply["graph"]["frame_id"] == "test_optical_frame"

    assert got_graph.wait(10.0), "the peer's SceneGraph never arrived"
    assert received[0] == graph_summary(make_graph("peer"))
    assert received[0]["relations"] == [
        ["cup.1", "on", "table.1", 0, "no 3D for table.1: no depth"]
    ]


def test_we_publish_and_call_the_peers_service(ros_node) -> None:
    peer = subprocess.Popen(
        [sys.executable, str(PEER), "server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        publisher = ros_node.create_publisher(SceneGraph, "scene_graph", LATCHED)
        publisher.publish(make_graph("test"))
        client = ros_node.create_client(Query, "query")
        assert client.wait_for_service(timeout_sec=30.0), "the peer's service never appeared"
        future = client.call_async(Query.Request(question="Which is nearer?", options=["a", "b"]))
        deadline = time.monotonic() + 20.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), "the peer never answered"
        response = future.result()
        assert response.success and response.message == "served by peer"
        assert response.answer.question == "Which is nearer?"
        assert list(response.answer.options) == ["a", "b"]
        assert graph_summary(response.answer.scene_graph) == graph_summary(make_graph("peer"))
        # Give the latched graph time to reach the peer before we let it go.
        deadline = time.monotonic() + 10.0
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        out, err = peer.communicate(input="", timeout=30)
    finally:
        if peer.poll() is None:
            peer.kill()
    assert peer.returncode == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["calls"] == 1
    assert seen["graph"] == graph_summary(make_graph("test"))
