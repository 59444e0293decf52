"""Engine semantics with a controllable test-double backend, plus the real backends end to end."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import wait
from pathlib import Path

import numpy as np
import pytest
from scripted_openai_server import ScriptedOpenAIServer, request_image_urls, request_texts

from spatialthinker_ros.core import model_frame
from spatialthinker_ros.core.backends import (
    Backend,
    BackendError,
    BackendOutput,
    GenerationSettings,
)
from spatialthinker_ros.core.engine import (
    TEXT_FLUSH_WAIT_S,
    EngineConfig,
    EngineResult,
    InferenceEngine,
    Priority,
    RequestFailed,
    RequestHandle,
)

WAIT = 10.0  # generous upper bound for anything that should happen promptly
SOURCE = (640, 480)


def answer_for(question: str, box: Sequence[float] = (0, 0, 28, 28)) -> str:
    """A SpatialThinker-format answer whose <think> echoes the question."""
    bbox = ", ".join(str(v) for v in box)
    return (
        f"<observe> a scene </observe>\n<scene>\n"
        f'{{"objects": [{{"id": "cup.1", "bbox": [{bbox}]}}], "relationships": '
        f'[{{"subject": "cup.1", "predicate": "near", "object": "cup.1"}}]}}\n</scene>\n'
        f"<think> {question} </think>\n<answer> (A) yes </answer>"
    )


def question_of(prompt: str) -> str:
    return prompt.rstrip().splitlines()[-1] if "\n" in prompt else prompt


class ControllableBackendDouble(Backend):
    """Test double: a backend whose calls block until the test releases them.

    Each ``generate`` call records its prompts, then waits for one ``release()`` (unless
    ``auto`` is set), then answers every row with ``reply(prompt)``.
    """

    name = "test-double"

    def __init__(
        self,
        auto: bool = False,
        max_concurrency: int = 1,
        supports_cancel: bool = True,
        delay: float = 0.0,
    ) -> None:
        self.auto = auto
        self.max_concurrency = max_concurrency
        self.supports_cancel = supports_cancel
        self.delay = delay
        self.reply = lambda prompt: answer_for(question_of(prompt))
        self.fail_rows: set[str] = set()  # questions whose row fails
        self.raise_error: Exception | None = None
        self.load_error: str | None = None
        self.calls: list[list[str]] = []
        self.images: list[list[np.ndarray]] = []
        self.cancel_seen: list[bool] = []
        self.in_call = 0
        self._loaded = False
        self._gate = threading.Semaphore(0)
        self._cond = threading.Condition()
        self.unloaded = threading.Event()

    @property
    def model_name(self) -> str:
        return "double"

    def load(self) -> None:
        if self.load_error:
            raise BackendError(self.load_error)
        self._loaded = True

    def unload(self) -> None:
        self._loaded = False
        self.unloaded.set()

    @property
    def loaded(self) -> bool:
        return self._loaded

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    def wait_calls(self, n: int, in_call: int | None = None) -> None:
        """Wait until ``n`` calls have started (and ``in_call`` are blocked inside)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len(self.calls) >= n and (in_call is None or self.in_call >= in_call),
                WAIT,
            )
        assert ok, f"expected {n} backend calls, saw {len(self.calls)}"

    def generate(self, images, prompts, settings, cancel=None):
        with self._cond:
            self.calls.append([question_of(p) for p in prompts])
            self.images.append(list(images))
            self.in_call += 1
            self._cond.notify_all()
        try:
            if not self.auto:
                assert self._gate.acquire(timeout=WAIT), "test never released the backend"
            elif self.delay:
                time.sleep(self.delay)
            if cancel is not None:
                self.cancel_seen.append(any(e.is_set() for e in cancel))
            if self.raise_error is not None:
                raise self.raise_error
            out: list[BackendOutput | BackendError] = []
            for prompt in prompts:
                q = question_of(prompt)
                if q in self.fail_rows:
                    out.append(BackendError(f"row {q} failed"))
                else:
                    out.append(BackendOutput(self.reply(prompt), 50, 10, 0.01))
            return out
        finally:
            with self._cond:
                self.in_call -= 1


