"""Issue 17 through the running node: hostile servers, bombs and garbage camera_info.

The node runs as a robot runs it, with the openai backend against the scripted server on
loopback (a stand-in for vLLM that misbehaves on purpose):

* a server dripping one byte at a time fails the call with the true reason ("timed out after
  2.0 s", openai.timeout) long before request_timeout, and /diagnostics shows ERROR with it;
* a reply whose ``id`` echoes the API key (and has no choices) leaks it nowhere: not into the
  response, the node's log or /diagnostics;
* NUL in the model's text does not cut the published answer;
* a 12000 x 12000 PNG of a few hundred kB on ``image/compressed`` is refused from its header
  with the reason, and the node's peak memory stays where it was;
* camera_info with fx = 1e-30 (positive, finite, garbage) is refused with the reason: the answer
  has no 3D instead of centres 1e32 m away.

Engine-level behaviour behind these (a stalled batch-mate, size bounds, cancellation closing the
connection) is tested in test_engine.py and test_openai_hostile_server.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.srv import GetState
from node_harness import DEMO_SCENE, NodeProcess, Rig, camera_info_for, running_node, scripted_reply
from scripted_openai_server import RawReply, ScriptedOpenAIServer, completion_body
from sensor_msgs.msg import CompressedImage
from test_images import png_bomb

from spatialthinker_msgs.srv import Query

KEY = "sk-hardening-test-5f2b9c0d1e"
OPENAI_TIMEOUT = 2.0
REQUEST_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def hostile():
    with ScriptedOpenAIServer(default_reply=scripted_reply(DEMO_SCENE)) as server:
        yield server


@pytest.fixture(scope="module")
def node(rig, hostile):
    with running_node(
        rig,
        {
            "backend": "openai",
            "model": "limits",
            "openai.base_url": hostile.base_url,
            "openai.timeout": OPENAI_TIMEOUT,
            "openai.max_retries": 0,
            "request_timeout": REQUEST_TIMEOUT,
            "max_frame_age": 3.0,
            "diagnostics_period": 0.2,
        },
        env={"OPENAI_API_KEY": KEY},
    ) as process:
        yield process


def _engine_status(rig: Rig, predicate, after: int) -> DiagnosticStatus:
    """The newest engine status published after ``after`` arrays that satisfies ``predicate``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for array in reversed(list(rig.diagnostics)[after:]):
            for status in array.status:
                if "engine" in status.name and predicate(status):
                    return status
        time.sleep(0.05)
    raise AssertionError("no such engine diagnostics")


def _serving(rig: Rig) -> None:
    rig.info_override = None
    rig.settle()
    response = rig.query(wait=REQUEST_TIMEOUT + 20)
    assert response.success, response.message
    assert response.answer.scene_graph.objects[0].has_3d


def test_a_dripping_server_fails_at_openai_timeout_and_shows_error(rig, hostile, node) -> None:
    rig.settle(1.0)
    hostile.add_replies(RawReply(body=completion_body("x"), drip_s=0.2, endless=True))
    seen = len(rig.diagnostics)
    response = rig.query(wait=REQUEST_TIMEOUT + 20)
    assert not response.success
    assert response.message == f"request to {hostile.base_url} timed out after 2.0 s"
    status = _engine_status(rig, lambda s: s.level == DiagnosticStatus.ERROR, seen)
    assert "timed out after 2.0 s" in status.message
    seen = len(rig.diagnostics)
    _serving(rig)  # the next answer clears it
    _engine_status(rig, lambda s: s.level == DiagnosticStatus.OK, seen)


def test_a_key_echoed_in_a_reply_without_choices_leaks_nowhere(rig, hostile, node) -> None:
    rig.settle()
    hostile.add_replies(RawReply(body=completion_body("x", id=KEY, choices=[])))
    seen = len(rig.diagnostics)
    response = rig.query(wait=REQUEST_TIMEOUT + 20)
    assert not response.success
    assert "no choices" in response.message and "[redacted]" in response.message
    assert KEY not in response.message
    status = _engine_status(rig, lambda s: s.level == DiagnosticStatus.ERROR, seen)
    texts = [status.message] + [f"{v.key}={v.value}" for v in status.values]
    assert any("[redacted]" in text for text in texts)
    assert not any(KEY in text for text in texts)
    assert KEY not in node.log()
    _serving(rig)


