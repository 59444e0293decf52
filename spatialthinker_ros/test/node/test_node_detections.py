"""The standard vision_msgs detections (issue 22), end to end through DDS.

The node (a real subprocess, openai backend on the scripted server) answers about the demo scene;
this process subscribes to ``~/detections_3d`` and ``~/detections_2d`` with the vision_msgs types
(wire-identical to the release: ``test_standard_interfaces.py`` pins their type hashes) and checks
each detection against the answer's scene graph: ids, labels, boxes, frame and stamp.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from node_harness import NODE, SCRIPTED_OBJECTS, Rig, openai_params, running_node
from vision_msgs.msg import Detection2DArray, Detection3DArray

TOLERANCE_M = 0.01


class Received:
    """Every detections array this process received, by topic."""

    def __init__(self) -> None:
        self.arrays: dict[str, list[Any]] = {"3d": [], "2d": []}
        self.lock = threading.Lock()

    def keeper(self, kind: str) -> Any:
        def keep(message: Any) -> None:
            with self.lock:
                self.arrays[kind].append(message)

        return keep

    def for_stamp(self, kind: str, stamp: Any, wait: float = 15.0) -> Any:
        """The newest ``kind`` array stamped ``stamp`` (bounded wait)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self.lock:
                found = [a for a in self.arrays[kind] if a.header.stamp == stamp]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {kind} detections stamped {stamp} within {wait} s")

    def count(self, kind: str, stamp: Any) -> int:
        with self.lock:
            return sum(a.header.stamp == stamp for a in self.arrays[kind])


@pytest.fixture(scope="module")
def node(server, rig: Rig):
    with running_node(rig, openai_params(server.base_url, {"model": "detections"})) as process:
        yield process


@pytest.fixture(scope="module")
def received(node, rig: Rig) -> Iterator[Received]:
    store = Received()
    with rig.side_node("detections_listener") as side:
        side.create_subscription(Detection3DArray, f"{NODE}/detections_3d", store.keeper("3d"), 10)
        side.create_subscription(Detection2DArray, f"{NODE}/detections_2d", store.keeper("2d"), 10)
        # Lazy outputs publish only to matched subscribers: wait until the node sees both.
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not all(
            side.count_publishers(f"{NODE}/detections_{kind}") for kind in ("3d", "2d")
        ):
            time.sleep(0.1)
        time.sleep(1.0)  # the publisher's side of the match
        yield store


def _xyz(vector: Any) -> np.ndarray:
    return np.array([vector.x, vector.y, vector.z])


def test_detections_carry_the_scene_graphs_objects(node, rig: Rig, received: Received) -> None:
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    answer = response.answer
    graph = answer.scene_graph
    objects = {o.id: o for o in graph.objects}
    assert set(objects) == set(SCRIPTED_OBJECTS) and all(o.has_3d for o in objects.values())

    array = received.for_stamp("3d", graph.header.stamp)
    # The scene graph's frame (the camera's optical frame here: no target frame) and the
    # colour frame's stamp.
    assert array.header.frame_id == graph.header.frame_id == rig.frame_id
    assert array.header.stamp == answer.header.stamp
    assert sorted(d.id for d in array.detections) == sorted(objects)
    for detection in array.detections:
        obj = objects[detection.id]
        assert detection.header == array.header
        (hypothesis,) = detection.results
        assert hypothesis.hypothesis.class_id == obj.label
        # The scripted server gives no log-probabilities: the score is not measured, and says
        # so (NaN), rather than a made-up number.
        assert math.isnan(hypothesis.hypothesis.score)
        centre = detection.bbox.center
        assert np.linalg.norm(_xyz(centre.position) - _xyz(obj.center)) < TOLERANCE_M
        assert np.allclose(_xyz(detection.bbox.size), _xyz(obj.size), atol=TOLERANCE_M)
        q = centre.orientation
        assert [q.x, q.y, q.z, q.w] == pytest.approx([0.0, 0.0, 0.0, 1.0])
        assert hypothesis.pose.pose == centre

    # Every scene graph published for this answer (streamed at </scene>, then with the answer)
    # has its detections.
    graphs = rig.latest(rig.graphs, lambda g: g.header.stamp == graph.header.stamp)
    assert graphs is not None
    time.sleep(1.0)
    with rig._lock:
        published = sum(g.header.stamp == graph.header.stamp for g in rig.graphs)
    assert received.count("3d", graph.header.stamp) == published >= 1

    flat = received.for_stamp("2d", graph.header.stamp)
    assert flat.header.frame_id == answer.header.frame_id
    assert sorted(d.id for d in flat.detections) == sorted(objects)
    for detection in flat.detections:
        obj = objects[detection.id]
        assert detection.results[0].hypothesis.class_id == obj.label
        assert detection.bbox.center.position.x == pytest.approx((obj.x_min + obj.x_max) / 2)
        assert detection.bbox.center.position.y == pytest.approx((obj.y_min + obj.y_max) / 2)
        assert detection.bbox.size_x == pytest.approx(obj.x_max - obj.x_min)
        assert detection.bbox.size_y == pytest.approx(obj.y_max - obj.y_min)


def test_each_output_has_its_off_switch(node, rig: Rig, received: Received) -> None:
    rig.set_parameters({"detections.publish_3d": False})
    try:
        response = rig.query()
        assert response.success, response.message
        stamp = response.answer.scene_graph.header.stamp
        received.for_stamp("2d", stamp)  # the 2D output still publishes
        time.sleep(1.0)
        assert received.count("3d", stamp) == 0
    finally:
        rig.set_parameters({"detections.publish_3d": True})
    response = rig.query()
    assert response.success, response.message
    received.for_stamp("3d", response.answer.scene_graph.header.stamp)
