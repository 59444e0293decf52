"""Backend faults through the running node (openai backend against a scripted test server).

Server not started, killed mid-request, stalling past the timeout, dripping one byte at a
time, answering 500s, 429s or malformed JSON, and coming back after an outage; service and
action calls at once, as a robot with several clients makes them. For each: every affected
call ends within its deadline with the reason (0 hung calls: every wait below is bounded),
/diagnostics shows the backend failing, and the same calls succeed once the server is back.
The transformers backend's out-of-memory on a batch is driven through the engine (no node):
the batch's requests fail with the reason and the engine serves again once memory is back.
(Split and retry on out-of-memory: test_transformers_backend.py. The API key's path through
these faults: test_security.py.)

The server listens on the module's port only while a test runs it. Two node set-ups, one node
each: one try per request (openai.max_retries 0), and one retry (openai.max_retries 1).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import (
    DEMO_SCENE,
    Rig,
    free_port,
    openai_params,
    running_node,
    scripted_reply,
    still_serving,
)
from scripted_openai_server import RawReply, ScriptedOpenAIServer, completion_body

from spatialthinker_msgs.action import Query as QueryAction

SCENE = DEMO_SCENE
OPENAI_TIMEOUT = 1.5
GRACE = 4.0  # transport + the node's own grace; still far from "hung"
QUESTION = "Is the red box in front of or behind the green box?"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


def _serve(port: int) -> ScriptedOpenAIServer:
    return ScriptedOpenAIServer(default_reply=scripted_reply(SCENE), port=port).start()


def _timed_query(rig: Rig, wait: float = 30.0, **kwargs):
    started = time.monotonic()
    response = rig.query(QUESTION, wait=wait, **kwargs)
    return response, time.monotonic() - started


def _error(status) -> bool:
    return status.level == DiagnosticStatus.ERROR


def _ok(status) -> bool:
    return status.level == DiagnosticStatus.OK


# ----------------------------------------------------------------- one try per request

REQUEST_TIMEOUT = 8.0


@pytest.fixture(scope="class")
def node(rig, port):
    # The server is NOT running yet: the node must still configure and serve reasons.
    params = openai_params(
        f"http://127.0.0.1:{port}/v1",
        {
            "model": "faults-one-try",
            "openai.timeout": OPENAI_TIMEOUT,
            "request_timeout": REQUEST_TIMEOUT,
            "openai.max_in_flight": 4,
        },
    )
    with running_node(rig, params) as process:
        yield process


def _service_call(rig: Rig) -> tuple[bool, str, float]:
    response, seconds = _timed_query(rig, wait=REQUEST_TIMEOUT + 20)
    return response.success, response.message, seconds


def _action_call(rig: Rig) -> tuple[bool, str, float]:
    started = time.monotonic()
    goal = QueryAction.Goal(question=QUESTION, options=["in front", "behind"])
    result = rig.action(goal, wait=REQUEST_TIMEOUT + 20, accept_wait=10)
    return result.success, result.message, time.monotonic() - started


def _burst(rig: Rig, services: int = 3, actions: int = 2) -> list[tuple[bool, str, float]]:
    """Service and action calls at once; every one must come back (bounded waits)."""
    calls = [_service_call] * services + [_action_call] * actions
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call, rig) for call in calls]
        # A hung call surfaces here as a timeout, not as a stuck test run.
        return [f.result(timeout=REQUEST_TIMEOUT + 40) for f in futures]


class TestOneTryPerRequest:
    """openai.max_retries 0, openai.timeout 1.5 s, request_timeout 8 s, 4 requests in flight."""

    def test_concurrent_calls_through_an_outage_all_end_then_all_succeed(
        self, node, rig, port
    ) -> None:
        rig.settle()
        outcomes = _burst(rig)  # server not started
        for success, message, seconds in outcomes:
            assert not success and "cannot reach" in message and str(port) in message, message
            assert seconds < REQUEST_TIMEOUT + GRACE, (seconds, message)
        status = rig.engine_status(_error)
        assert "backend failing" in status.message and "cannot reach" in status.message
        seen = len(rig.diagnostics)
        server = _serve(port)
        try:
            outcomes = _burst(rig)
            assert all(success for success, _, _ in outcomes), outcomes
            rig.engine_status(_ok, after=seen)
        finally:
            server.stop()

    def test_a_stalling_server_fails_every_caller_within_the_deadline(
        self, node, rig, port
    ) -> None:
        server = _serve(port)
        try:
            rig.settle()
            server.delay_s = 4.0  # past openai.timeout 1.5 s
            # One caller alone, with a deadline of its own: the backend's timeout ends it.
            response, seconds = _timed_query(rig, timeout=10.0)
            assert not response.success and "timed out" in response.message, response.message
            assert seconds < 10.0 + 3.0
            seen = len(rig.diagnostics)
            outcomes = _burst(rig, services=2, actions=2)
            for success, message, seconds in outcomes:
                assert not success, message
                # Timed out at the backend, or (queued behind stalled calls) at the deadline.
                assert "timed out" in message or "deadline" in message, message
                assert seconds < REQUEST_TIMEOUT + GRACE, (seconds, message)
            status = rig.engine_status(_error, after=seen)
            assert "timed out" in status.message, status.message
            server.delay_s = 0.0
            outcomes = _burst(rig, services=2, actions=1)
            assert all(success for success, _, _ in outcomes), outcomes
        finally:
            server.stop()

    def test_rate_limited_429_is_reported_then_recovers(self, node, rig, port) -> None:
        server = _serve(port)
        try:
            rig.settle()
            server.fail_next(1, status=429)
            success, message, seconds = _service_call(rig)
            assert not success and "HTTP 429" in message, message
            assert seconds < REQUEST_TIMEOUT
            success, message, _ = _action_call(rig)
            assert success, message
        finally:
            server.stop()

    def test_a_dripping_server_fails_at_openai_timeout_and_shows_error(
        self, node, rig, port
    ) -> None:
        # One byte every 0.2 s: openai.timeout is a total deadline, not a gap between bytes,
        # so the call fails with the true reason long before request_timeout.
        server = _serve(port)
        try:
            rig.settle(1.0)
            server.add_replies(RawReply(body=completion_body("x"), drip_s=0.2, endless=True))
            seen = len(rig.diagnostics)
            response = rig.query(wait=REQUEST_TIMEOUT + 20)
            assert not response.success
            assert response.message == (
                f"request to {server.base_url} timed out after {OPENAI_TIMEOUT} s"
            )
            status = rig.engine_status(_error, after=seen, wait=20)
            assert f"timed out after {OPENAI_TIMEOUT} s" in status.message
            seen = len(rig.diagnostics)
            still_serving(rig, node)  # the next answer clears it
            rig.engine_status(_ok, after=seen, wait=20)
        finally:
            server.stop()


# ----------------------------------------------------------------------------- one retry


@pytest.fixture(scope="class")
def retrying_node(rig, port):
    params = openai_params(
        f"http://127.0.0.1:{port}/v1",
        {
            "model": "faults-one-retry",
            "openai.timeout": OPENAI_TIMEOUT,
            "openai.max_retries": 1,
            "request_timeout": 15.0,
        },
    )
    with running_node(rig, params) as process:
        yield process


class TestOneRetry:
    """openai.max_retries 1, openai.timeout 1.5 s, request_timeout 15 s."""

    def test_500s_malformed_json_then_recovery(self, retrying_node, rig, port) -> None:
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

    def test_server_killed_mid_request_then_restarted(self, retrying_node, rig, port) -> None:
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


# ------------------------------------------------------------ transformers: out of memory


def test_out_of_memory_on_a_batch_fails_its_requests_then_the_engine_recovers(
    tiny_model_dir: Path, monkeypatch
) -> None:
    torch = pytest.importorskip("torch")
    from spatialthinker_ros.core.backends import create_backend
    from spatialthinker_ros.core.backends.base import GenerationSettings
    from spatialthinker_ros.core.engine import EngineConfig, InferenceEngine, RequestFailed

    pixels = (28 * 28 * 4, 28 * 28 * 16)  # keeps the tiny vision tower cheap on a CPU
    backend = create_backend(
        "transformers", model=tiny_model_dir, min_pixels=pixels[0], max_pixels=pixels[1]
    )
    engine = InferenceEngine(
        backend,
        EngineConfig(
            max_batch_size=4,
            batch_wait_s=0.3,
            min_pixels=pixels[0],
            max_pixels=pixels[1],
            generation=GenerationSettings(max_new_tokens=4),
        ),
    )
    engine.start(wait=True)
    try:
        real_generate = backend._model.generate
        out_of_memory = threading.Event()
        out_of_memory.set()

        def generate(**kwargs):
            if out_of_memory.is_set():
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real_generate(**kwargs)

        monkeypatch.setattr(backend._model, "generate", generate)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (56, 56, 3), dtype=np.uint8) for _ in range(4)]
        started = time.monotonic()
        handles = [engine.submit(image, f"q{i}", timeout=20) for i, image in enumerate(images)]
        for handle in handles:
            error = handle.future.exception(timeout=30)  # bounded: a hang fails here
            assert isinstance(error, RequestFailed), error
            assert error.kind == "backend" and "out of memory" in error.reason, error.reason
        assert time.monotonic() - started < 20
        # The engine itself survived the batch: still running, nothing left queued.
        stats = engine.stats()
        assert stats["state"] not in ("failed", "stopped") and stats["queue_depth"] == 0, stats
        # Memory is back: the same engine answers.
        out_of_memory.clear()
        handle = engine.submit(images[0], "again", timeout=30)
        result = handle.future.result(timeout=60)
        assert result.raw_text is not None and result.model_name
    finally:
        engine.shutdown("test over")
        backend.unload()
