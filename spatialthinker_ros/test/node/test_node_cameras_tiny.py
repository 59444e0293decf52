"""Several cameras on one in-process model (issue 23): the tiny transformers model, loaded once
for two cameras, answers ``~/query_all`` in one model call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_harness import NODE, Rig, running_node
from script_process import ScriptProcess

from spatialthinker_msgs.srv import QueryAll

CAMERAS = {"left": "/tiny_left", "right": "/tiny_right"}


@pytest.fixture(scope="module")
def cameras() -> Iterator[None]:
    processes = []
    try:
        for name, prefix in CAMERAS.items():
            scene = "wide" if name == "right" else "demo"
            processes.append(
                ScriptProcess("camera_process.py", prefix, "10", scene, f"{name}_optical")
            )
        yield
    finally:
        for process in processes:
            process.close()


def test_one_backend_answers_every_camera_in_one_batch(
    rig: Rig, tiny_model_dir: Path, cameras
) -> None:
    rig.camera_on = False
    params = {
        "backend": "transformers",
        "model": str(tiny_model_dir),
        "max_new_tokens": 24,
        "cameras": list(CAMERAS),
    }
    remaps = {
        f"{name}/{topic}": f"{prefix}/{topic}"
        for name, prefix in CAMERAS.items()
        for topic in ("image", "depth", "camera_info")
    }
    try:
        with (
            running_node(rig, params, remaps=remaps, timeout=120) as process,
            rig.side_node("tiny_query_all") as side,
        ):
            client = side.create_client(QueryAll, f"{NODE}/query_all")
            assert client.wait_for_service(timeout_sec=30.0)
            reply = None
            for _ in range(20):  # the camera processes' first frames need a moment
                request = QueryAll.Request(question="Which box is nearest?", options=["a", "b"])
                reply = rig.wait_future(client.call_async(request), 120.0)
                if all(a.success for a in reply.answers):
                    break
                time.sleep(1.0)
            assert reply is not None
            assert [a.camera for a in reply.answers] == list(CAMERAS)
            for item in reply.answers:
                assert item.success, item.message
                assert item.answer.camera == item.camera
                assert item.answer.model == str(tiny_model_dir)
                # Both cameras' requests went into one call of the in-process model.
                assert item.answer.batch_size == 2
            # One backend, one model load, whatever the number of cameras.
            log = process.log()
            assert log.count("loading backend 'transformers'") == 1, log[-3000:]
    finally:
        rig.camera_on = True