def _image(width: int = SOURCE[0], height: int = SOURCE[1]) -> np.ndarray:
    return np.zeros((height, width, 3), dtype=np.uint8)


def _engine(backend: Backend, **config) -> InferenceEngine:
    config.setdefault("generation", GenerationSettings(max_new_tokens=64))
    engine = InferenceEngine(backend, EngineConfig(**config))
    engine.start()
    return engine


def _failure(handle: RequestHandle) -> RequestFailed:
    exc = handle.future.exception(WAIT)
    assert isinstance(exc, RequestFailed), f"expected a failure, got {exc!r}"
    return exc


@pytest.fixture
def double():
    return ControllableBackendDouble()


@pytest.fixture
def engines():
    made: list[InferenceEngine] = []
    yield made
    for engine in made:
        engine.shutdown("test over", timeout=2)


def test_queries_run_before_continuous_requests(double, engines) -> None:
    engine = _engine(double, max_batch_size=1)
    engines.append(engine)
    first = engine.submit(_image(), "first", priority=Priority.CONTINUOUS)
    double.wait_calls(1, in_call=1)
    c1 = engine.submit(_image(), "c1", priority=Priority.CONTINUOUS)
    c2 = engine.submit(_image(), "c2", priority=Priority.CONTINUOUS)
    q1 = engine.submit(_image(), "q1", priority=Priority.QUERY)
    q2 = engine.submit(_image(), "q2")  # QUERY is the default
    assert [engine.queue_position(h) for h in (q1, q2, c1, c2)] == [0, 1, 2, 3]
    assert engine.queue_position(first) == -1 and first.state == "running"
    double.release(5)
    for h in (first, c1, c2, q1, q2):
        assert isinstance(h.result(WAIT), EngineResult)
    assert double.calls == [["first"], ["q1"], ["q2"], ["c1"], ["c2"]]
    assert engine.queue_position(q1) == -1 and q1.state == "done"


def test_pending_requests_are_batched(double, engines) -> None:
    engine = _engine(double, max_batch_size=3)
    engines.append(engine)
    handles = [engine.submit(_image(), "r0")]
    double.wait_calls(1, in_call=1)
    handles += [engine.submit(_image(), f"r{i}") for i in range(1, 6)]
    double.release(3)
    results = [h.result(WAIT) for h in handles]
    assert double.calls == [["r0"], ["r1", "r2", "r3"], ["r4", "r5"]]
    # Every result is its own request's answer, not a batch-mate's.
    assert [r.result.reasoning for r in results] == [f"r{i}" for i in range(6)]
    assert [r.request_id for r in results] == [h.request_id for h in handles]
    stats = engine.stats()
    assert stats["batches"] == 3 and stats["mean_batch_size"] == 2.0


def test_requests_submitted_together_share_one_backend_call(double, engines) -> None:
    # An idle engine takes a request as soon as it comes; inside `together` it waits for the
    # block to end, so the cameras of one question go into one call (up to max_batch_size).
    double.auto = True
    engine = _engine(double, max_batch_size=4)
    engines.append(engine)
    alone = engine.submit(_image(), "alone").result(WAIT)
    with engine.together():
        handles = [engine.submit(_image(), f"camera{i}") for i in range(3)]
        time.sleep(0.2)  # a worker that could take one now would have
        assert double.calls == [["alone"]]
    results = [h.result(WAIT) for h in handles]
    assert double.calls == [["alone"], ["camera0", "camera1", "camera2"]]
    assert alone.batch_size == 1
    assert [r.batch_size for r in results] == [3, 3, 3]


