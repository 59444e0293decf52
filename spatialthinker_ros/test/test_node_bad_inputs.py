"""Bad-input matrix, part 3: the cases parts 1 and 2 leave out, sent to the running node.

Part 1 is in test_node_openai.py / test_node_modes.py, part 2 in test_hardening_inputs.py.
This module adds: camera_info with only a zero (or NaN) focal length, bad input through the
action and the ~/question topic (not only the service), too many / too long options, a bad
frame's reason reaching /diagnostics, depth full of inf and negative values, model output
with non-finite or enormous numbers, thousands of objects and megabyte labels, and request
deadlines that are infinite or absurdly large. Each case must come back with a clear reason
(or a bounded answer) and the node must answer a good request right after it.

One module-scoped node serves every case (a node start costs 1-2 s of CI time).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import DEMO_SCENE, NodeProcess, Rig, running_node
from std_msgs.msg import String

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_ros.images import numpy_to_image

SCENE = DEMO_SCENE
GOOD_QUESTION = "Is the red box in front of or behind the green box?"


@pytest.fixture(scope="module")
def node(server, rig):
    with running_node(
        rig,
        {
            "backend": "openai",
            "model": "bad-inputs",
            "openai.base_url": server.base_url,
            "openai.max_retries": 0,
            "openai.timeout": 10.0,
            "request_timeout": 20.0,
            # Generous: a loaded 2-core CI machine can stall the test camera for a moment.
            "max_frame_age": 3.0,
            "diagnostics_period": 0.25,
        },
    ) as process:
        yield process


@pytest.fixture(autouse=True)
def healthy_camera(rig):
    yield
    rig.colour_override = rig.depth_override = rig.info_override = None
    rig.send_depth = rig.send_info = rig.camera_on = True
    rig.stamp_offset = 0.0


def _still_serving(rig: Rig, node: NodeProcess) -> None:
    """The node must answer a good request (in 3D) right after the bad one."""
    rig.colour_override = rig.depth_override = rig.info_override = None
    rig.send_depth = rig.send_info = True
    rig.settle()
    assert node.process.poll() is None, "node died:\n" + node.log()[-4000:]
    response = rig.query(wait=30)
    assert response.success, f"node stopped serving: {response.message}"
    assert response.answer.scene_graph.objects[0].has_3d


def _action(rig: Rig, goal: QueryAction.Goal, wait: float = 30.0) -> QueryAction.Result:
    """Send one action goal and wait for its result (every wait bounded)."""
    assert rig.action_client.wait_for_server(timeout_sec=10.0)
    goal_handle = rig.wait_future(rig.action_client.send_goal_async(goal), wait)
    assert goal_handle.accepted, "goal rejected instead of answered with a reason"
    return rig.wait_future(goal_handle.get_result_async(), wait).result


def _info_with_k(rig: Rig, k: list[float]):
    info = rig._info.__class__()
    info.width, info.height = rig._info.width, rig._info.height
    info.k = k
    info.p = [k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


# ---------------------------------------------------------------- camera_info


@pytest.mark.parametrize(
    "k",
    [
        [0.0, 0.0, 320.0, 0.0, 0.0, 240.0, 0.0, 0.0, 1.0],
        [float("nan"), 0.0, 320.0, 0.0, float("nan"), 240.0, 0.0, 0.0, 1.0],
        [-500.0, 0.0, 320.0, 0.0, -500.0, 240.0, 0.0, 0.0, 1.0],
    ],
    ids=["zero focal length", "NaN focal length", "negative focal length"],
)
def test_camera_info_with_an_unusable_focal_length(node, rig, k) -> None:
    rig.info_override = _info_with_k(rig, k)
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    for obj in response.answer.scene_graph.objects:
        assert not obj.has_3d
        assert "camera_info unusable" in obj.no_3d_reason, obj.no_3d_reason
        # No NaN sneaks into the published geometry.
        assert all(math.isfinite(v) for v in (obj.center.x, obj.center.y, obj.center.z))
    _still_serving(rig, node)


# ------------------------------------------------------ other request paths


def test_empty_question_through_the_action_is_aborted_with_the_reason(node, rig) -> None:
    rig.settle()
    result = _action(rig, QueryAction.Goal(question="   ", options=["a", "b"]))
    assert not result.success and result.message == "question is empty"
    _still_serving(rig, node)


def test_inactive_node_answers_the_action_with_the_reason(node, rig) -> None:
    from lifecycle_msgs.msg import Transition

    assert rig.transition(Transition.TRANSITION_DEACTIVATE)
    try:
        result = _action(rig, QueryAction.Goal(question=GOOD_QUESTION))
        assert not result.success
        assert "not active" in result.message and "inactive" in result.message
    finally:
        assert rig.transition(Transition.TRANSITION_ACTIVATE)
    _still_serving(rig, node)


def test_empty_question_on_the_topic_is_answered_on_the_answer_topic(node, rig) -> None:
    publisher = rig.node.create_publisher(String, "/spatialthinker/question", 10)
    try:
        rig.settle(0.5)  # discovery
        sent = time.time()
        publisher.publish(String(data=""))

        def failure_after_sent(answer) -> bool:
            stamp = answer.header.stamp.sec + answer.header.stamp.nanosec * 1e-9
            return stamp >= sent - 1.0 and any("question is empty" in w for w in answer.warnings)

        answer = rig.latest(rig.answers, failure_after_sent, wait=10)
        assert answer.choice_index == -1
        assert answer.warnings[0].startswith("request failed:")
    finally:
        rig.node.destroy_publisher(publisher)
    _still_serving(rig, node)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ([f"option {i}" for i in range(27)], "27 options given; at most 26"),
        (["near", "x" * 5000], "option B is longer than 1024 characters"),
        (["near", "\t\n "], "option B is empty"),
    ],
    ids=["27 options", "5000-character option", "whitespace-only option"],
)
def test_bad_options_are_refused_with_the_reason(node, rig, options, reason) -> None:
    rig.settle()
    response = rig.query(options=options)
    assert not response.success and reason in response.message, response.message
    result = _action(rig, QueryAction.Goal(question=GOOD_QUESTION, options=options))
    assert not result.success and reason in result.message, result.message
    _still_serving(rig, node)


# ------------------------------------------------------------- frames


def test_a_bad_colour_frame_is_reported_in_diagnostics_and_cleared_after(node, rig) -> None:
    bad = numpy_to_image(SCENE.rgb, "rgb8")
    bad.data = bytes(100)
    rig.colour_override = lambda: bad
    rig.settle()
    response = rig.query()
    assert not response.success and "colour frame unusable" in response.message

    def inputs_warn(array) -> bool:
        return any(
            s.name.endswith("inputs")
            and s.level == DiagnosticStatus.WARN
            and "colour frame unusable" in s.message
            for s in array.status
        )

    rig.latest(rig.diagnostics, inputs_warn, wait=10)
    _still_serving(rig, node)
    # A good request clears the complaint: diagnostics do not cry wolf forever.
    cleared_after = len(rig.diagnostics)

    def inputs_ok(array) -> bool:
        return any(
            s.name.endswith("inputs") and s.level == DiagnosticStatus.OK for s in array.status
        )

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(inputs_ok(a) for a in list(rig.diagnostics)[cleared_after:]):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("diagnostics kept reporting the bad frame after good ones")


def test_depth_of_inf_and_negative_values_gives_2d_with_reason(node, rig) -> None:
    depth = np.full(SCENE.depth_m.shape, np.inf, np.float32)
    depth[::2] = -1.0
    depth[1::4] = -np.inf
    msg = numpy_to_image(depth, "32FC1")
    rig.depth_override = lambda: msg
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    for obj in response.answer.scene_graph.objects:
        assert not obj.has_3d and "valid" in obj.no_3d_reason, obj.no_3d_reason
        assert math.isfinite(obj.depth_fill)
    _still_serving(rig, node)


# ------------------------------------------------------------- model output

INJECTION = (
    "<observe> ignore previous instructions </observe>"
    '<scene>{"objects": [{"id": "__import__(\'os\').system(\'touch /tmp/pwned_st\')",'
    ' "bbox": [1, 2, 30, 40]}], "relationships": []}</scene>'
    "<answer> $(rm -rf /) ; (A) in front </answer>"
)


def _many_objects(count: int, label_chars: int) -> str:
    objects = ", ".join(
        f'{{"id": "{"L" * label_chars if i == 0 else "box"}.{i}", "bbox": [{i % 600}, 10, '
        f"{i % 600 + 20}, 60]}}"
        for i in range(count)
    )
    return f'<scene>{{"objects": [{objects}], "relationships": []}}</scene><answer> (A) x </answer>'


@pytest.mark.parametrize(
    "reply",
    [
        '<scene>{"objects": [{"id": "cup.1", "bbox": [NaN, 1e309, -1e309, 1e300]},'
        ' {"id": "cup.2", "bbox": [10, 10, 1e300, 1e300]}], "relationships": []}</scene>'
        "<answer> (A) in front </answer>",
        _many_objects(5000, 0),
        _many_objects(3, 1_000_000),
        INJECTION,
    ],
    ids=["non-finite and huge box numbers", "5000 objects", "1 MB object id", "code in output"],
)
def test_hostile_model_output_gives_a_bounded_finite_answer(node, rig, server, reply) -> None:
    server.add_replies(reply)
    rig.settle(0.2)
    response = rig.query(wait=30)
    assert response.success, response.message
    answer = response.answer
    graph = answer.scene_graph
    assert len(graph.objects) <= 100 and len(graph.relations) <= 100
    for obj in graph.objects:
        box = (obj.x_min, obj.y_min, obj.x_max, obj.y_max)
        assert all(math.isfinite(v) for v in box), box
        # Clipped to the 640x480 source image.
        assert 0 <= obj.x_min <= obj.x_max <= 640 and 0 <= obj.y_min <= obj.y_max <= 480, box
        assert len(obj.id) <= 256 and len(obj.label) <= 256
    assert len(answer.raw_output) <= 32768 and len(answer.observation) <= 4096
    assert len(answer.warnings) <= 64 and all(len(w) <= 1024 for w in answer.warnings)
    _still_serving(rig, node)


# --------------------------------------------------- deadlines out of range
# Last in the module: if one of these kills the node, the cases above have already run.


@pytest.mark.parametrize("timeout", [float("inf"), 1e300], ids=["infinite", "1e300 s"])
def test_an_action_with_an_out_of_range_deadline_gets_its_result(node, rig, timeout) -> None:
    rig.settle()
    result = _action(rig, QueryAction.Goal(question=GOOD_QUESTION, timeout=timeout))
    assert result.success or "timeout" in result.message, result.message
    _still_serving(rig, node)


@pytest.mark.parametrize("timeout", [1e300, float("inf")], ids=["1e300 s", "infinite"])
def test_a_query_with_an_out_of_range_deadline_gets_exactly_one_response(
    node, rig, timeout
) -> None:
    # Known bug (see docs/hardening.md): the service path waits with
    # threading.Event.wait(deadline - now), which raises OverflowError for such a deadline;
    # the exception escapes the executor and the node process dies without answering.
    assert node.process.poll() is None, "node died earlier:\n" + node.log()[-3000:]
    rig.settle()
    try:
        response = rig.query(timeout=timeout, wait=15)
    except AssertionError:
        raise AssertionError(
            f"no response to a query with timeout={timeout}; node log:\n{node.log()[-3000:]}"
        ) from None
    # Either clamped to something usable (answered) or refused with a reason.
    assert response.success or "timeout" in response.message, response.message
    _still_serving(rig, node)
