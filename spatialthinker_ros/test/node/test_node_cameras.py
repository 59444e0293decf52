"""One model, every camera (issue 23), end to end through DDS.

Two RGB-D cameras in processes of their own: ``front`` (the demo scene, 640x480) and ``wrist``
(another field of view, 424x240, on the demo objects laid out elsewhere), the wrist's depth
published 30 ms after its colour; their own optical frames, mounted on ``base_link`` by static
TF. One node (openai backend on a scripted model that answers about whichever camera's frame it
is given) serves both. A query per camera gets that camera's objects, as the same frame answered
on its own gives them; ``~/query_all`` asks both in one batch and combines them in base_link;
a camera that goes silent fails only its own answers. The tiny transformers model, one backend
for both cameras and ~/query_all in one model call: ``test_node_cameras_tiny.py``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from node_harness import (
    DEMO_SCENE,
    NODE,
    SCRIPTED_OBJECTS,
    Rig,
    openai_params,
    running_node,
)
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from script_process import ScriptProcess
from scripted_openai_server import ScriptedOpenAIServer
from tf2_msgs.msg import TFMessage
from two_cameras import WIDE_SCENE, reply_for_both_cameras

from spatialthinker_msgs.action import QueryAll as QueryAllAction
from spatialthinker_msgs.srv import Query, QueryAll
from spatialthinker_ros.answering.parameters import PARAMETERS
from spatialthinker_ros.answering.pipeline import AnsweringPipeline
from spatialthinker_ros.cli.offline_pipeline import frames_for

CAMERAS = {"front": ("/mc_front", DEMO_SCENE, "demo"), "wrist": ("/mc_wrist", WIDE_SCENE, "wide")}
FRAMES = {"front": "front_optical", "wrist": "wrist_optical"}
# Where each optical frame sits on base_link (x ahead, z up): the front camera level at 1 m, the
# wrist one turned to look left at 0.5 m.
MOUNTS = {
    "front": ((0.2, 0.0, 1.0), (-0.5, 0.5, -0.5, 0.5)),
    "wrist": ((0.4, 0.3, 0.5), (0.0, 0.70710678, -0.70710678, 0.0)),
}
QUESTION = "Is the red box in front of or behind the green box?"
OPTIONS = ["in front", "behind"]
TOLERANCE_M = 0.01


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(default_reply=reply_for_both_cameras()) as scripted:
        yield scripted


@pytest.fixture(scope="module")
def cameras() -> Iterator[dict[str, ScriptProcess]]:
    processes: dict[str, ScriptProcess] = {}
    try:
        for name, (prefix, _scene, scene_name) in CAMERAS.items():
            processes[name] = ScriptProcess(
                "camera_process.py", prefix, "10", scene_name, FRAMES[name]
            )
        processes["wrist"].set(lag_ms=30.0)
        yield processes
    finally:
        for process in processes.values():
            process.close()


def _remaps() -> dict[str, str]:
    return {
        f"{name}/{topic}": f"{prefix}/{topic}"
        for name, (prefix, _scene, _kind) in CAMERAS.items()
        for topic in ("image", "depth", "camera_info")
    }


@pytest.fixture(scope="module")
def mounts(rig: Rig) -> Iterator[None]:
    """The cameras' mounts on base_link, on /tf_static (latched, as tf2's static broadcaster)."""
    latched = QoSProfile(
        depth=1,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )
    with rig.side_node("camera_mounts") as side:
        publisher = side.create_publisher(TFMessage, "/tf_static", latched)
        message = TFMessage()
        for name, (xyz, quat) in MOUNTS.items():
            mount = TransformStamped()
            mount.header.frame_id, mount.child_frame_id = "base_link", FRAMES[name]
            t, q = mount.transform.translation, mount.transform.rotation
            t.x, t.y, t.z = xyz
            q.x, q.y, q.z, q.w = quat
            message.transforms.append(mount)
        publisher.publish(message)
        yield


@pytest.fixture(scope="module")
def node(server, rig: Rig, cameras, mounts):
    rig.camera_on = False  # the rig is only the planner: the cameras are their own processes
    params = openai_params(server.base_url, {"model": "cameras", "cameras": list(CAMERAS)})
    with running_node(rig, params, remaps=_remaps()) as process:
        yield process
    rig.camera_on = True


@pytest.fixture(scope="module")
def query_all(node, rig: Rig) -> Iterator[Any]:
    with rig.side_node("query_all_client") as side:
        client = side.create_client(QueryAll, f"{NODE}/query_all")
        assert client.wait_for_service(timeout_sec=20.0)
        yield client


def _ask(rig: Rig, camera: str, wait: float = 60.0, max_frame_age: float = 0.0) -> Any:
    request = Query.Request(
        question=QUESTION, options=OPTIONS, camera=camera, max_frame_age=max_frame_age
    )
    return rig.wait_future(rig.query_client.call_async(request), wait)


def _until_answered(rig: Rig, camera: str) -> Any:
    """The camera's first answer with every object in 3D (its process needs a moment)."""
    deadline = time.monotonic() + 30.0
    while True:
        response = _ask(rig, camera)
        ok = response.success and all(o.has_3d for o in response.answer.scene_graph.objects)
        if ok or time.monotonic() > deadline:
            assert response.success, response.message
            return response.answer
        time.sleep(0.5)


