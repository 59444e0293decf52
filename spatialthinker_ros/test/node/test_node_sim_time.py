"""Simulated time (``use_sim_time``), as a bag played with ``--clock`` or a simulator gives it.

A camera process publishes ``/clock`` a year behind the wall clock and stamps its frames in that
time (``camera_process.py``, ``sim_clock_offset_s``); a robot process publishes its TF stamped in
that time too (``robot_tf_process.py``, driving along odom's x at 1 m/s). The node (a real
subprocess, openai backend on the scripted server) runs with ``use_sim_time: true``: its frame
ages are measured on ``/clock``, so the frames are fresh and answered in 3D, stamped in simulated
time. Switched to the wall clock at run time, the same frames are a year old and refused as
such: the first test would fail if the node measured ages on the wall clock. Transforms are
looked up at the frames' simulated stamps: the same object in odom and in base_link lies where
the robot was then. While ``/clock`` stands still (a paused bag), a request's timed waits still
end on time: they are measured on the wall clock, by timers on the steady clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from camera_process import FRAME_ID as OPTICAL
from node_harness import Rig, openai_params, running_node
from robot_tf_process import BASE, ODOM, odom_x
from script_process import ScriptProcess

from spatialthinker_msgs.srv import Query

PREFIX = "/sim_cam"
REMAPS = {
    "image": f"{PREFIX}/image",
    "depth": f"{PREFIX}/depth",
    "camera_info": f"{PREFIX}/camera_info",
}
SIM_BEHIND_S = 365 * 24 * 3600.0
SPEED = 1.0
TOLERANCE_M = 0.01


@pytest.fixture(scope="module")
def robot_origin() -> Iterator[float]:
    """The robot process; its drive's origin, in simulated seconds."""
    origin = time.time() - SIM_BEHIND_S
    process = ScriptProcess(
        "robot_tf_process.py", OPTICAL, repr(origin), repr(SPEED), repr(SIM_BEHIND_S)
    )
    try:
        yield origin
    finally:
        process.close()


@pytest.fixture(scope="module")
def camera() -> Iterator[ScriptProcess]:
    process = ScriptProcess("camera_process.py", PREFIX, "10")
    try:
        process.set(sim_clock_offset_s=SIM_BEHIND_S)
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def node(server, rig: Rig, camera: ScriptProcess, robot_origin: float) -> Iterator[Any]:
    rig.camera_on = False  # the rig is only the planner here: the camera is its own process
    # Frames keep coming while /clock stands still (the last test): stamps ahead of the
    # node's frozen time must not be refused as "in the future" before the wait is tested.
    extra = {"model": "sim", "use_sim_time": True, "future_stamp_tolerance": 60.0}
    params = openai_params(server.base_url, extra)
    with running_node(rig, params, remaps=REMAPS) as process:
        yield process
    rig.camera_on = True


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _query(rig: Rig, target_frame: str = "") -> Any:
    request = Query.Request(question="Where is the red box?", options=[], target_frame=target_frame)
    return rig.wait_future(rig.query_client.call_async(request), 60.0)


def test_frames_stamped_on_the_simulated_clock_are_answered_in_3d(node, rig: Rig) -> None:
    # Asked again (for at most 30 s) until the camera's frames and /clock have reached the node.
    deadline = time.monotonic() + 30.0
    response = _query(rig)
    while not (response.success and response.answer.scene_graph.objects[0].has_3d):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        response = _query(rig)
    assert response.success, response.message
    graph = response.answer.scene_graph
    assert graph.objects and all(o.has_3d for o in graph.objects), [
        o.no_3d_reason for o in graph.objects
    ]
    # The answer keeps the frame's simulated stamp: a year behind the wall clock.
    behind = time.time() - _seconds(graph.header.stamp)
    assert SIM_BEHIND_S < behind < SIM_BEHIND_S + 30.0, behind

    # The control: the same frames measured on the wall clock are a year old.
    rig.set_parameters({"use_sim_time": False})
    try:
        response = _query(rig)
        assert not response.success
        assert "newest colour frame is" in response.message, response.message
        assert "s old" in response.message, response.message
    finally:
        rig.set_parameters({"use_sim_time": True})
    # And back on /clock, answered again.
    deadline = time.monotonic() + 10.0
    response = _query(rig)
    while not response.success and time.monotonic() < deadline:
        time.sleep(0.5)
        response = _query(rig)
    assert response.success, response.message


def test_transforms_are_looked_up_at_the_simulated_stamps(node, rig: Rig, robot_origin) -> None:
    def centres(target_frame: str) -> tuple[float, dict[str, np.ndarray]]:
        # Asked again (for at most 30 s) until the robot's TF has reached the node.
        deadline = time.monotonic() + 30.0
        response = _query(rig, target_frame)
        while response.answer.scene_graph.header.frame_id != target_frame:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
            response = _query(rig, target_frame)
        assert response.success, response.message
        graph = response.answer.scene_graph
        assert graph.header.frame_id == target_frame, response.answer.warnings
        assert all(o.has_3d for o in graph.objects), [o.no_3d_reason for o in graph.objects]
        found = {o.id: np.array([o.center.x, o.center.y, o.center.z]) for o in graph.objects}
        return _seconds(graph.header.stamp), found

    # The static chain: the scene (and so each object in base_link) does not move.
    _stamp, in_base = centres(BASE)
    stamp, in_odom = centres(ODOM)
    # In odom, the robot's position at the frame's simulated stamp moves every object.
    truth = np.array([odom_x(stamp, robot_origin, SPEED), 0.0, 0.0])
    assert set(in_odom) == set(in_base)
    for object_id, centre in in_odom.items():
        error = np.linalg.norm(centre - in_base[object_id] - truth)
        assert error < TOLERANCE_M, f"{object_id}: {error * 100:.1f} cm off in {ODOM}"


def test_a_timed_wait_ends_while_simulated_time_stands_still(
    node, rig: Rig, camera: ScriptProcess, robot_origin
) -> None:
    # A target frame TF never has: the request waits tf_timeout (0.2 s) for it, then answers
    # in the camera frame. With /clock paused, a wait timed on simulated time never ends.
    camera.set(sim_clock_paused=True)
    try:
        time.sleep(0.5)  # the last /clock has reached the node: its time stands still
        request = Query.Request(
            question="Where is the red box?", options=[], target_frame="no_such_frame"
        )
        response = rig.wait_future(rig.query_client.call_async(request), 20.0)
    finally:
        camera.set(sim_clock_paused=False)
    assert response.success, response.message
    warnings = [w for w in response.answer.warnings if w.startswith("no transform from")]
    assert warnings and "no_such_frame" in warnings[0], response.answer.warnings
    assert response.answer.scene_graph.header.frame_id == OPTICAL
