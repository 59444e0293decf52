"""The openai backend against hostile and broken servers (issue 17: High 2, Medium 7, Low 11).

A server (or a slow link, or a proxy) that drips bytes, never ends its body, or sends a small
gzip body that inflates to hundreds of MB must not hold a request past ``openai.timeout`` nor
grow the process: every request has a total deadline and a bounded body, fails with the true
reason, closes its connection, and leaves the backend's state failing (which /diagnostics
shows as ERROR). Reasons never carry the API key, texts never carry NUL, and a malformed
``usage`` does not cost the answer. The real ``openai`` client talks to the scripted server on
loopback.

Issue 26 (findings 1, 4, 7): a lone UTF-16 surrogate (JSON ``"\\ud800"``) in a text or a
reason becomes U+FFFD, streamed or whole; server-sent-events lines without data (``retry:``,
``id:``) are skipped while malformed data still fails; text after the ``finish_reason`` is not
read.
"""

from __future__ import annotations

import json
import resource
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scripted_openai_server import RawReply, ScriptedOpenAIServer, StreamReply, completion_body

from spatialthinker_ros.core.backends import BackendError, BackendOutput, Batch, GenerationSettings
from spatialthinker_ros.core.backends.openai_backend import OpenAIBackend

SETTINGS = GenerationSettings(max_new_tokens=64)
# Bound on any one call in these tests: a request that is not ended by the backend's own
# deadline would hang; this turns that into a failure instead of a stuck run.
HANG_GUARD_S = 60.0
ANSWER = "<answer> (A) left </answer>"


def _image() -> np.ndarray:
    return np.zeros((32, 48, 3), dtype=np.uint8)


def _backend(server: ScriptedOpenAIServer, **options: object) -> OpenAIBackend:
    options.setdefault("timeout_s", 1.0)
    options.setdefault("max_retries", 0)
    backend = OpenAIBackend(base_url=server.base_url, model="served-name", **options)
    backend.load()
    return backend


def _generate(backend: OpenAIBackend, rows: int = 1, cancel=None) -> list:
    """generate() on another thread, failing the test if it does not return."""
    pool = ThreadPoolExecutor(1)
    try:
        future = pool.submit(backend.generate, [_image()] * rows, ["q"] * rows, SETTINGS, cancel)
        return future.result(HANG_GUARD_S)
    finally:
        pool.shutdown(wait=False)  # a hung call must not hang the test run too


def _wait_until(condition) -> None:
    done = threading.Event()
    for _ in range(int(HANG_GUARD_S / 0.05)):
        if condition():
            return
        done.wait(0.05)
    raise AssertionError("condition never became true")


@pytest.fixture
def server():
    with ScriptedOpenAIServer(default_reply=ANSWER) as srv:
        yield srv


def test_a_server_dripping_bytes_fails_at_the_total_deadline(server) -> None:
    # One byte every 0.2 s: each read is well inside openai.timeout, the request never is.
    server.add_replies(RawReply(body=completion_body(ANSWER), drip_s=0.2, endless=True))
    backend = _backend(server, timeout_s=1.0)
    [out] = _generate(backend)
    assert isinstance(out, BackendError)
    assert out.reason == f"request to {server.base_url} timed out after 1.0 s"
    # Diagnostics read this state: not a healthy one, and with the reason.
    assert backend.state.startswith("failing: ") and "timed out after 1.0 s" in backend.state
    # The next request that is answered makes the backend healthy again.
    [ok] = _generate(backend)
    assert isinstance(ok, BackendOutput) and ok.text == ANSWER
    assert backend.state == "loaded"


def test_headers_dripped_slowly_also_hit_the_deadline(server) -> None:
    # The status line and headers themselves arrive a byte at a time (the body never starts).
    reply = RawReply(body=b"x", drip_s=0.2, endless=True, headers={"X-Pad": "p" * 50})
    server.add_replies(reply)
    backend = _backend(server, timeout_s=1.0)
    [out] = _generate(backend)
    assert isinstance(out, BackendError) and "timed out after 1.0 s" in out.reason