@pytest.fixture(scope="module")
def alone(server) -> dict[str, dict[str, np.ndarray]]:
    """Each camera's frame answered on its own, by the ROS-free pipeline: object id -> centre."""
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(backend="openai", model="cameras")
    values["openai.base_url"] = server.base_url
    pipeline = AnsweringPipeline(values)
    pipeline.start()
    try:
        centres = {}
        for name, (_prefix, scene, _kind) in CAMERAS.items():
            depth_m = scene.depth_mm.astype(np.float32) * 0.001
            frames = frames_for(scene.rgb, depth_m, scene.intrinsics, 0.001)
            answer = pipeline.answer(frames, QUESTION, OPTIONS, name)
            centres[name] = {
                obj.id: np.array(estimate.center)
                for obj, estimate in zip(answer.parsed.objects, answer.lifted, strict=True)
            }
        return centres
    finally:
        pipeline.shutdown("done")


def _centres(graph: Any) -> dict[str, np.ndarray]:
    return {o.id: np.array([o.center.x, o.center.y, o.center.z]) for o in graph.objects}


def test_a_query_per_camera_answers_from_that_camera(node, rig: Rig, alone) -> None:
    for name in CAMERAS:
        answer = _until_answered(rig, name)
        graph = answer.scene_graph
        assert answer.camera == graph.camera == name
        assert graph.header.frame_id == FRAMES[name]
        assert all(o.camera == name for o in graph.objects)
        centres = _centres(graph)
        assert set(centres) == set(SCRIPTED_OBJECTS) == set(alone[name])
        for object_id, centre in centres.items():
            error = np.linalg.norm(centre - alone[name][object_id])
            assert error < TOLERANCE_M, f"{name} {object_id}: {error * 100:.1f} cm off"
    # The two cameras see the objects in different places: a mix-up could not pass the above.
    assert np.linalg.norm(alone["front"]["red_box.1"] - alone["wrist"]["red_box.1"]) > 0.1


def test_an_unknown_camera_fails_at_once_naming_the_cameras(node, rig: Rig, query_all) -> None:
    response = _ask(rig, "rear", wait=10.0)
    assert not response.success
    assert "unknown camera 'rear'" in response.message and "front, wrist" in response.message
    request = QueryAll.Request(question=QUESTION, options=OPTIONS, cameras=["front", "rear"])
    reply = rig.wait_future(query_all.call_async(request), 10.0)
    assert not reply.success and "unknown camera 'rear'" in reply.message
    assert list(reply.answers) == []


def test_query_all_answers_every_camera_in_one_batch_in_a_common_frame(
    node, rig: Rig, query_all
) -> None:
    for name in CAMERAS:
        _until_answered(rig, name)
    request = QueryAll.Request(question=QUESTION, options=OPTIONS, target_frame="base_link")
    reply = rig.wait_future(query_all.call_async(request), 60.0)
    assert reply.success, reply.message
    assert [a.camera for a in reply.answers] == list(CAMERAS)
    for item in reply.answers:
        assert item.success, item.message
        assert item.answer.camera == item.camera
        assert item.answer.scene_graph.header.frame_id == "base_link"
        # Queued together: one batch of both cameras' requests.
        assert item.answer.batch_size == 2
    combined = reply.scene_graph
    assert combined.header.frame_id == "base_link" and combined.camera == ""
    expected = {
        f"{a.camera}/{o.id}": (a.camera, o)
        for a in reply.answers
        for o in a.answer.scene_graph.objects
    }
    assert sorted(o.id for o in combined.objects) == sorted(expected)
    for obj in combined.objects:
        camera, original = expected[obj.id]
        assert obj.camera == camera
        assert (obj.center.x, obj.center.y, obj.center.z) == (
            original.center.x,
            original.center.y,
            original.center.z,
        )
    assert {r.subject.split("/")[0] for r in combined.relations} == set(CAMERAS)
    # Without a shared frame (each camera's own optical frame) the answers still come; the
    # combined graph is empty and says why.
    request = QueryAll.Request(question=QUESTION, options=OPTIONS)
    reply = rig.wait_future(query_all.call_async(request), 60.0)
    assert reply.success and all(a.success for a in reply.answers)
    assert not reply.scene_graph.objects and "different frames" in reply.message


