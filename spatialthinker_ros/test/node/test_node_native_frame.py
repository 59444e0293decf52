"""coordinate_policy 'native' through the node: the size warning, once, in the log and /diagnostics.

The node is a real subprocess answering through the scripted OpenAI-compatible server. The
demo camera is 640x480; a max_pixels of 128 visual tokens makes the processor scale it down,
so 'native' states a size the model does not see.
"""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import openai_params, running_node

from spatialthinker_ros.core.model_frame import native_frame_warning

MAX_PIXELS = 128 * 28 * 28


@pytest.fixture(scope="module")
def node(server, rig):
    params = openai_params(
        server.base_url,
        {
            "model": "spatialthinker-test",
            "coordinate_policy": "native",
            "min_pixels": 3136,
            "max_pixels": MAX_PIXELS,
        },
    )
    with running_node(rig, params) as process:
        yield process


def test_native_size_warning_once_in_log_and_diagnostics(node, rig) -> None:
    expected = native_frame_warning(640, 480, 3136, MAX_PIXELS)
    assert expected is not None and "states 640 x 480" in expected
    rig.settle()
    for _ in range(2):
        response = rig.query(wait=30)
        # A warning, not a failure: the node keeps answering.
        assert response.success, response.message

    def frame_status(array) -> bool:
        return any(
            "engine" in s.name and any(v.key == "model frame" for v in s.values)
            for s in array.status
        )

    array = rig.latest(rig.diagnostics, frame_status, wait=10)
    status = next(s for s in array.status if "engine" in s.name)
    assert status.level == DiagnosticStatus.WARN
    assert "'native' states a size the model does not see" in status.message
    assert {v.key: v.value for v in status.values}["model frame"] == expected
    assert node.log().count(expected) == 1