def test_nul_in_model_output_does_not_cut_the_answer(rig, hostile, node) -> None:
    reply = scripted_reply(DEMO_SCENE)
    hostile.add_replies(lambda body: reply(body).replace("<answer> ", "<answer> \x00"))
    rig.settle()
    response = rig.query(wait=REQUEST_TIMEOUT + 20)
    assert response.success, response.message
    assert response.answer.answer == "(A) in front"
    assert "\x00" not in response.answer.raw_output
    assert response.answer.raw_output.endswith("<answer> (A) in front </answer>")


def test_garbage_focal_length_is_refused_with_a_reason(rig, hostile, node) -> None:
    info = camera_info_for(DEMO_SCENE, rig.frame_id)
    info.k = [1e-30, 0.0, 320.0, 0.0, 1e-30, 240.0, 0.0, 0.0, 1.0]
    rig.info_override = info
    rig.settle(1.0)
    response = rig.query(wait=REQUEST_TIMEOUT + 20)
    assert response.success, response.message
    objects = response.answer.scene_graph.objects
    assert objects and not any(o.has_3d for o in objects)
    assert any(
        "camera_info unusable: CameraInfo focal length fx=1e-30" in w
        for w in response.answer.warnings
    ), response.answer.warnings
    _serving(rig)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_png_bomb_on_image_compressed_is_refused_from_its_header(rig, hostile, node) -> None:
    bomb = CompressedImage(format="png", data=png_bomb(12000, 12000))
    publisher = rig.node.create_publisher(
        CompressedImage, "/limits/image/compressed", rig._image_pub.qos_profile
    )

    def publish() -> None:
        bomb.header.stamp = rig.node.get_clock().now().to_msg()
        publisher.publish(bomb)

    timer = rig.node.create_timer(0.2, publish)
    process = NodeProcess(
        {
            "backend": "openai",
            "model": "m",
            "openai.base_url": hostile.base_url,
            "image_transport": "compressed",
            "use_depth": False,
        },
        remaps={"__ns": "/limits", "image/compressed": "/limits/image/compressed"},
    )
    client = rig.node.create_client(Query, "/limits/spatialthinker/query")
    get_state = rig.node.create_client(GetState, "/limits/spatialthinker/get_state")
    try:
        assert client.wait_for_service(timeout_sec=60)
        assert get_state.wait_for_service(timeout_sec=60)
        for _ in range(600):
            state = rig.wait_future(get_state.call_async(GetState.Request()), 10).current_state
            if state.label == "active":
                break
            time.sleep(0.1)
        rig.settle(2.0)
        before = _peak_rss_mib(process.process.pid)
        for _ in range(3):
            response = rig.wait_future(client.call_async(Query.Request(question="Which?")), 30)
            assert not response.success
            assert "claims 12000x12000 pixels, more than the limit of 4096x4096" in (
                response.message
            ), response.message
        # Decoding it would take 144 MB grey plus 432 MB as RGB per request.
        grown = _peak_rss_mib(process.process.pid) - before
        assert grown < 60, f"node peak memory grew by {grown:.0f} MiB"
    finally:
        rig.node.destroy_timer(timer)
        rig.node.destroy_client(client)
        rig.node.destroy_client(get_state)
        assert process.stop() == 0, process.log()


def test_ask_refuses_a_png_bomb_from_its_header(tmp_path: Path, capsys) -> None:
    import resource

    from spatialthinker_ros import cli

    image = tmp_path / "bomb.png"
    image.write_bytes(png_bomb(12000, 12000))
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = cli.main(["ask", str(image), "-q", "Which?", "--output", str(tmp_path / "out")])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    err = capsys.readouterr().err
    assert code != 0
    assert "claims 12000x12000 pixels, more than the limit of 4096x4096" in err
    assert grown_mib < 60, f"peak memory grew by {grown_mib:.0f} MiB"