def test_expired_request_fails_on_time_and_never_runs(double, engines) -> None:
    engine = _engine(double, max_batch_size=4)
    engines.append(engine)
    blocker = engine.submit(_image(), "blocker")
    double.wait_calls(1, in_call=1)
    started = time.monotonic()
    late = engine.submit(_image(), "late", timeout=0.2)
    failure = _failure(late)
    # The reaper fails it at its deadline although the only worker is still busy.
    assert time.monotonic() - started < 2.0
    assert failure.kind == "expired" and "deadline" in failure.reason
    double.release(1)
    blocker.result(WAIT)
    assert double.calls == [["blocker"]]
    zero = engine.submit(_image(), "zero", timeout=0)
    assert _failure(zero).kind == "expired"
    stats = engine.stats()
    assert stats["expired"] == 2 and stats["completed"] == 1


def test_full_queue_rejects_at_once(double, engines) -> None:
    engine = _engine(double, max_queue_size=2, max_batch_size=1)
    engines.append(engine)
    running = engine.submit(_image(), "running")
    double.wait_calls(1, in_call=1)
    queued = [engine.submit(_image(), f"q{i}") for i in range(2)]
    rejected = engine.submit(_image(), "one too many")
    assert rejected.future.done()  # failed inside submit, not later
    failure = _failure(rejected)
    assert failure.kind == "rejected" and "queue full" in failure.reason
    stats = engine.stats()
    assert stats["queue_depth"] == 2 and stats["rejected"] == 1 and stats["accepted"] == 3
    double.release(3)
    for h in (running, *queued):
        h.result(WAIT)


def test_cancel_queued_request(double, engines) -> None:
    engine = _engine(double, max_batch_size=4)
    engines.append(engine)
    blocker = engine.submit(_image(), "blocker")
    double.wait_calls(1, in_call=1)
    doomed = engine.submit(_image(), "doomed")
    kept = engine.submit(_image(), "kept")
    assert doomed.cancel() is True
    assert doomed.cancel() is False  # exactly one outcome
    assert _failure(doomed).kind == "cancelled"
    assert engine.queue_position(kept) == 0
    double.release(2)
    blocker.result(WAIT), kept.result(WAIT)
    assert double.calls == [["blocker"], ["kept"]]
    assert kept.cancel() is False
    # A caller cancelling the future directly cannot bypass the engine's bookkeeping.
    assert kept.future.cancel() is False
    assert engine.stats()["cancelled"] == 1


def test_cancel_running_request_when_backend_allows(double, engines) -> None:
    engine = _engine(double, max_batch_size=2)
    engines.append(engine)
    a = engine.submit(_image(), "a")
    double.wait_calls(1, in_call=1)
    assert a.state == "running"
    assert a.cancel() is True
    failure = _failure(a)  # failed at once, while the backend is still busy
    assert failure.kind == "cancelled" and "running" in failure.reason
    double.release(1)
    b = engine.submit(_image(), "b")
    double.release(1)
    b.result(WAIT)
    assert double.cancel_seen[0] is True  # the backend was told to stop that row
    stats = engine.stats()
    assert stats["cancelled"] == 1 and stats["completed"] == 1 and stats["failed"] == 0


def test_running_request_past_its_deadline_is_failed_by_the_engine(double, engines) -> None:
    """The engine owns every deadline: a row the backend does not give back is failed at its
    deadline plus the grace, and the backend is told to stop it."""
    engine = _engine(double, running_grace_s=0.2)
    engines.append(engine)
    a = engine.submit(_image(), "a", timeout=0.3)
    double.wait_calls(1, in_call=1)
    started = time.monotonic()
    failure = _failure(a)  # while the backend still holds the call
    assert failure.kind == "expired" and "deadline passed: no answer within 0.3 s" in failure.reason
    assert time.monotonic() - started < WAIT
    double.release(1)
    b = engine.submit(_image(), "b")
    double.release(1)
    b.result(WAIT)
    assert double.cancel_seen[0] is True
    assert engine.stats()["expired"] == 1


