"""spatialthinker_node in other set-ups: the tiny transformers model, no frames yet,
continuous mode, compressed input. Each test starts its own node subprocess."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from node_harness import DEMO_SCENE, SCRIPTED_OBJECTS, NodeProcess, Rig, running_node

from spatialthinker_ros.core.images import encode_compressed_depth, encode_compressed_image

SCENE = DEMO_SCENE


def test_transformers_backend_with_the_tiny_model_answers(rig, tiny_model_dir) -> None:
    with running_node(
        rig,
        {"backend": "transformers", "model": str(tiny_model_dir), "max_new_tokens": 24},
        timeout=120,
    ):
        rig.settle()
        response = rig.query(wait=120)
        assert response.success, response.message
        answer = response.answer
        # A random model writes noise: the raw output arrives, and the parser says
        # what was wrong with it instead of the node failing.
        assert answer.raw_output
        assert answer.strict_format is False
        assert answer.warnings
        assert answer.model == str(tiny_model_dir)
        assert answer.inference_s > 0
        # Still serving afterwards.
        assert rig.query(question="And now?", wait=120).success


def test_missing_model_fails_configure_with_a_clear_log(rig, tmp_path) -> None:
    missing = tmp_path / "no_such_model"
    process = NodeProcess({"backend": "transformers", "model": str(missing)})
    try:
        assert rig.query_client.wait_for_service(timeout_sec=60)
        response = rig.query()
        assert not response.success and "unconfigured" in response.message
        assert str(missing) in process.log()
    finally:
        assert process.stop() == 0, process.log()


def test_query_before_any_frame_fails_clearly(rig, server) -> None:
    rig.camera_on = False
    try:
        with running_node(
            rig,
            {"backend": "openai", "model": "m", "openai.base_url": server.base_url},
            remaps={
                "image": "/silent/image",
                "depth": "/silent/depth",
                "camera_info": "/silent/info",
            },
            timeout=120,
        ):
            response = rig.query()
            assert not response.success
            assert "no colour frame received yet" in response.message
    finally:
        rig.camera_on = True


def test_continuous_mode_publishes_answers_at_its_rate(rig, server) -> None:
    before = len(server.completion_requests)
    with running_node(
        rig,
        {
            "backend": "openai",
            "model": "m",
            "openai.base_url": server.base_url,
            "rate_hz": 4.0,
            "continuous_question": "Is the red box in front of the green box?",
            "continuous_options": "in front|behind",
        },
        timeout=120,
    ):
        answer = rig.latest(
            rig.answers, lambda a: a.request_id.startswith("continuous-") and a.choice == "A", 20
        )
        assert list(answer.options) == ["in front", "behind"]
        rig.settle(1.5)
        continuous = [a for a in rig.answers if a.request_id.startswith("continuous-")]
        assert len(continuous) >= 3
        # A query still gets through while the standing question runs.
        assert rig.query().success
        assert len(server.completion_requests) - before >= 4


@contextlib.contextmanager
def _compressed_node(
    rig: Rig, server, msg, topic: str, qos, params: dict, remaps: dict
) -> Iterator[None]:
    """A node reading one input compressed: ``msg`` published on ``topic`` at 10 Hz beside
    the rig's own frames (stamped apart from them, so the node allows a wider sync_slop)."""
    with rig.side_node("compressed_camera") as side:
        publisher = side.create_publisher(type(msg), topic, qos)
        side.create_timer(0.1, lambda: _publish_stamped(rig, side, publisher, msg))
        node_params = {"backend": "openai", "model": "m", "openai.base_url": server.base_url}
        with running_node(
            rig,
            {**node_params, **params, "sync_slop": 0.2},
            remaps={**remaps, "camera_info": "/test_cam/camera_info"},
            timeout=120,
        ):
            rig.settle()
            yield


def test_compressed_colour_input(rig, server) -> None:
    jpeg = encode_compressed_image(SCENE.rgb, "jpeg")
    with _compressed_node(
        rig,
        server,
        jpeg,
        "/test_cam/image/compressed",
        rig._image_pub.qos_profile,
        {"image_transport": "compressed"},
        {"image/compressed": "/test_cam/image/compressed", "depth": "/test_cam/depth"},
    ):
        response = rig.query()
        assert response.success, response.message
        assert response.answer.scene_graph.objects[0].has_3d


def test_compressed_depth_input(rig, server) -> None:
    """depth_transport compressedDepth: 16UC1 depth sent through image_transport's
    compressed_depth plugin (PNG) lifts the objects as raw depth does."""
    packed = encode_compressed_depth(SCENE.depth_mm, "16UC1")
    topic = "/test_cam/depth/compressedDepth"
    with _compressed_node(
        rig,
        server,
        packed,
        topic,
        rig._depth_pub.qos_profile,
        {"depth_transport": "compressedDepth"},
        {"image": "/test_cam/image", "depth/compressedDepth": topic},
    ):
        response = rig.query()
        assert response.success, response.message
        for obj in response.answer.scene_graph.objects:
            truth = SCENE.objects[SCRIPTED_OBJECTS[obj.id]]
            assert obj.has_3d, obj.no_3d_reason
            assert abs(obj.center.x - truth.center[0]) < 0.03
            assert abs(obj.surface.z - (truth.center[2] - truth.size[2] / 2)) < 0.03


def _publish_stamped(rig: Rig, node, publisher, msg) -> None:
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = rig.frame_id
    publisher.publish(msg)
