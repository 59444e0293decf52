"""A second ROS 2 process for the cross-process interface tests.

Usage:
    python ros_peer.py client  # publish a SceneGraph, call the Query service, print the reply
    python ros_peer.py server  # serve Query and print the SceneGraph it receives, then exit

Each mode prints one JSON line on stdout with what it saw and exits 0 on success.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import rclpy
from geometry_msgs.msg import Point
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from spatialthinker_msgs.msg import SceneGraph, SceneObject, SceneRelation
from spatialthinker_msgs.srv import Query

# Transient local so a late subscriber still gets the graph: the two
# processes discover each other at slightly different times.
LATCHED = QoSProfile(
    depth=1,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


def make_graph(source: str) -> SceneGraph:
    """A small SceneGraph whose content names the process that made it."""
    graph = SceneGraph()
    graph.header.frame_id = f"{source}_optical_frame"
    graph.header.stamp.sec = 42
    cup = SceneObject(id="cup.1", label="cup", x_min=1.0, y_min=2.0, x_max=30.0, y_max=40.0)
    cup.has_3d = True
    cup.center = Point(x=0.1, y=-0.2, z=1.5)
    table = SceneObject(id="table.1", label="table", no_3d_reason="no depth")
    graph.objects = [cup, table]
    graph.relations = [
        SceneRelation(
            subject="cup.1",
            predicate="on",
            object="table.1",
            verdict=SceneRelation.VERDICT_UNKNOWN,
            evidence="no 3D for table.1: no depth",
        )
    ]
    return graph


def graph_summary(graph: SceneGraph) -> dict:
    """Plain-data view of a SceneGraph for comparing across processes."""
    return {
        "frame_id": graph.header.frame_id,
        "stamp_sec": graph.header.stamp.sec,
        "objects": [[o.id, o.label, o.has_3d, o.center.z, o.no_3d_reason] for o in graph.objects],
        "relations": [
            [r.subject, r.predicate, r.object, r.verdict, r.evidence] for r in graph.relations
        ],
    }


def answer_query(request: Query.Request, response: Query.Response, source: str) -> Query.Response:
    """Answer by echoing the request, so the caller can check both directions."""
    response.success = True
    response.answer.question = request.question
    response.answer.options = list(request.options)
    response.answer.choice = "B"
    response.answer.choice_index = 1
    response.answer.answer = f"(B) {request.options[1]}" if len(request.options) > 1 else ""
    response.answer.scene_graph = make_graph(source)
    response.message = f"served by {source}"
    return response


def run_client(node: rclpy.node.Node) -> dict:
    publisher = node.create_publisher(SceneGraph, "scene_graph", LATCHED)
    publisher.publish(make_graph("peer"))
    client = node.create_client(Query, "query")
    if not client.wait_for_service(timeout_sec=20.0):
        raise SystemExit("query service never appeared")
    request = Query.Request(question="Where is the cup?", options=["left", "right"])
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=20.0)
    if not future.done():
        raise SystemExit("query service did not answer")
    reply = future.result()
    # Stay a moment so the latched graph reaches the test process.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and publisher.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.1)
    return {
        "success": reply.success,
        "message": reply.message,
        "answer": reply.answer.answer,
        "choice_index": reply.answer.choice_index,
        "graph": graph_summary(reply.answer.scene_graph),
    }


def run_server(node: rclpy.node.Node) -> dict:
    seen: dict = {"calls": 0}

    def serve(request: Query.Request, response: Query.Response) -> Query.Response:
        seen["calls"] += 1
        return answer_query(request, response, "peer")

    node.create_service(Query, "query", serve)
    node.create_subscription(
        SceneGraph, "scene_graph", lambda msg: seen.setdefault("graph", graph_summary(msg)), LATCHED
    )
    # Serve until the test process says it is done by closing our stdin.
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    deadline = time.monotonic() + 60.0
    while not done.is_set() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return seen


def main() -> int:
    mode = sys.argv[1]
    rclpy.init()
    try:
        node = rclpy.create_node(f"ros_peer_{mode}")
        result = run_client(node) if mode == "client" else run_server(node)
        print(json.dumps(result), flush=True)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