def test_four_dripping_requests_do_not_hold_every_slot(server) -> None:
    for _ in range(4):
        server.add_replies(RawReply(body=completion_body(ANSWER), drip_s=0.2, endless=True))
    backend = _backend(server, timeout_s=1.0, max_in_flight=4)
    outs = _generate(backend, rows=5)
    failed = [o for o in outs if isinstance(o, BackendError)]
    answered = [o for o in outs if isinstance(o, BackendOutput)]
    assert len(failed) == 4 and all("timed out after 1.0 s" in o.reason for o in failed)
    assert len(answered) == 1 and answered[0].text == ANSWER
    assert len(server.completion_requests) == 5


def test_an_endless_body_is_cut_at_the_size_limit_and_its_connection_closed(server) -> None:
    server.add_replies(RawReply(body=b"x" * 65536, endless=True))
    backend = _backend(server, timeout_s=30.0, max_response_bytes=1_000_000)
    [out] = _generate(backend)
    assert isinstance(out, BackendError)
    assert out.reason == (
        f"response from {server.base_url} refused: response body is larger than 1000000 bytes"
    )
    assert backend.state.startswith("failing: ")
    # The server sees the client hang up: nothing goes on reading after the request failed.
    _wait_until(lambda: server.abandoned == 1)
    [ok] = _generate(backend)
    assert isinstance(ok, BackendOutput)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 400 kB of gzip that inflates to 400 MB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(400)]
    return b"".join(parts) + compressor.flush()


def test_a_gzip_bomb_is_refused_before_it_inflates(server, gzip_bomb) -> None:
    assert len(gzip_bomb) < 500_000
    server.add_replies(RawReply(body=gzip_bomb, headers={"Content-Encoding": "gzip"}))
    backend = _backend(server, timeout_s=30.0)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    [out] = _generate(backend)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert isinstance(out, BackendError)
    assert "larger than 8388608 bytes once decompressed" in out.reason
    # Inflating it would take 400 MB (and the JSON parser more); the bound keeps it near 8 MiB.
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"


def test_a_compressed_answer_within_the_limit_is_read(server) -> None:
    body = zlib.compress(completion_body(ANSWER))
    server.add_replies(RawReply(body=body, headers={"Content-Encoding": "deflate"}))
    [out] = _generate(_backend(server))
    assert isinstance(out, BackendOutput) and out.text == ANSWER


def test_cancelling_a_request_closes_its_connection(server) -> None:
    server.add_replies(RawReply(body=completion_body(ANSWER), drip_s=0.2, endless=True))
    backend = _backend(server, timeout_s=HANG_GUARD_S * 2)
    cancel = threading.Event()
    pool = ThreadPoolExecutor(1)
    try:
        future = pool.submit(backend.generate, [_image()], ["q"], SETTINGS, [cancel])
        _wait_until(lambda: bool(server.completion_requests))
        cancel.set()
        [out] = future.result(HANG_GUARD_S)
    finally:
        pool.shutdown(wait=False)
    assert isinstance(out, BackendError) and out.reason == "cancelled"
    # Cancelling is the caller's decision, not a server failure.
    assert not backend.state.startswith("failing")
    _wait_until(lambda: server.abandoned == 1)  # the server sees the hang-up on its next write
    [ok] = _generate(backend)
    assert isinstance(ok, BackendOutput)


def test_a_key_echoed_in_a_reply_without_choices_is_redacted(server, monkeypatch) -> None:
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    server.add_replies(RawReply(body=completion_body(ANSWER, id=key, choices=[])))
    backend = _backend(server)
    [out] = _generate(backend)
    assert isinstance(out, BackendError) and "no choices" in out.reason
    assert key not in out.reason and "[redacted]" in out.reason
    assert key not in backend.state and key not in str(backend.describe())


def test_nul_bytes_are_stripped_from_model_output(server) -> None:
    server.add_replies(RawReply(body=completion_body("\x00(A) left\x00")))
    [out] = _generate(_backend(server))
    assert isinstance(out, BackendOutput) and out.text == "(A) left"


