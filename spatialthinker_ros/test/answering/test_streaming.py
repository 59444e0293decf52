"""Streaming through the one answering pipeline (ROS-free): the openai backend against the
scripted server's real SSE stream, the tiny transformers model through the real generate call.

Every test asserts order, never time: stages come in order, the scene graph (with 3D) comes
before the answer and equals the answer's, a cancel closes the stream, and every bad stream ends
in an answer or a failure with a reason. To show the scene comes before the reasoning is written,
the model is held after ``</scene>`` until the scene has been reported (the scripted server's
``StreamReply.hold``; a logits processor for the tiny model), so no timing decides the outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node_harness import DEMO_SCENE, SCRIPTED_OBJECTS
from scripted_openai_server import ScriptedOpenAIServer, StreamReply
from streaming_replies import realistic_reply, scene_fraction

from spatialthinker_ros.answering.parameters import PARAMETERS
from spatialthinker_ros.answering.pipeline import AnsweringPipeline, Frames, Progress, SceneAnswer
from spatialthinker_ros.core.backends import BackendError, BackendOutput, Batch, GenerationSettings
from spatialthinker_ros.core.backends.openai_backend import OpenAIBackend
from spatialthinker_ros.core.engine import RequestFailed
from spatialthinker_ros.core.stream_reader import STAGES

SCENE = DEMO_SCENE
REPLY = realistic_reply(SCENE)
FRAMES = Frames(SCENE.rgb, SCENE.depth_m, SCENE.intrinsics)
STREAM = GenerationSettings(max_new_tokens=1024)


def _values(**overrides: Any) -> dict[str, Any]:
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(overrides)
    return values


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(default_reply=REPLY) as scripted:
        scripted.stream_chunk_chars = 24
        yield scripted


def _openai_pipeline(server: ScriptedOpenAIServer, **overrides: Any) -> AnsweringPipeline:
    values = _values(
        backend="openai",
        model="spatialthinker-test",
        **{"openai.base_url": server.base_url, "openai.max_retries": 0},
    )
    values.update(overrides)
    pipeline = AnsweringPipeline(values, {"check_on_load": False})
    pipeline.start()
    return pipeline


class Recorder:
    """Records progress reports and the outcome, in the order they came."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.done = threading.Event()
        self.scene_seen = threading.Event()
        self.lock = threading.Lock()

    def progress(self, progress: Progress) -> None:
        with self.lock:
            self.events.append(("progress", progress))
        if progress.scene_new:
            self.scene_seen.set()

    def finished(self, handle: Any) -> None:
        with self.lock:
            self.events.append(("done", handle))
        self.done.set()

    @property
    def reports(self) -> list[Progress]:
        return [value for kind, value in self.events if kind == "progress"]


def _ask(pipeline: AnsweringPipeline, recorder: Recorder, frames: Frames = FRAMES):
    return pipeline.submit(
        frames,
        "Is the red box in front of or behind the green box?",
        ["in front", "behind"],
        "stream-1",
        on_done=recorder.finished,
        on_progress=recorder.progress,
    )


def _graph(item: Any) -> tuple:
    lifted = [
        None if e is None or not e.has_3d else tuple(np.round(e.center, 6))
        for e in (item.lifted or ())
    ]
    objects = [(o.id, tuple(o.bbox)) for o in item.parsed.objects]
    relations = [(r.subject, r.predicate, r.object) for r in item.parsed.relations]
    return objects, relations, lifted, [c.verdict for c in item.relations.checks]