def test_running_request_is_not_cancelled_when_backend_cannot(engines) -> None:
    double = ControllableBackendDouble(supports_cancel=False)
    engine = _engine(double)
    engines.append(engine)
    a = engine.submit(_image(), "a")
    double.wait_calls(1, in_call=1)
    assert a.cancel() is False
    double.release(1)
    assert a.result(WAIT).result.reasoning == "a"


def test_shutdown_fails_every_pending_request(double) -> None:
    engine = _engine(double, max_batch_size=1)
    running = engine.submit(_image(), "running")
    double.wait_calls(1, in_call=1)
    queued = [engine.submit(_image(), f"q{i}", priority=Priority(i % 2)) for i in range(3)]
    releaser = threading.Timer(0.2, double.release, args=(5,))
    releaser.start()
    engine.shutdown("node stopping", timeout=WAIT)
    for h in (running, *queued):
        failure = _failure(h)
        assert failure.kind == "shutdown" and failure.reason == "node stopping"
    after = engine.submit(_image(), "after")
    assert _failure(after).kind == "rejected"
    assert double.unloaded.is_set() and engine.state == "stopped"
    assert double.calls == [["running"]]
    releaser.join()


def test_backend_row_error_fails_only_that_request(double, engines) -> None:
    double.auto = True
    double.fail_rows = {"bad"}
    engine = _engine(double, max_batch_size=4)
    engines.append(engine)
    engine.submit(_image(), "warm").result(WAIT)
    good, bad = engine.submit(_image(), "good"), engine.submit(_image(), "bad")
    assert good.result(WAIT).result.reasoning == "good"
    failure = _failure(bad)
    assert failure.kind == "backend" and failure.reason == "row bad failed"


def test_backend_exception_fails_its_batch_with_reason(double, engines) -> None:
    double.auto = True
    double.raise_error = RuntimeError("driver exploded")
    engine = _engine(double)
    engines.append(engine)
    failure = _failure(engine.submit(_image(), "x"))
    assert failure.kind == "backend" and "driver exploded" in failure.reason
    double.raise_error = None
    assert engine.submit(_image(), "y").result(WAIT).result.reasoning == "y"


def test_invalid_image_fails_without_reaching_backend(double, engines) -> None:
    double.auto = True
    engine = _engine(double)
    engines.append(engine)
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), "not an image"):
        assert _failure(engine.submit(bad, "q")).kind == "invalid"
    assert double.calls == []


def test_background_load_failure_fails_queued_and_later_requests() -> None:
    double = ControllableBackendDouble(auto=True)
    double.load_error = "weights missing"
    engine = InferenceEngine(double, EngineConfig())
    early = engine.submit(_image(), "early")  # queued before start
    engine.start(wait=False)
    failure = _failure(early)
    assert failure.kind == "backend" and "weights missing" in failure.reason
    assert "weights missing" in _failure(engine.submit(_image(), "later")).reason
    assert engine.stats()["load_error"] == "weights missing"
    engine.shutdown()


def test_foreground_load_failure_raises(double) -> None:
    double.load_error = "no such model"
    engine = InferenceEngine(double, EngineConfig())
    with pytest.raises(BackendError, match="no such model"):
        engine.start()


def test_model_frame_prompt_and_boxes_in_source_pixels(double, engines) -> None:
    double.auto = True
    min_px, max_px = 28 * 28 * 64, 28 * 28 * 256
    stated = model_frame.model_input_size(*SOURCE, min_pixels=min_px, max_pixels=max_px)
    assert stated != SOURCE  # the test needs a real resize
    double.reply = lambda prompt: answer_for("q", (0, 0, stated[0], stated[1] / 2))
    engine = _engine(double, min_pixels=min_px, max_pixels=max_px)
    engines.append(engine)
    result = engine.submit(_image(), "Is it near?", options=["yes", "no"]).result(WAIT)
    [sent] = double.images[0]
    assert (sent.shape[1], sent.shape[0]) == stated == result.model_image_size
    assert result.stated_size == stated
    assert result.result.choice == "A" and result.result.choice_index == 0
    [obj] = result.result.objects
    assert obj.bbox == pytest.approx((0, 0, SOURCE[0], SOURCE[1] / 2))
    assert result.total_s >= result.queue_wait_s >= 0
    assert (result.prompt_tokens, result.output_tokens, result.model_name) == (50, 10, "double")


