"""Backend faults through the running node (openai backend against a scripted test server).

Server not started, killed mid-request, stalling past the timeout, answering 500s or
malformed JSON, and coming back after an outage. For each: the affected request fails
within its deadline with the reason, /diagnostics shows the backend failing, and the next
request succeeds once the server is back. No call hangs: every wait below is bounded.
(The transformers backend's simulated out-of-memory on a batch is covered in
test_transformers_backend.py: split, retry once, then fail with the reason.)
"""

from __future__ import annotations

import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import DEMO_SCENE, Rig, free_port, running_node, scripted_reply
from scripted_openai_server import ScriptedOpenAIServer

SCENE = DEMO_SCENE
API_KEY_ENV = "SPATIALTHINKER_TEST_API_KEY"
API_KEY = "sk-test-6f1d2c9e-never-log-me"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def node(rig, port):
    # The server is NOT running yet: the node must still configure and serve reasons.
    with running_node(
        rig,
        {
            "backend": "openai",
            "model": "faults",
            "openai.base_url": f"http://127.0.0.1:{port}/v1",
            "openai.api_key_env": API_KEY_ENV,
            "openai.timeout": 1.5,
            "openai.max_retries": 1,
            "request_timeout": 15.0,
            "max_frame_age": 3.0,
            "diagnostics_period": 0.2,
        },
        env={API_KEY_ENV: API_KEY},
    ) as process:
        yield process


def _serve(port: int) -> ScriptedOpenAIServer:
    return ScriptedOpenAIServer(default_reply=scripted_reply(SCENE), port=port).start()


def _engine_status(rig: Rig, predicate) -> DiagnosticStatus:
    def matching(array) -> bool:
        return any("engine" in s.name and predicate(s) for s in array.status)

    array = rig.latest(rig.diagnostics, matching, wait=10)
    return next(s for s in array.status if "engine" in s.name and predicate(s))


def _timed_query(rig: Rig, **kwargs):
    started = time.monotonic()
    response = rig.query(wait=30, **kwargs)
    return response, time.monotonic() - started


def test_server_not_started_then_coming_back(node, rig, port) -> None:
    rig.settle()
    response, seconds = _timed_query(rig)
    assert not response.success
    assert "cannot reach" in response.message and str(port) in response.message
    assert seconds < 15.0
    status = _engine_status(rig, lambda s: s.level == DiagnosticStatus.ERROR)
    assert "backend failing" in status.message
    server = _serve(port)
    try:
        response, _ = _timed_query(rig)
        assert response.success, response.message
        _engine_status(rig, lambda s: s.level == DiagnosticStatus.OK)
    finally:
        server.stop()


def test_500s_malformed_json_then_recovery(node, rig, port) -> None:
    server = _serve(port)
    try:
        rig.settle()
        server.fail_next(2, status=500)  # the first try and its one retry
        response, _ = _timed_query(rig)
        assert not response.success and "HTTP 500" in response.message
        server.malformed_next(1)
        response, _ = _timed_query(rig)
        assert not response.success and "bad response" in response.message
        response, _ = _timed_query(rig)
        assert response.success, response.message
        # One 500 is absorbed by the retry.
        server.fail_next(1, status=503)
        response, _ = _timed_query(rig)
        assert response.success, response.message
    finally:
        server.stop()


def test_stalling_server_times_out_within_the_deadline(node, rig, port) -> None:
    server = _serve(port)
    try:
        rig.settle()
        server.delay_s = 5.0
        response, seconds = _timed_query(rig, timeout=10.0)
        assert not response.success and "timed out" in response.message
        assert seconds < 10.0 + 3.0
        server.delay_s = 0.0
        response, _ = _timed_query(rig)
        assert response.success, response.message
    finally:
        server.stop()


def test_server_killed_mid_request_then_restarted(node, rig, port) -> None:
    server = _serve(port)
    rig.settle()
    server.delay_s = 1.0
    results: list = []
    call = threading.Thread(target=lambda: results.append(_timed_query(rig)))
    call.start()
    time.sleep(0.4)
    server.stop()  # the request in flight loses its connection
    call.join(30)
    assert results, "the call never ended"
    response, seconds = results[0]
    assert not response.success
    assert "cannot reach" in response.message or "bad response" in response.message
    assert seconds < 15.0
    server = _serve(port)
    try:
        response, _ = _timed_query(rig)
        assert response.success, response.message
    finally:
        server.stop()


def test_api_key_only_travels_in_the_authorization_header(node, rig, port) -> None:
    server = _serve(port)
    try:
        rig.settle()
        response, _ = _timed_query(rig)
        assert response.success, response.message
        assert server.headers[-1]["authorization"] == f"Bearer {API_KEY}"
    finally:
        server.stop()
    time.sleep(0.5)  # a few more diagnostics messages
    assert API_KEY not in node.log()
    for array in list(rig.diagnostics):
        for status in array.status:
            assert API_KEY not in status.message
            assert all(API_KEY not in kv.value for kv in status.values)
    # Nothing published carries it either.
    for answer in list(rig.answers):
        assert API_KEY not in answer.raw_output and API_KEY not in answer.model