def _check_stream(recorder: Recorder, answer: SceneAnswer) -> None:
    """Stages in order; the scene graph with 3D once, before the answer, equal to the answer's."""
    reports = recorder.reports
    assert reports, "no progress reported"
    assert recorder.events[-1][0] == "done"  # nothing after the answer
    stages = [p.stage for p in reports]
    assert stages == sorted(stages, key=STAGES.index)
    # (Text that came while a report was made is read in one piece: a stage may be skipped.)
    assert {"observing", "scene", "thinking", "answering"} >= set(stages)
    firsts = [i for i, p in enumerate(reports) if p.scene_new]
    assert len(firsts) == 1
    first = reports[firsts[0]]
    assert all(p.scene is None for p in reports[: firsts[0]])
    assert all(p.scene is first.scene for p in reports[firsts[0] :])
    # The scene came before the reasoning was written (the answer is 55 % of the text later).
    assert first.stage in ("scene", "thinking")
    assert "</answer>" not in first.text
    assert first.chars < len(answer.engine.raw_text)
    assert _graph(first.scene) == _graph(answer)
    assert all(e.has_3d for e in first.scene.lifted)
    assert [o.id for o in first.scene.parsed.objects] == list(SCRIPTED_OBJECTS)
    assert answer.scene_s <= answer.engine.total_s


def test_realistic_reply_closes_its_scene_near_half_way() -> None:
    text = REPLY({"messages": []})
    assert 0.40 <= scene_fraction(text) <= 0.50


def _held(recorder: Recorder, chunk_chars: int = 24):
    """A realistic streamed reply that waits after </scene> until the scene was reported."""

    def reply(body: dict[str, Any]) -> StreamReply:
        text = REPLY(body)
        at = StreamReply.chunk_after(text, "</scene>", chunk_chars)
        return StreamReply(text, chunk_chars, hold=recorder.scene_seen, hold_at=at)

    return reply


def test_openai_stream_reports_stages_and_the_3d_scene_before_the_answer(server) -> None:
    pipeline = _openai_pipeline(server)
    try:
        recorder = Recorder()
        server.add_replies(_held(recorder))
        answer = _ask(pipeline, recorder).result(30)
        assert recorder.done.wait(5)
        _check_stream(recorder, answer)
        body = server.completion_requests[-1]
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert server.streams_sent == 1
        # Usage came from the last chunk; the whole text equals what was streamed.
        assert answer.engine.output_tokens == len(answer.engine.raw_text.split())
        assert recorder.reports[-1].text == answer.engine.raw_text[-4096:]
        stats = pipeline.stats()
        assert stats["scene_p50_s"] == pytest.approx(answer.scene_s)
    finally:
        pipeline.shutdown()


def test_the_streamed_request_carries_every_setting(server) -> None:
    # The stream is asked for with the client's plain post (its chunks read as JSON, not built
    # into typed objects): the body must be what chat.completions.create would send.
    backend = OpenAIBackend(model="spatialthinker-test", base_url=server.base_url, max_retries=0)
    backend.load()
    try:
        settings = GenerationSettings(max_new_tokens=77, min_new_tokens=5, stream=True)
        image = np.zeros((56, 56, 3), np.uint8)
        [(_, output)] = list(backend.answers(Batch([image], ["q"], settings)))
        assert isinstance(output, BackendOutput), output
        body = server.completion_requests[-1]
        assert body["model"] == "spatialthinker-test" and body["max_tokens"] == 77
        assert body["min_tokens"] == 5 and body["temperature"] == settings.temperature
        assert body["stream"] is True and "extra_body" not in body
        (message,) = body["messages"]
        assert {part["type"] for part in message["content"]} == {"image_url", "text"}
    finally:
        backend.unload()


def test_stream_false_asks_for_one_whole_response(server) -> None:
    pipeline = _openai_pipeline(server, stream=False)
    try:
        recorder = Recorder()
        answer = _ask(pipeline, recorder).result(30)
        assert "stream" not in server.completion_requests[-1]
        assert recorder.reports == []
        assert answer.scene_s == answer.engine.total_s
        assert [o.id for o in answer.parsed.objects] == list(SCRIPTED_OBJECTS)
    finally:
        pipeline.shutdown()