def test_native_policy_sends_the_source_image(double, engines) -> None:
    double.auto = True
    engine = _engine(double, frame_policy="native")
    engines.append(engine)
    result = engine.submit(_image(320, 240), "q").result(WAIT)
    assert double.images[0][0].shape == (240, 320, 3)
    assert result.stated_size == (320, 240)


def test_concurrent_batches_up_to_max_in_flight(engines) -> None:
    double = ControllableBackendDouble(max_concurrency=3)
    engine = _engine(double, max_batch_size=1)
    engines.append(engine)
    handles = [engine.submit(_image(), f"r{i}") for i in range(4)]
    double.wait_calls(3, in_call=3)
    time.sleep(0.05)
    assert double.in_call == 3 and engine.stats()["running"] == 3
    double.release(4)
    assert all(isinstance(h.result(WAIT), EngineResult) for h in handles)


def test_stats_report_latency_and_throughput(double, engines) -> None:
    double.auto = True
    engine = _engine(double)
    engines.append(engine)
    for i in range(5):
        engine.submit(_image(), f"s{i}").result(WAIT)
    stats = engine.stats()
    assert stats["completed"] == 5 and stats["queue_depth"] == 0
    assert 0 < stats["latency_p50_s"] <= stats["latency_p90_s"] <= stats["latency_p99_s"]
    assert stats["tokens_per_second"] > 0
    assert stats["backend_state"] == "loaded" and stats["state"] == "running"


def test_no_request_is_lost_or_answered_twice_under_load(engines) -> None:
    double = ControllableBackendDouble(auto=True, max_concurrency=2, delay=0.002)
    engine = _engine(double, max_queue_size=8, max_batch_size=3)
    engines.append(engine)
    handles: list[RequestHandle] = []
    outcomes: dict[int, int] = {}
    lock = threading.Lock()

    def record(handle: RequestHandle):
        def done(_future) -> None:
            with lock:
                outcomes[handle.request_id] = outcomes.get(handle.request_id, 0) + 1

        return done

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(40):
            h = engine.submit(
                _image(64, 48),
                f"c{seed}-{i}",
                priority=Priority(rng.randint(0, 1)),
                timeout=rng.choice([None, 0.001, 0.05]),
            )
            h.future.add_done_callback(record(h))
            with lock:
                handles.append(h)
            if rng.random() < 0.2:
                h.cancel()
            time.sleep(rng.random() * 0.002)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _done, not_done = wait([h.future for h in handles], timeout=WAIT)
    assert not not_done
    assert len(handles) == 160 and sorted(outcomes) == sorted(h.request_id for h in handles)
    assert set(outcomes.values()) == {1}
    stats = engine.stats()
    ended = stats["completed"] + stats["failed"] + stats["expired"] + stats["cancelled"]
    assert stats["accepted"] == ended and stats["accepted"] + stats["rejected"] == 160
    results = [h.future.result() for h in handles if h.future.exception() is None]
    assert len(results) == stats["completed"] > 0
    ran = [q for call in double.calls for q in call]
    assert len(ran) == len(set(ran))  # nothing ran twice
    for h, r in ((h, h.future.result()) for h in handles if h.future.exception() is None):
        assert r.request_id == h.request_id


# ---------------------------------------------------------------------- real backends


