"""The openai backend against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from scripted_openai_server import ScriptedOpenAIServer, request_image_urls, request_texts

from spatialthinker_ros.core.backends import BackendError, BackendOutput, GenerationSettings
from spatialthinker_ros.core.backends import create_backend as make_backend
from spatialthinker_ros.core.backends.openai_backend import OpenAIBackend

SETTINGS = GenerationSettings(max_new_tokens=64)


def _image(seed: int = 0, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _decode(url: str) -> tuple[str, np.ndarray]:
    header, data = url.split(",", 1)
    buf = np.frombuffer(base64.b64decode(data), dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return header, bgr[:, :, ::-1]


def _backend(server: ScriptedOpenAIServer, **options: object) -> OpenAIBackend:
    options.setdefault("backoff_s", 0.01)
    options.setdefault("timeout_s", 5.0)
    backend = make_backend("openai", base_url=server.base_url, model="served-name", **options)
    assert isinstance(backend, OpenAIBackend)
    backend.load()
    return backend


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as srv:
        yield srv


def test_request_carries_image_prompt_and_settings(server, monkeypatch) -> None:
    monkeypatch.setenv("ST_TEST_KEY", "sk-secret-123")
    server.add_replies("<answer> (A) left </answer>")
    backend = _backend(server, api_key_env="ST_TEST_KEY", image_format="png")
    image = _image()
    [out] = backend.generate([image], ["Is the cup left?"], SETTINGS)
    assert out == BackendOutput("<answer> (A) left </answer>", 100, 4, out.seconds)
    [body] = server.completion_requests
    assert body["model"] == "served-name"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 64
    assert [m["role"] for m in body["messages"]] == ["user"]
    # Image first, then the text, as the model card's template.
    assert [p["type"] for p in body["messages"][0]["content"]] == ["image_url", "text"]
    assert request_texts(body) == ["Is the cup left?"]
    header, decoded = _decode(request_image_urls(body)[0])
    assert header == "data:image/png;base64"
    np.testing.assert_array_equal(decoded, image)  # PNG is lossless
    assert server.headers[0]["authorization"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in repr(backend.describe())
    backend.unload()


def test_jpeg_quality_is_applied(server) -> None:
    image = np.full((64, 96, 3), (200, 30, 90), dtype=np.uint8)
    sizes = {}
    for quality in (20, 95):
        backend = _backend(server, jpeg_quality=quality)
        backend.generate([_image(1, (64, 96))], ["q"], SETTINGS)
        backend.generate([image], ["q"], SETTINGS)
        backend.unload()
        header, decoded = _decode(request_image_urls(server.completion_requests[-1])[0])
        assert header == "data:image/jpeg;base64"
        assert decoded.shape == image.shape
        assert np.abs(decoded.astype(int) - image.astype(int)).max() < 20
        sizes[quality] = len(request_image_urls(server.completion_requests[-2])[0])
    assert sizes[20] < sizes[95]


def test_batch_rows_answer_in_order_within_in_flight_limit(server) -> None:
    server.delay_s = 0.15
    server.default_reply = lambda body: f"echo {request_texts(body)[0]}"
    backend = _backend(server, max_in_flight=2)
    prompts = [f"p{i}" for i in range(6)]
    outs = backend.generate([_image(i) for i in range(6)], prompts, SETTINGS)
    assert [o.text for o in outs] == [f"echo p{i}" for i in range(6)]
    assert server.max_in_flight_seen == 2
    assert backend.max_concurrency == 2


def test_server_down_fails_with_reason_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(
        base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.01, timeout_s=2
    )
    backend.load()  # an unreachable server does not fail loading
    assert "unreachable" in backend.state
    [out] = backend.generate([_image()], ["q"], SETTINGS)
    assert isinstance(out, BackendError)
    assert f"cannot reach http://127.0.0.1:{port}/v1" in out.reason
    assert "after 3 attempts" in out.reason


def test_slow_server_times_out_without_retrying(server) -> None:
    server.delay_s = 1.5
    backend = _backend(server, timeout_s=0.3, max_retries=3)
    started = time.monotonic()
    [out] = backend.generate([_image()], ["q"], SETTINGS)
    assert isinstance(out, BackendError)
    assert "timed out after 0.3 s" in out.reason
    assert time.monotonic() - started < 1.4
    assert len(server.completion_requests) == 1


def test_server_error_then_success_is_retried(server) -> None:
    server.fail_next(2, status=500)
    server.add_replies("<answer> fine </answer>")
    backend = _backend(server, max_retries=2)
    [out] = backend.generate([_image()], ["q"], SETTINGS)
    assert isinstance(out, BackendOutput)
    assert out.text == "<answer> fine </answer>"
    assert len(server.completion_requests) == 3


def test_persistent_server_error_fails_with_status(server) -> None:
    server.fail_next(5, status=503)
    backend = _backend(server, max_retries=1)
    [out] = backend.generate([_image()], ["q"], SETTINGS)
    assert isinstance(out, BackendError)
    assert "HTTP 503" in out.reason
    assert len(server.completion_requests) == 2


def test_client_error_is_not_retried(server) -> None:
    server.fail_next(1, status=400)
    backend = _backend(server, max_retries=3)
    [out] = backend.generate([_image()], ["q"], SETTINGS)
    assert isinstance(out, BackendError) and "HTTP 400" in out.reason
    assert len(server.completion_requests) == 1


def test_malformed_body_fails_that_row_only(server) -> None:
    server.malformed_next(1)
    server.add_replies("ok")
    backend = _backend(server, max_in_flight=1, max_retries=0)
    outs = backend.generate([_image(0), _image(1)], ["a", "b"], SETTINGS)
    assert isinstance(outs[0], BackendError)
    assert "bad response" in outs[0].reason
    assert isinstance(outs[1], BackendOutput) and outs[1].text == "ok"


def test_cancel_stops_retrying(server) -> None:
    server.fail_next(100, status=500)
    backend = _backend(server, max_retries=50, backoff_s=0.2)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    [out] = backend.generate([_image()], ["q"], SETTINGS, cancel=[cancel])
    assert isinstance(out, BackendError) and out.reason == "cancelled"
    assert time.monotonic() - started < 2.0


def test_generate_before_load_fails_every_row() -> None:
    backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1")
    outs = backend.generate([_image(), _image(1)], ["a", "b"], SETTINGS)
    assert all(isinstance(o, BackendError) and "not loaded" in o.reason for o in outs)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        OpenAIBackend(image_format="gif")
    with pytest.raises(ValueError):
        OpenAIBackend(jpeg_quality=0)
    with pytest.raises(ValueError):
        make_backend("nonsense")


def test_server_runs_as_separate_process(tmp_path: Path) -> None:
    reply = tmp_path / "reply.txt"
    reply.write_text("<answer> (B) right </answer>", encoding="utf-8")
    log = tmp_path / "requests.jsonl"
    script = Path(__file__).resolve().parents[1] / "fixtures" / "scripted_openai_server.py"
    args = [sys.executable, str(script), "--port", "0", "--reply-file", str(reply)]
    proc = subprocess.Popen(
        [*args, "--log-file", str(log)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        backend = OpenAIBackend(base_url=f"http://127.0.0.1:{int(line.split()[1])}/v1")
        backend.load()
        [out] = backend.generate([_image()], ["which side?"], SETTINGS)
        assert isinstance(out, BackendOutput) and out.text == "<answer> (B) right </answer>"
        assert "which side?" in log.read_text(encoding="utf-8")
        backend.unload()
    finally:
        proc.terminate()
        proc.wait(10)
