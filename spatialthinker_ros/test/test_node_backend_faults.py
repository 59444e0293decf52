"""Backend faults, part 2: many callers at once, the action path, 429s, and out-of-memory.

Part 1 (test_hardening_faults.py) sends one service call per fault. A robot has several
clients: here service and action calls run concurrently through an outage, a stalling
server and a rate limit. Each affected call must end within its deadline with the reason
(0 hung calls), /diagnostics must show the backend failing, and the same mix of calls must
succeed once the server is back. The transformers backend's out-of-memory on a batch is
driven through the engine (no node): the batch's requests fail with the reason and the
engine serves again once memory is back.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import DEMO_SCENE, Rig, free_port, running_node, scripted_reply
from scripted_openai_server import ScriptedOpenAIServer

from spatialthinker_msgs.action import Query as QueryAction

SCENE = DEMO_SCENE
REQUEST_TIMEOUT = 8.0
GRACE = 4.0  # transport + the node's own grace; still far from "hung"
QUESTION = "Is the red box in front of or behind the green box?"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def node(rig, port):
    with running_node(
        rig,
        {
            "backend": "openai",
            "model": "faults-2",
            "openai.base_url": f"http://127.0.0.1:{port}/v1",
            "openai.timeout": 1.5,
            "openai.max_retries": 0,
            "request_timeout": REQUEST_TIMEOUT,
            "max_frame_age": 3.0,
            "diagnostics_period": 0.2,
            "openai.max_in_flight": 4,
        },
    ) as process:
        yield process


def _serve(port: int) -> ScriptedOpenAIServer:
    return ScriptedOpenAIServer(default_reply=scripted_reply(SCENE), port=port).start()


def _service_call(rig: Rig) -> tuple[bool, str, float]:
    started = time.monotonic()
    response = rig.query(QUESTION, wait=REQUEST_TIMEOUT + 20)
    return response.success, response.message, time.monotonic() - started


def _action_call(rig: Rig) -> tuple[bool, str, float]:
    started = time.monotonic()
    assert rig.action_client.wait_for_server(timeout_sec=10.0)
    goal = QueryAction.Goal(question=QUESTION, options=["in front", "behind"])
    handle = rig.wait_future(rig.action_client.send_goal_async(goal), 10)
    assert handle.accepted
    result = rig.wait_future(handle.get_result_async(), REQUEST_TIMEOUT + 20).result
    return result.success, result.message, time.monotonic() - started


def _burst(rig: Rig, services: int = 3, actions: int = 2) -> list[tuple[bool, str, float]]:
    """Service and action calls at once; every one must come back (bounded waits)."""
    calls = [_service_call] * services + [_action_call] * actions
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call, rig) for call in calls]
        # A hung call surfaces here as a timeout, not as a stuck test run.
        return [f.result(timeout=REQUEST_TIMEOUT + 40) for f in futures]


def _engine_status(rig: Rig, level: int, after: int = 0) -> DiagnosticStatus:
    def matching(array) -> bool:
        return any("engine" in s.name and s.level == level for s in array.status)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        arrays = [a for a in list(rig.diagnostics)[after:] if matching(a)]
        if arrays:
            array = arrays[-1]
            return next(s for s in array.status if "engine" in s.name and s.level == level)
        time.sleep(0.05)
    raise AssertionError(f"no engine diagnostics at level {level!r}")


def test_concurrent_calls_through_an_outage_all_end_then_all_succeed(node, rig, port) -> None:
    rig.settle()
    outcomes = _burst(rig)  # server not started
    for success, message, seconds in outcomes:
        assert not success and "cannot reach" in message, message
        assert seconds < REQUEST_TIMEOUT + GRACE, (seconds, message)
    status = _engine_status(rig, DiagnosticStatus.ERROR)
    assert "backend failing" in status.message and "cannot reach" in status.message
    seen = len(rig.diagnostics)
    server = _serve(port)
    try:
        outcomes = _burst(rig)
        assert all(success for success, _, _ in outcomes), outcomes
        _engine_status(rig, DiagnosticStatus.OK, after=seen)
    finally:
        server.stop()


def test_a_stalling_server_fails_every_caller_within_the_deadline(node, rig, port) -> None:
    server = _serve(port)
    try:
        rig.settle()
        server.delay_s = 4.0  # past openai.timeout 1.5 s
        seen = len(rig.diagnostics)
        outcomes = _burst(rig, services=2, actions=2)
        for success, message, seconds in outcomes:
            assert not success, message
            # Timed out at the backend, or (queued behind stalled calls) at the deadline.
            assert "timed out" in message or "deadline" in message, message
            assert seconds < REQUEST_TIMEOUT + GRACE, (seconds, message)
        status = _engine_status(rig, DiagnosticStatus.ERROR, after=seen)
        assert "timed out" in status.message, status.message
        server.delay_s = 0.0
        outcomes = _burst(rig, services=2, actions=1)
        assert all(success for success, _, _ in outcomes), outcomes
    finally:
        server.stop()


def test_rate_limited_429_is_reported_then_recovers(node, rig, port) -> None:
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


# ------------------------------------------------- transformers: out of memory


def test_out_of_memory_on_a_batch_fails_its_requests_then_the_engine_recovers(
    tiny_model_dir: Path, monkeypatch
) -> None:
    torch = pytest.importorskip("torch")
    from spatialthinker_ros.backends import create_backend
    from spatialthinker_ros.backends.base import GenerationSettings
    from spatialthinker_ros.engine import EngineConfig, InferenceEngine, RequestFailed

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