def test_forced_spatialthinker_answer_through_real_generate(tiny_model_dir: Path) -> None:
    pytest.importorskip("torch")
    from forced_text import ForcedText

    from spatialthinker_ros.core.backends import create_backend

    min_px, max_px = 28 * 28 * 4, 28 * 28 * 16
    backend = create_backend(
        "transformers", model=tiny_model_dir, min_pixels=min_px, max_pixels=max_px
    )
    stated = model_frame.model_input_size(*SOURCE, min_pixels=min_px, max_pixels=max_px)
    texts = [
        answer_for("the cup is near", (0, 0, stated[0] / 2, stated[1])),
        answer_for("second", (stated[0] / 4, 0, stated[0], stated[1] / 4)),
    ]
    engine = InferenceEngine(
        backend,
        EngineConfig(
            min_pixels=min_px,
            max_pixels=max_px,
            max_batch_size=2,
            generation=GenerationSettings(max_new_tokens=256),
        ),
    )
    # Queue both before the workers start, so they share one batch.
    handles = [
        engine.submit(_image(), "Is the cup near?", ["yes", "no"]),
        engine.submit(_image(), "Second?", ["yes", "no"]),
    ]
    backend.load()
    backend.logits_processor = [ForcedText(backend.processor.tokenizer, texts)]
    engine.start()
    try:
        r1, r2 = (h.result(60) for h in handles)
    finally:
        engine.shutdown("done")
    assert engine.stats()["batches"] == 1
    assert r1.raw_text == texts[0] and r2.raw_text == texts[1]
    assert r1.result.strict and r1.result.reasoning == "the cup is near"
    assert r1.result.choice == "A" and r1.result.answer == "(A) yes"
    assert [(o.id, o.label) for o in r1.result.objects] == [("cup.1", "cup")]
    assert r1.result.objects[0].bbox == pytest.approx((0, 0, SOURCE[0] / 2, SOURCE[1]))
    assert r2.result.objects[0].bbox == pytest.approx((SOURCE[0] / 4, 0, SOURCE[0], 120))
    assert [(r.subject, r.predicate, r.object) for r in r1.result.relations] == [
        ("cup.1", "near", "cup.1")
    ]
    assert r1.model_image_size == stated and r1.output_tokens > 50 and r1.prompt_tokens > 20
    assert not backend.loaded  # shutdown unloads the model


def test_openai_backend_through_engine() -> None:
    from spatialthinker_ros.core.backends import create_backend

    with ScriptedOpenAIServer() as server:
        server.default_reply = lambda body: answer_for(question_of(request_texts(body)[0]))
        server.delay_s = 0.2
        backend = create_backend(
            "openai", base_url=server.base_url, max_in_flight=2, check_on_load=False
        )
        engine = InferenceEngine(backend, EngineConfig(max_batch_size=1))
        engine.start()
        try:
            handles = [engine.submit(_image(), f"Where {i}?") for i in range(4)]
            results = [h.result(WAIT) for h in handles]
        finally:
            engine.shutdown("done")
        assert server.max_in_flight_seen == 2
        bodies = server.completion_requests
        assert len(bodies) == 4
        for body in bodies:
            assert request_image_urls(body)[0].startswith("data:image/jpeg;base64,")
            assert "Image size:" in request_texts(body)[0]
        assert sorted(r.result.reasoning for r in results) == [f"Where {i}?" for i in range(4)]
        for r in results:
            # Boxes are mapped from the stated model frame (644 x 476) to the 640 x 480 source.
            assert r.stated_size == (644, 476)
            sx, sy = SOURCE[0] / 644, SOURCE[1] / 476
            assert r.result.objects[0].bbox == pytest.approx((0, 0, 28 * sx, 28 * sy))


def test_done_callback_may_submit_the_next_request(double, engines) -> None:
    # The node re-submits its standing question from the done-callback of the previous one;
    # callbacks run on engine threads, so they must run outside the engine's lock.
    double.auto = True
    engine = _engine(double)
    engines.append(engine)
    chain: list[RequestHandle] = []
    finished = threading.Event()

    def next_one(_future) -> None:
        if len(chain) < 5:
            handle = engine.submit(_image(), f"n{len(chain)}", priority=Priority.CONTINUOUS)
            chain.append(handle)
            handle.future.add_done_callback(next_one)
        else:
            finished.set()

    first = engine.submit(_image(), "start")
    first.future.add_done_callback(next_one)
    assert finished.wait(WAIT)
    assert [q for call in double.calls for q in call] == ["start", "n0", "n1", "n2", "n3", "n4"]
    # A callback on an immediate failure (full queue, stopped engine) runs in submit's caller.
    engine.shutdown("stop")
    seen: list[str] = []
    late = engine.submit(_image(), "late")
    late.future.add_done_callback(lambda f: seen.append(f.exception().kind))
    assert seen == ["rejected"]