def test_query_all_as_an_action(node, rig: Rig) -> None:
    from rclpy.action import ActionClient

    with rig.side_node("query_all_action") as side:
        client = ActionClient(side, QueryAllAction, f"{NODE}/query_all")
        assert client.wait_for_server(timeout_sec=20.0)
        feedback: list[list[str]] = []
        goal = QueryAllAction.Goal(question=QUESTION, options=OPTIONS, cameras=["wrist"])
        send = client.send_goal_async(
            goal, feedback_callback=lambda f: feedback.append(list(f.feedback.done))
        )
        handle = rig.wait_future(send, 30.0)
        assert handle.accepted
        result = rig.wait_future(handle.get_result_async(), 60.0).result
    assert result.success, result.message
    assert [a.camera for a in result.answers] == ["wrist"]
    assert result.answers[0].answer.batch_size == 1
    assert ["wrist"] in feedback


def test_continuous_mode_asks_the_cameras_in_turn(node, rig: Rig) -> None:
    rig.set_parameters(
        {"continuous_question": QUESTION, "continuous_options": "in front|behind", "rate_hz": 4.0}
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and len(seen) < 4:
            with rig._lock:
                seen = [a.camera for a in rig.answers if a.request_id.startswith("continuous")]
            time.sleep(0.2)
    finally:
        rig.set_parameters({"rate_hz": 0.0})
    assert len(seen) >= 4 and set(seen) == set(CAMERAS), seen
    # In turn, one standing request at a time: consecutive answers come from the two cameras.
    assert all(a != b for a, b in itertools.pairwise(seen)), seen


def _continuous_cameras(rig: Rig, count: int) -> list[str]:
    """The cameras of the next ``count`` continuous-mode answers (at most 20 s)."""
    with rig._lock:
        before = sum(1 for a in rig.answers if a.request_id.startswith("continuous"))
    seen: list[str] = []
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and len(seen) < count:
        with rig._lock:
            answers = [a.camera for a in rig.answers if a.request_id.startswith("continuous")]
        seen = answers[before:]
        time.sleep(0.2)
    return seen


def test_continuous_mode_asks_only_the_listed_cameras(node, rig: Rig) -> None:
    # An unknown camera is refused with the reason, naming the cameras there are.
    (reason,) = rig.set_parameters({"continuous_cameras": "rear"}, refused_ok=True)
    assert "'rear'" in reason and "front, wrist" in reason, reason
    rig.set_parameters(
        {
            "continuous_question": QUESTION,
            "continuous_options": "in front|behind",
            "continuous_cameras": "wrist",
            "rate_hz": 4.0,
        }
    )
    try:
        seen = _continuous_cameras(rig, 3)
    finally:
        rig.set_parameters({"rate_hz": 0.0, "continuous_cameras": ""})
    # (A standing question started before the change may still answer from the front camera.)
    assert len(seen) >= 3 and set(seen[1:]) == {"wrist"}, seen


def test_a_silent_camera_fails_only_its_own_answers(node, rig: Rig, cameras, query_all) -> None:
    cameras["wrist"].close()
    time.sleep(2.0)  # past the calls' max_frame_age (1 s): the wrist's newest frame is too old
    request = QueryAll.Request(question=QUESTION, options=OPTIONS, max_frame_age=1.0)
    reply = rig.wait_future(query_all.call_async(request), 60.0)
    assert reply.success, reply.message
    front, wrist = reply.answers
    assert front.success and front.answer.camera == "front"
    assert not wrist.success and wrist.message, wrist
    assert "old" in wrist.message and "wrist" in reply.message
    assert _ask(rig, "front", max_frame_age=1.0).success
    response = _ask(rig, "wrist", max_frame_age=1.0)
    assert not response.success and "old" in response.message
