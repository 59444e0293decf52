"""Bad input through the running node: every case comes back with a clear reason (or a bounded
answer), and the node answers a good request right after it.

Frames (malformed colour frames, a bad frame's reason in /diagnostics and cleared after,
compressed frames that do not decode or claim 12000x12000 pixels), depth (no valid pixel,
unsupported encoding), camera_info (zero, NaN, negative and 1e-30 focal lengths, another size,
none at all), the other request paths (action and ~/question, options, inactive node), model
output (empty, not in the format, enormous, non-finite numbers, thousands of objects, megabyte
ids, code, NUL) and deadlines that are infinite or absurdly large.

More of the matrix runs in test_node_openai.py (unknown encoding, other aspect ratio, no
depth, old and future stamps, empty and 100 kB questions, full queue, deadline in the queue,
K all zeros) and test_node_modes.py (query before any frame). One module-scoped node serves
every case here (a node start costs 1-2 s of CI time); the compressed-input cases share a
second, namespaced one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import GetState
from node_harness import (
    DEMO_SCENE,
    NodeProcess,
    camera_info_for,
    openai_params,
    running_node,
    scripted_reply,
    still_serving,
)
from png_bomb import png_bomb
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_msgs.srv import Query
from spatialthinker_ros.core.images import numpy_to_image
from spatialthinker_ros.ros import service_calls

SCENE = DEMO_SCENE
GOOD_QUESTION = "Is the red box in front of or behind the green box?"

pytestmark = pytest.mark.usefixtures("healthy_camera")


@pytest.fixture(scope="module")
def node(server, rig):
    # openai.timeout stays at its default: request_timeout (20 s) is every case's deadline.
    with running_node(rig, openai_params(server.base_url, {"model": "bad-inputs"})) as process:
        yield process


# --------------------------------------------------------------------------- colour frames


def _colour_with(**fields):
    msg = numpy_to_image(SCENE.rgb, "rgb8")
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"data": bytes(1000)}, "shorter"),
        ({"height": 0, "width": 0, "step": 0, "data": b""}, "zero"),
        ({"step": 100}, "step"),
    ],
    ids=["data shorter than step x height", "zero-size image", "step smaller than a row"],
)
def test_malformed_colour_frames_are_refused_with_the_reason(node, rig, fields, reason) -> None:
    bad = _colour_with(**fields)
    rig.colour_override = lambda: bad
    rig.settle()
    response = rig.query()
    assert not response.success
    assert "colour frame unusable" in response.message
    assert reason in response.message.lower(), response.message
    still_serving(rig, node)


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
    still_serving(rig, node)
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


@pytest.fixture(scope="class")
def compressed(rig, server):
    """A second node, namespaced (/compressed) so it does not clash with the module's node,
    reading ``image/compressed`` from a publisher of this test's own: it sends ``frame[0]``
    (restamped) every 0.2 s once a test puts a frame there."""
    frame: list[CompressedImage] = []
    with rig.side_node("compressed_camera") as side:
        publisher = side.create_publisher(
            CompressedImage, "/compressed/image/compressed", rig._image_pub.qos_profile
        )

        def publish() -> None:
            if frame:
                frame[0].header.stamp = side.get_clock().now().to_msg()
                publisher.publish(frame[0])

        side.create_timer(0.2, publish)
        process = NodeProcess(
            {
                "backend": "openai",
                "model": "m",
                "openai.base_url": server.base_url,
                "image_transport": "compressed",
                "use_depth": False,
            },
            remaps={"__ns": "/compressed", "image/compressed": "/compressed/image/compressed"},
        )
        client = side.create_client(Query, "/compressed/spatialthinker/query")
        get_state = side.create_client(GetState, "/compressed/spatialthinker/get_state")

        def query() -> Query.Response:
            return rig.wait_future(client.call_async(Query.Request(question="Which?")), 30)

        try:
            assert client.wait_for_service(timeout_sec=60), process.log()
            for _ in range(600):
                # get_state is a read: a response lost on Jazzy is asked for again.
                state = service_calls.call(get_state, GetState.Request(), 60, attempt_timeout=2)
                if state.current_state.label == "active":
                    break
                time.sleep(0.1)
            yield SimpleNamespace(process=process, frame=frame, query=query)
        finally:
            assert process.stop() == 0, process.log()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class TestCompressedInput:
    """image_transport compressed: frames that do not decode, and a decompression bomb."""

    def test_compressed_frames_that_do_not_decode(self, node, rig, compressed) -> None:
        compressed.frame[:] = [
            CompressedImage(format="jpeg", data=b"\xff\xd8 definitely not a jpeg")
        ]
        rig.settle(2.0)
        response = compressed.query()
        assert not response.success
        assert "colour frame unusable" in response.message
        assert "decode" in response.message.lower(), response.message
        still_serving(rig, node)

    def test_a_png_bomb_on_image_compressed_is_refused_from_its_header(
        self, rig, compressed
    ) -> None:
        compressed.frame[:] = [CompressedImage(format="png", data=png_bomb(12000, 12000))]
        rig.settle(2.0)
        pid = compressed.process.process.pid
        before = _peak_rss_mib(pid)
        for _ in range(3):
            response = compressed.query()
            assert not response.success
            assert "claims 12000x12000 pixels, more than the limit of 4096x4096" in (
                response.message
            ), response.message
        # Decoding it would take 144 MB grey plus 432 MB as RGB per request.
        grown = _peak_rss_mib(pid) - before
        assert grown < 60, f"node peak memory grew by {grown:.0f} MiB"


def test_ask_refuses_a_png_bomb_from_its_header(tmp_path: Path, capsys) -> None:
    # The same bomb through `spatialthinker ask`, which answers through the node's pipeline.
    import resource

    from spatialthinker_ros.cli import main as cli

    image = tmp_path / "bomb.png"
    image.write_bytes(png_bomb(12000, 12000))
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = cli.main(["ask", str(image), "-q", "Which?", "--output", str(tmp_path / "out")])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    err = capsys.readouterr().err
    assert code != 0
    assert "claims 12000x12000 pixels, more than the limit of 4096x4096" in err
    assert grown_mib < 60, f"peak memory grew by {grown_mib:.0f} MiB"


# ----------------------------------------------------------------------------------- depth


def _inf_and_negative_depth():
    depth = np.full(SCENE.depth_m.shape, np.inf, np.float32)
    depth[::2] = -1.0
    depth[1::4] = -np.inf
    return numpy_to_image(depth, "32FC1")


@pytest.mark.parametrize(
    "depth",
    [
        numpy_to_image(np.full(SCENE.depth_m.shape, np.nan, np.float32), "32FC1"),
        numpy_to_image(np.zeros(SCENE.depth_mm.shape, np.uint16), "16UC1"),
        _inf_and_negative_depth(),
    ],
    ids=["all-NaN 32FC1 depth", "all-zero 16UC1 depth", "inf and negative 32FC1 depth"],
)
def test_depth_without_valid_pixels_gives_2d_with_reason(node, rig, depth) -> None:
    rig.depth_override = lambda: depth
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    for obj in response.answer.scene_graph.objects:
        assert not obj.has_3d
        assert "valid" in obj.no_3d_reason, obj.no_3d_reason
        assert math.isfinite(obj.depth_fill)
    assert any("no 3D" in w for w in response.answer.warnings)
    still_serving(rig, node)


def test_depth_with_an_unsupported_encoding_gives_2d_with_reason(node, rig) -> None:
    rig.depth_override = lambda: numpy_to_image(SCENE.rgb, "rgb8")
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    obj = response.answer.scene_graph.objects[0]
    assert not obj.has_3d and "depth frame unusable" in obj.no_3d_reason, obj.no_3d_reason
    still_serving(rig, node)


# ----------------------------------------------------------------------------- camera_info


def _info_with_k(rig, k: list[float]):
    info = rig._info.__class__()
    info.width, info.height = rig._info.width, rig._info.height
    info.k = k
    info.p = [k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


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
    still_serving(rig, node)


def test_garbage_focal_length_is_refused_with_a_reason(node, rig) -> None:
    # Positive and finite, but 1e-30 px: the answer has no 3D instead of centres 1e32 m away.
    info = camera_info_for(DEMO_SCENE, rig.frame_id)
    info.k = [1e-30, 0.0, 320.0, 0.0, 1e-30, 240.0, 0.0, 0.0, 1.0]
    rig.info_override = info
    rig.settle(1.0)
    response = rig.query()
    assert response.success, response.message
    objects = response.answer.scene_graph.objects
    assert objects and not any(o.has_3d for o in objects)
    assert any(
        "camera_info unusable: CameraInfo focal length fx=1e-30" in w
        for w in response.answer.warnings
    ), response.answer.warnings
    still_serving(rig, node)


def test_camera_info_of_another_shape_gives_2d_with_reason(node, rig) -> None:
    info = rig._info.__class__()
    info.width, info.height = 320, 320
    info.k = [300.0, 0.0, 160.0, 0.0, 300.0, 160.0, 0.0, 0.0, 1.0]
    rig.info_override = info
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    obj = response.answer.scene_graph.objects[0]
    assert not obj.has_3d and "camera_info is 320x320" in obj.no_3d_reason, obj.no_3d_reason
    still_serving(rig, node)


def test_missing_camera_info_gives_2d_with_reason(node, rig) -> None:
    rig.send_info = False
    # Re-activating forgets what the node had received, as after a driver restart.
    assert rig.transition(Transition.TRANSITION_DEACTIVATE)
    assert rig.transition(Transition.TRANSITION_ACTIVATE)
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    obj = response.answer.scene_graph.objects[0]
    assert not obj.has_3d and "no camera_info received" in obj.no_3d_reason
    still_serving(rig, node)


# ------------------------------------------------------------------ other request paths


def test_empty_question_through_the_action_is_aborted_with_the_reason(node, rig) -> None:
    rig.settle()
    result = rig.action(QueryAction.Goal(question="   ", options=["a", "b"]))
    assert not result.success and result.message == "question is empty"
    still_serving(rig, node)


def test_inactive_node_answers_the_action_with_the_reason(node, rig) -> None:
    assert rig.transition(Transition.TRANSITION_DEACTIVATE)
    try:
        result = rig.action(QueryAction.Goal(question=GOOD_QUESTION))
        assert not result.success
        assert "not active" in result.message and "inactive" in result.message
    finally:
        assert rig.transition(Transition.TRANSITION_ACTIVATE)
    still_serving(rig, node)


def test_empty_question_on_the_topic_is_answered_on_the_answer_topic(node, rig) -> None:
    rig.settle(0.5)
    sent = time.time()
    rig.question_pub.publish(String(data=""))

    def failure_after_sent(answer) -> bool:
        stamp = answer.header.stamp.sec + answer.header.stamp.nanosec * 1e-9
        return stamp >= sent - 1.0 and any("question is empty" in w for w in answer.warnings)

    answer = rig.latest(rig.answers, failure_after_sent, wait=10)
    assert answer.choice_index == -1
    assert answer.warnings[0].startswith("request failed:")
    still_serving(rig, node)


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
    result = rig.action(QueryAction.Goal(question=GOOD_QUESTION, options=options))
    assert not result.success and reason in result.message, result.message
    still_serving(rig, node)


# ---------------------------------------------------------------------------- model output

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
    ("reply", "expected_warning"),
    [
        ("", "no answer found"),
        ("I think it is probably the red one, but hard to say.", "answer without <answer> tags"),
        ("<answer> (A) in front </answer>" + "<think>" + "blah " * 250_000, "truncated"),
        (
            '<scene>{"objects": [{"id": "cup.1", "bbox": [NaN, 1e309, -1e309, 1e300]},'
            ' {"id": "cup.2", "bbox": [10, 10, 1e300, 1e300]}], "relationships": []}</scene>'
            "<answer> (A) in front </answer>",
            None,
        ),
        (_many_objects(5000, 0), None),
        (_many_objects(3, 1_000_000), None),
        (INJECTION, None),
    ],
    ids=[
        "empty output",
        "output not in the format",
        "enormous output (1.25 MB)",
        "non-finite and huge box numbers",
        "5000 objects",
        "1 MB object id",
        "code in output",
    ],
)
def test_hostile_model_output_gives_a_bounded_finite_answer(
    node, rig, server, reply, expected_warning
) -> None:
    server.add_replies(reply)
    rig.settle(0.2)
    response = rig.query(wait=30)
    assert response.success, response.message
    answer = response.answer
    if expected_warning is not None:
        # Answered, with what was wrong with the output.
        assert answer.strict_format is False
        assert any(expected_warning in w for w in answer.warnings), list(answer.warnings)
    graph = answer.scene_graph
    assert len(graph.objects) <= 100 and len(graph.relations) <= 100
    for obj in graph.objects:
        box = (obj.x_min, obj.y_min, obj.x_max, obj.y_max)
        assert all(math.isfinite(v) for v in box), box
        # Clipped to the 640x480 source image.
        assert 0 <= obj.x_min <= obj.x_max <= 640 and 0 <= obj.y_min <= obj.y_max <= 480, box
        assert len(obj.id) <= 256 and len(obj.label) <= 256
    # Published text stays bounded whatever the model wrote.
    assert len(answer.raw_output) <= 32768 and len(answer.reasoning) <= 32768
    assert len(answer.observation) <= 4096
    assert len(answer.warnings) <= 64 and all(len(w) <= 1024 for w in answer.warnings)
    still_serving(rig, node)


def test_nul_in_model_output_does_not_cut_the_answer(node, rig, server) -> None:
    reply = scripted_reply(DEMO_SCENE)
    server.add_replies(lambda body: reply(body).replace("<answer> ", "<answer> \x00"))
    rig.settle()
    response = rig.query(wait=30)
    assert response.success, response.message
    assert response.answer.answer == "(A) in front"
    assert "\x00" not in response.answer.raw_output
    assert response.answer.raw_output.endswith("<answer> (A) in front </answer>")


# ---------------------------------------------------------------- deadlines out of range
# Last in the module: if one of these kills the node, the cases above have already run.


@pytest.mark.parametrize("timeout", [float("inf"), 1e300], ids=["infinite", "1e300 s"])
def test_an_action_with_an_out_of_range_deadline_gets_its_result(node, rig, timeout) -> None:
    rig.settle()
    result = rig.action(QueryAction.Goal(question=GOOD_QUESTION, timeout=timeout))
    assert result.success or "timeout" in result.message, result.message
    still_serving(rig, node)


@pytest.mark.parametrize("timeout", [1e300, float("inf")], ids=["1e300 s", "infinite"])
def test_a_query_with_an_out_of_range_deadline_gets_exactly_one_response(
    node, rig, timeout
) -> None:
    # Was a bug (see docs/hardening.md): the service path waited with
    # threading.Event.wait(deadline - now), which raises OverflowError for such a deadline;
    # the exception escaped the executor and the node process died without answering.
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
    still_serving(rig, node)