def test_answers_of_a_batch_are_delivered_while_a_batch_mate_stalls() -> None:
    # Issue 17, Medium 4: one stalled request of a batch must not hold back (or fail at its
    # deadline) the answers the server already gave its batch-mates.
    from scripted_openai_server import RawReply, completion_body

    from spatialthinker_ros.core.backends import create_backend

    release = threading.Event()

    def reply(body: dict) -> str | RawReply:
        question = question_of(request_texts(body)[0])
        if question == "stall?":
            return RawReply(body=completion_body(answer_for(question)), hold=release)
        return answer_for(question)

    with ScriptedOpenAIServer(default_reply=reply) as server:
        backend = create_backend(
            "openai", base_url=server.base_url, max_in_flight=4, timeout_s=120.0
        )
        # The worker waits for all three to form one batch.
        engine = InferenceEngine(backend, EngineConfig(max_batch_size=3, batch_wait_s=WAIT))
        engine.start()
        try:
            questions = ["fast 1?", "stall?", "fast 2?"]
            handles = [engine.submit(_image(), q, timeout=120.0) for q in questions]
            fast = [handles[0].result(WAIT * 3), handles[2].result(WAIT * 3)]
            assert [r.result.reasoning for r in fast] == ["fast 1?", "fast 2?"]
            assert not handles[1].future.done()  # still waiting for its server answer
            assert engine.stats()["batches"] == 1
            release.set()
            assert handles[1].result(WAIT * 3).result.reasoning == "stall?"
        finally:
            release.set()
            engine.shutdown("done")


class StreamingBackendDouble(ControllableBackendDouble):
    """Test double: writes each row's answer through its text callback in 8-character pieces,
    as a streaming backend does, then returns the whole text. After the first piece it waits
    for ``first_taken`` (set by the consumer), so the rest comes while the consumer is busy."""

    supports_streaming = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.first_taken = threading.Event()

    def generate_rows(self, batch):
        outputs = self.generate(batch.images, batch.prompts, batch.settings, batch.cancel)
        for index, output in enumerate(outputs):
            callback = batch.on_text[index] if batch.on_text else None
            if callback is not None and isinstance(output, BackendOutput):
                for start in range(0, len(output.text), 8):
                    callback(output.text[start : start + 8])
                    if start == 0:
                        assert self.first_taken.wait(WAIT), "the consumer never got text"
            yield index, output


def test_a_slow_text_consumer_sees_the_whole_text_before_the_answer() -> None:
    # The consumer is still busy with the first piece when the backend has written the rest
    # and returned: that rest must reach it before the answer does, not be dropped.
    backend = StreamingBackendDouble(auto=True)
    engine = _engine(backend)
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_text(streamed) -> None:
        with lock:
            first = not events
            events.append(("text", streamed.text))
        if first:
            backend.first_taken.set()  # the backend writes the rest and returns meanwhile
            time.sleep(TEXT_FLUSH_WAIT_S / 5)

    try:
        handle = engine.submit(_image(), "slow reader?", on_text=on_text)
        handle.future.add_done_callback(lambda _f: events.append(("done", "")))
        result = handle.result(WAIT)
        deadline = time.monotonic() + WAIT
        while not (events and events[-1][0] == "done") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        engine.shutdown("done")
    kinds = [kind for kind, _text in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1, kinds
    assert len(kinds) >= 3  # the first piece alone, then the rest (in one or more pieces)
    assert "".join(text for kind, text in events if kind == "text") == result.raw_text