def test_cancel_while_thinking_closes_the_stream(server) -> None:
    server.stream_delay_s = 0.02
    pipeline = _openai_pipeline(server)
    try:
        recorder = Recorder()
        thinking = threading.Event()

        def progress(report: Progress) -> None:
            recorder.progress(report)
            if report.stage == "thinking":
                thinking.set()

        def reply(body: dict[str, Any]) -> StreamReply:
            # Held after "<think>" until the pipeline said "thinking".
            text = REPLY(body)
            return StreamReply(
                text, 24, hold=thinking, hold_at=StreamReply.chunk_after(text, "<think>", 24)
            )

        server.add_replies(reply)
        handle = pipeline.submit(
            FRAMES, "Which is nearer?", [], "cancel-1", on_done=recorder.finished,
            on_progress=progress,
        )  # fmt: skip
        assert thinking.wait(30), "never reached thinking"
        assert handle.cancel()
        with pytest.raises(RequestFailed) as failed:
            handle.result(10)
        assert failed.value.kind == "cancelled" and "cancelled" in failed.value.reason
        deadline = time.monotonic() + 10
        while server.streams_closed < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.streams_closed == 1 and server.streams_sent == 0
        assert recorder.events[-1][0] == "done"
    finally:
        pipeline.shutdown()


def _backend(server: ScriptedOpenAIServer) -> OpenAIBackend:
    backend = OpenAIBackend(base_url=server.base_url, max_retries=2, backoff_s=0.01)
    backend.load()
    return backend


def _one(backend: OpenAIBackend, texts: list[str]) -> BackendOutput | BackendError:
    image = np.zeros((28, 28, 3), np.uint8)
    [(_, output)] = list(backend.answers(Batch([image], ["q"], STREAM, on_text=[texts.append])))
    return output


def test_stream_cut_mid_way_fails_with_a_reason_and_is_not_retried(server) -> None:
    text = REPLY({"messages": []})
    server.add_replies(StreamReply(text, cut_after=5))
    backend = _backend(server)
    try:
        texts: list[str] = []
        output = _one(backend, texts)
        assert isinstance(output, BackendError)
        assert "cut off after" in output.reason, output.reason
        # Text had been passed on: a retry would have written it twice.
        assert len(server.completion_requests) == 1
        assert "".join(texts) == text[: 5 * 24]
    finally:
        backend.unload()


def test_malformed_chunk_fails_with_a_reason(server) -> None:
    server.add_replies(StreamReply("<answer> (A) yes </answer>", chunk_chars=4, malformed_after=2))
    backend = _backend(server)
    try:
        output = _one(backend, [])
        assert isinstance(output, BackendError)
        assert "bad response" in output.reason or "stream" in output.reason, output.reason
    finally:
        backend.unload()


def test_stream_without_finish_reason_fails_with_a_reason(server) -> None:
    server.add_replies(StreamReply("<answer> (A) yes </answer>", finish=False))
    backend = _backend(server)
    try:
        output = _one(backend, [])
        assert isinstance(output, BackendError)
        assert "ended before the answer was finished" in output.reason, output.reason
    finally:
        backend.unload()


def test_server_that_ignores_stream_answers_whole(server) -> None:
    server.honour_stream = False
    pipeline = _openai_pipeline(server)
    try:
        recorder = Recorder()
        answer = _ask(pipeline, recorder).result(30)
        assert server.completion_requests[-1]["stream"] is True
        assert server.streams_sent == 0
        assert [o.id for o in answer.parsed.objects] == list(SCRIPTED_OBJECTS)
        assert answer.parsed.choice == "A"
        # The whole text arrived at once, so the scene graph comes with the answer (a report
        # of it may come first); never a report after the answer.
        assert all(p.scene is not None for p in recorder.reports)
        assert recorder.events[-1][0] == "done"
        assert answer.scene_s <= answer.engine.total_s
    finally:
        pipeline.shutdown()


def test_stream_over_the_size_bound_fails_with_a_reason(server) -> None:
    # The text is bounded (the envelopes are read as they come and dropped; their own wire
    # bound is EVENT_STREAM_WIRE_FACTOR times wider).
    server.add_replies(StreamReply("x" * 5000, chunk_chars=100))
    backend = OpenAIBackend(base_url=server.base_url, max_retries=0, max_response_bytes=4096)
    backend.load()
    try:
        texts: list[str] = []
        output = _one(backend, texts)
        assert isinstance(output, BackendError)
        assert "streamed answer is longer than 4096 characters" in output.reason, output.reason
        assert len("".join(texts)) <= 4096 + 100
    finally:
        backend.unload()


