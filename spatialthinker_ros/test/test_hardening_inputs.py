"""Bad-input matrix, part 2: malformed frames, bad depth and camera_info, odd model outputs.

Part 1 (unknown encoding, other aspect ratio, no depth, old and future stamps, empty and
100 kB questions, empty options, full queue, deadline in queue, inactive node, K all zeros,
query before any frame) is in test_node_openai.py and test_node_modes.py. Each case here is
sent to the running node, must come back with a clear reason, and the node must answer a
good request right after it.
"""

from __future__ import annotations

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from node_harness import DEMO_SCENE, NodeProcess, Rig, running_node
from sensor_msgs.msg import CompressedImage

from spatialthinker_msgs.srv import Query
from spatialthinker_ros.images import numpy_to_image

SCENE = DEMO_SCENE


@pytest.fixture(scope="module")
def node(server, rig):
    with running_node(
        rig,
        {
            "backend": "openai",
            "model": "hardening",
            "openai.base_url": server.base_url,
            "openai.max_retries": 0,
            "request_timeout": 20.0,
            # Generous: a loaded 2-core CI machine can stall the test camera for a moment.
            "max_frame_age": 3.0,
        },
    ) as process:
        yield process


@pytest.fixture(autouse=True)
def healthy_camera(rig):
    yield
    rig.colour_override = rig.depth_override = rig.info_override = None
    rig.send_depth = rig.send_info = rig.camera_on = True


def _still_serving(rig: Rig) -> None:
    rig.colour_override = rig.depth_override = rig.info_override = None
    rig.send_depth = rig.send_info = True
    rig.settle()
    response = rig.query()
    assert response.success, f"node stopped serving: {response.message}"
    assert response.answer.scene_graph.objects[0].has_3d


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
    _still_serving(rig)


@pytest.mark.parametrize(
    "depth",
    [
        numpy_to_image(np.full(SCENE.depth_m.shape, np.nan, np.float32), "32FC1"),
        numpy_to_image(np.zeros(SCENE.depth_mm.shape, np.uint16), "16UC1"),
    ],
    ids=["all-NaN 32FC1 depth", "all-zero 16UC1 depth"],
)
def test_depth_without_valid_pixels_gives_2d_with_reason(node, rig, depth) -> None:
    rig.depth_override = lambda: depth
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    for obj in response.answer.scene_graph.objects:
        assert not obj.has_3d
        assert "valid" in obj.no_3d_reason, obj.no_3d_reason
    assert any("no 3D" in w for w in response.answer.warnings)
    _still_serving(rig)


def test_depth_with_an_unsupported_encoding_gives_2d_with_reason(node, rig) -> None:
    rig.depth_override = lambda: numpy_to_image(SCENE.rgb, "rgb8")
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    obj = response.answer.scene_graph.objects[0]
    assert not obj.has_3d and "depth frame unusable" in obj.no_3d_reason, obj.no_3d_reason
    _still_serving(rig)


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
    _still_serving(rig)


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
    _still_serving(rig)


@pytest.mark.parametrize(
    ("reply", "expected_warning"),
    [
        ("", "no answer found"),
        ("I think it is probably the red one, but hard to say.", "answer without <answer> tags"),
        ("<answer> (A) in front </answer>" + "<think>" + "blah " * 250_000, "truncated"),
    ],
    ids=["empty output", "output not in the format", "enormous output (1.25 MB)"],
)
def test_odd_model_outputs_are_answered_with_warnings(
    node, rig, server, reply, expected_warning
) -> None:
    server.add_replies(reply)
    rig.settle(0.2)
    response = rig.query()
    assert response.success, response.message
    answer = response.answer
    assert answer.strict_format is False
    assert any(expected_warning in w for w in answer.warnings), list(answer.warnings)
    # Published text stays bounded whatever the model wrote.
    assert len(answer.raw_output) <= 32768
    assert len(answer.reasoning) <= 32768
    assert all(len(w) <= 1024 for w in answer.warnings)
    _still_serving(rig)


def test_compressed_frames_that_do_not_decode(rig, server, node) -> None:
    garbage = CompressedImage(format="jpeg", data=b"\xff\xd8 definitely not a jpeg")
    publisher = rig.node.create_publisher(
        CompressedImage, "/hardening/image/compressed", rig._image_pub.qos_profile
    )

    def publish() -> None:
        garbage.header.stamp = rig.node.get_clock().now().to_msg()
        publisher.publish(garbage)

    timer = rig.node.create_timer(0.1, publish)
    # A second node, namespaced so it does not clash with the module's node.
    process = NodeProcess(
        {
            "backend": "openai",
            "model": "m",
            "openai.base_url": server.base_url,
            "image_transport": "compressed",
        },
        remaps={"__ns": "/hardening", "image/compressed": "/hardening/image/compressed"},
    )
    client = rig.node.create_client(Query, "/hardening/spatialthinker/query")
    try:
        assert client.wait_for_service(timeout_sec=60)
        rig.settle(2.0)
        request = Query.Request(question="Which is nearer?")
        response = rig.wait_future(client.call_async(request), 30)
        assert not response.success
        assert "colour frame unusable" in response.message
        assert "decode" in response.message.lower(), response.message
    finally:
        rig.node.destroy_timer(timer)
        rig.node.destroy_client(client)
        assert process.stop() == 0, process.log()
    _still_serving(rig)