@pytest.mark.parametrize(
    "usage",
    [
        "garbage",
        {"prompt_tokens": "many", "completion_tokens": None},
        {"prompt_tokens": -5, "completion_tokens": 1e300},
        [1, 2],
    ],
)
def test_a_malformed_usage_field_keeps_the_answer(server, usage) -> None:
    server.add_replies(RawReply(body=completion_body(ANSWER, usage=usage)))
    [out] = _generate(_backend(server))
    assert isinstance(out, BackendOutput) and out.text == ANSWER
    assert (out.prompt_tokens, out.output_tokens) == (0, 0)


# ------------------------------------------------------------------------------------------
# Issue 26: lone surrogates, server-sent-events fields without data, text after the end
# ------------------------------------------------------------------------------------------

# Half of a UTF-16 surrogate pair: json.dumps writes it as the 6-byte escape "\ud800".
LONE = "\ud800"


def _answers(backend: OpenAIBackend, settings: GenerationSettings) -> tuple[object, list[str]]:
    """One row through the backend's gate (``answers``), and the texts streamed meanwhile."""
    pieces: list[str] = []
    batch = Batch([_image()], ["q"], settings, on_text=[pieces.append])
    pool = ThreadPoolExecutor(1)
    try:
        [(_, out)] = pool.submit(lambda: list(backend.answers(batch))).result(HANG_GUARD_S)
    finally:
        pool.shutdown(wait=False)
    return out, pieces


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_lone_surrogate_in_the_output_becomes_a_replacement_character(server, stream) -> None:
    text = f"<answer> (A) left {LONE} of 😀 {LONE}</answer>"
    assert json.dumps(text).count("\\ud800") == 2  # what goes over the wire: the escape
    server.add_replies(StreamReply(text, chunk_chars=4) if stream else text)
    backend = _backend(server)
    out, pieces = _answers(backend, GenerationSettings(max_new_tokens=64, stream=stream))
    assert isinstance(out, BackendOutput)
    # A whole pair (the emoji) is kept; each half alone is U+FFFD.
    assert out.text == "<answer> (A) left \ufffd of 😀 \ufffd</answer>"
    if stream:
        assert "".join(pieces) == out.text
    assert all(_utf8(piece) for piece in pieces)


def test_a_lone_surrogate_in_an_error_is_a_valid_reason_and_state(server) -> None:
    body = json.dumps({"error": {"message": f"bad {LONE} request", "type": "invalid"}})
    server.add_replies(RawReply(body=body.encode(), status=400))
    backend = _backend(server)
    out, _ = _answers(backend, SETTINGS)
    assert isinstance(out, BackendError) and "bad \ufffd request" in out.reason
    # The reason and the state /diagnostics publishes are both valid UTF-8.
    assert _utf8(out.reason) and _utf8(backend.state)


@pytest.mark.parametrize(
    "between",
    [b"retry: 3000\n\n", b"id: 7\n\n", b"retry: 10\r\nid: 8\r\n\r\n", b"event: ping\n\n"],
    ids=["retry", "id", "retry-and-id-crlf", "event-without-data"],
)
def test_server_sent_events_without_data_are_skipped(server, between) -> None:
    server.add_replies(StreamReply(ANSWER, chunk_chars=5, between=between))
    out, pieces = _answers(_backend(server), SETTINGS)
    assert isinstance(out, BackendOutput), out
    assert out.text == ANSWER and "".join(pieces) == ANSWER
    assert out.output_tokens == len(ANSWER.split())  # the usage chunk was read too


def test_malformed_data_still_fails_among_events_without_data(server) -> None:
    reply = StreamReply(ANSWER, chunk_chars=5, malformed_after=2, between=b"retry: 3000\n\n")
    server.add_replies(reply)
    out, _ = _answers(_backend(server), SETTINGS)
    assert isinstance(out, BackendError) and "bad response" in out.reason, out


def test_text_after_the_finish_reason_is_not_read(server) -> None:
    server.add_replies(
        StreamReply(ANSWER, chunk_chars=6, after_finish="<answer> (B) right </answer>")
    )
    out, pieces = _answers(_backend(server), SETTINGS)
    assert isinstance(out, BackendOutput), out
    assert out.text == ANSWER and "".join(pieces) == ANSWER