def test_slow_stream_ends_at_the_total_deadline(server) -> None:
    server.add_replies(StreamReply("<answer> (A) yes </answer>" * 40, chunk_chars=2, delay_s=0.05))
    backend = OpenAIBackend(base_url=server.base_url, max_retries=0, timeout_s=1.0)
    backend.load()
    try:
        texts: list[str] = []
        output = _one(backend, texts)
        assert isinstance(output, BackendError)
        assert "1.0 s" in output.reason and texts, output.reason
    finally:
        backend.unload()


# --------------------------------------------------------------------- tiny transformers model

# Small pixel bounds keep the vision tower cheap on a 2-core CPU.
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 16


class HoldAt:
    """A logits processor that holds generation at one step until an event is set (<= 60 s)."""

    def __init__(self, forced: Any, step: int, event: threading.Event) -> None:
        self.forced, self.step, self.event = forced, step, event

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        ids = input_ids[0].tolist()
        if len(ids) - self.forced._answer_start(ids) == self.step:
            self.event.wait(60)
        return scores


def _held_tiny_pipeline(tiny_model_dir: Path, release: threading.Event) -> tuple[Any, str]:
    """The tiny model through the pipeline, forced to write a realistic reply and held one
    token after ``<think>`` until ``release`` is set; returns the started pipeline and the
    reply (its boxes in the stated frame; a short answer keeps the CPU run short)."""
    pytest.importorskip("torch")
    from forced_text import ForcedText
    from transformers import AutoTokenizer

    text = realistic_reply(SCENE, 0.45)(
        {"messages": [{"content": [{"type": "text", "text": "Image size: 112 x 84"}]}]}
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    forced = ForcedText(tokenizer, text)
    think = text.index("<think>") + len("<think>")
    hold = HoldAt(forced, len(tokenizer.encode(text[:think])) + 1, release)
    values = _values(
        backend="transformers",
        model=str(tiny_model_dir),
        device="cpu",
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        max_new_tokens=len(tokenizer.encode(text)) + 8,
    )
    pipeline = AnsweringPipeline(values, {"logits_processor": [forced, hold]})
    pipeline.start()
    return pipeline, text


def test_tiny_model_streams_through_the_same_pipeline(tiny_model_dir: Path) -> None:
    recorder = Recorder()
    # Generation waits after "<think>" until the scene has been reported.
    pipeline, text = _held_tiny_pipeline(tiny_model_dir, recorder.scene_seen)
    try:
        answer = _ask(pipeline, recorder).result(300)
        assert recorder.done.wait(5)
        assert answer.engine.raw_text == text
        _check_stream(recorder, answer)
    finally:
        pipeline.shutdown()


def test_tiny_model_cancelled_mid_stream_stops_and_frees_the_model(tiny_model_dir: Path) -> None:
    recorder = Recorder()
    # Generation waits after "<think>" until the client has cancelled (the scene was streamed).
    cancelled = threading.Event()
    pipeline, text = _held_tiny_pipeline(tiny_model_dir, cancelled)
    try:
        handle = _ask(pipeline, recorder)
        assert recorder.scene_seen.wait(300), "the scene never streamed"
        assert handle.cancel(), "a running transformers request could not be cancelled"
        cancelled.set()
        with pytest.raises(RequestFailed, match="cancel"):
            handle.result(60)
        assert recorder.done.wait(5)
        # Nothing after the failure; no text streamed past the hold (generation stopped).
        assert recorder.events[-1][0] == "done"
        assert all("</answer>" not in p.text for p in recorder.reports)
        # The model is free: the next request is answered in full (the hold is released).
        answer = _ask(pipeline, Recorder()).result(300)
        assert answer.engine.raw_text == text
    finally:
        cancelled.set()
        pipeline.shutdown()


# --------------------------------------------------------------------------------- the engine


class _StreamingBackend:
    """A backend that streams its answer in chunks (the engine's side only); ``after(i)`` runs
    after chunk ``i`` was passed on."""

    def __new__(cls, chunks: list[str], after: Any = None):
        from spatialthinker_ros.core.backends.base import Backend

        class Streaming(Backend):
            name = "streaming-test"
            supports_streaming = True
            model_name = "test"
            loaded = True

            def load(self) -> None:
                pass

            def unload(self) -> None:
                pass

            def generate(self, images, prompts, settings, cancel=None, on_text=None):
                for index, chunk in enumerate(chunks):
                    if on_text is not None and on_text[0] is not None:
                        on_text[0](chunk)
                    if after is not None:
                        after(index)
                return [BackendOutput("".join(chunks), 1, len(chunks), 0.0)]

        return Streaming()


def test_a_slow_text_callback_never_holds_up_the_engine() -> None:
    from spatialthinker_ros.core.engine import EngineConfig, InferenceEngine

    chunks = ["<observe> a </observe>", "<scene>", "{}", "</scene>", "<answer> (A) </answer>"]
    in_callback, release = threading.Event(), threading.Event()
    received: list[str] = []

    def after(index: int) -> None:
        if index == 0:  # the model writes on only once the consumer is busy with its text
            assert in_callback.wait(30)

    def slow(streamed) -> None:
        received.append(streamed.text)
        in_callback.set()
        release.wait(30)  # a consumer stuck until the test lets go

    engine = InferenceEngine(_StreamingBackend(chunks, after), EngineConfig())
    engine.start()
    try:
        handle = engine.submit(np.zeros((56, 56, 3), np.uint8), "q", on_text=slow)
        # The answer is delivered while the callback is still blocked in its first call.
        result = handle.result(30)
        assert not release.is_set() and received == [chunks[0]]
        assert result.raw_text == "".join(chunks)
        release.set()
        # Text of an ended request is dropped, never delivered after its answer.
        time.sleep(0.2)
        assert received == [chunks[0]]
    finally:
        release.set()
        engine.shutdown()


def test_text_that_comes_while_a_callback_runs_is_delivered_in_one_piece() -> None:
    from spatialthinker_ros.core.engine import EngineConfig, InferenceEngine

    chunks = [f"<think> step {i} </think>" for i in range(6)]
    in_first_call, rest_written, second_call = (threading.Event() for _ in range(3))

    def after(index: int) -> None:
        if index == 0:
            assert in_first_call.wait(30)
        elif index == len(chunks) - 1:
            rest_written.set()
            assert second_call.wait(30)  # the request stays running until then

    received: list[str] = []

    def callback(streamed) -> None:
        received.append(streamed.text)
        if len(received) == 1:
            in_first_call.set()
            assert rest_written.wait(30)
        else:
            second_call.set()

    engine = InferenceEngine(_StreamingBackend(chunks, after), EngineConfig())
    engine.start()
    try:
        handle = engine.submit(np.zeros((56, 56, 3), np.uint8), "q", on_text=callback)
        assert handle.result(30).raw_text == "".join(chunks)
        assert received == [chunks[0], "".join(chunks[1:])]
    finally:
        engine.shutdown()


# ------------------------------------------------------------- transformers: one batch, per row


def test_tiny_model_streams_each_row_of_a_batch(tiny_model_dir: Path) -> None:
    pytest.importorskip("torch")
    from forced_text import ForcedText

    from spatialthinker_ros.core.backends import create_backend

    backend = create_backend(
        "transformers", model=tiny_model_dir, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS
    )
    backend.load()
    try:
        texts = [
            "<observe> one </observe>\n<answer> (A) left </answer>",
            "<answer> (B) é → 右 </answer>",
        ]
        backend.logits_processor = [ForcedText(backend.processor.tokenizer, texts)]
        pieces: list[list[str]] = [[], []]
        images = [np.full((56, 56, 3), v, np.uint8) for v in (0, 255)]
        outputs = backend.generate(
            images,
            ["a", "b"],
            GenerationSettings(max_new_tokens=40),
            on_text=[pieces[0].append, pieces[1].append],
        )
        for row, output in enumerate(outputs):
            assert isinstance(output, BackendOutput) and output.text == texts[row]
            assert "".join(pieces[row]) == texts[row]
            assert len(pieces[row]) > 3  # streamed, not given whole
    finally:
        backend.unload()
