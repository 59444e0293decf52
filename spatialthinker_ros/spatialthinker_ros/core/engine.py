"""The inference engine: owns the backend, queues requests, decides what runs when.

One answer takes seconds of GPU time while cameras deliver 30 frames a second and several
planners may ask at once, so the engine:

* runs the backend on its own worker threads, never on the caller's (ROS executor) thread;
* keeps a bounded queue with two priorities (on-demand queries before continuous ones) and
  rejects at once when it is full, instead of letting latency grow without bound;
* gives every request a deadline and fails an expired one instead of running it;
* batches up to ``max_batch_size`` pending requests into one backend call;
* lets callers cancel queued requests and, where the backend allows, running ones;
* ends every request in exactly one outcome: an ``EngineResult`` or ``RequestFailed`` with a
  reason, including on shutdown;
* passes a request's text, while the backend writes it, to the request's ``on_text`` callback
  on a thread of its own (:class:`_TextPump`): a slow callback gets the text in larger pieces
  and never holds up the model.

The per-request work around the backend (model-frame planning, resize, prompt, parsing, box
scaling) also runs on the worker threads, so ``submit`` costs microseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from spatialthinker_ros.core import model_frame
from spatialthinker_ros.core.backends.base import (
    Backend,
    BackendError,
    BackendOutput,
    Batch,
    GenerationSettings,
)
from spatialthinker_ros.core.confidence import (
    AnswerConfidence,
    answer_confidence,
    object_probabilities,
)
from spatialthinker_ros.core.parsing import SpatialResult, parse_output
from spatialthinker_ros.core.prompt import build_prompt

_LOG = logging.getLogger(__name__)


class Priority(IntEnum):
    """Request priority; lower runs first."""

    QUERY = 0
    CONTINUOUS = 1


class RequestFailed(Exception):
    """The outcome of a request that produced no result.

    Attributes:
        reason: Human-readable reason.
        kind: Machine-readable category: "rejected" (queue full or engine stopped),
            "expired" (deadline passed before it ran), "cancelled", "shutdown",
            "backend" (the model failed), "invalid" (bad input) or "error" (a bug).
    """

    def __init__(self, reason: str, kind: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass
class EngineConfig:
    """Engine settings.

    Attributes:
        max_queue_size: Queued (not yet running) requests accepted before rejecting.
        max_batch_size: Pending requests combined into one backend call.
        max_in_flight: Backend calls running at once; None takes the backend's
            ``max_concurrency`` (1 for an in-process model, N for a remote server).
        default_timeout_s: Deadline of a request submitted without one (seconds from submit).
        batch_wait_s: How long a worker that found fewer than ``max_batch_size`` requests
            waits for more before running. 0 runs at once (lowest latency).
        frame_policy: "resize" (we resize to the model input size and state it) or "native".
        min_pixels: Model-frame minimum area (also passed to the processor by the caller).
        max_pixels: Model-frame maximum area.
        generation: Decoding settings for every request.
        latency_window: Completed requests kept for latency percentiles and tokens/s.
        running_grace_s: How long past its deadline a running request may still deliver (an
            answer on its way) before it is failed and its row stopped.
    """

    max_queue_size: int = 16
    max_batch_size: int = 4
    max_in_flight: int | None = None
    default_timeout_s: float = 60.0
    batch_wait_s: float = 0.0
    frame_policy: str = "resize"
    min_pixels: int | None = None
    max_pixels: int | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    latency_window: int = 256
    running_grace_s: float = 2.0


def _object_scores(text: str, parsed: Any, scores: Any) -> tuple[float, ...]:
    """``confidence.object_probabilities``, NaN for every object if it fails: an answer is never
    lost to its scores."""
    try:
        return object_probabilities(text, parsed, scores)
    except Exception:
        return (float("nan"),) * len(parsed.objects)


@dataclass(frozen=True)
class EngineResult:
    """A parsed answer with boxes in source-image pixels.

    Attributes:
        request_id: The id of the request's handle.
        result: Parsed output, boxes mapped to source pixels.
        raw_text: The model's text as generated.
        model_image_size: (w, h) of the image the backend was given.
        stated_size: (w, h) written in the prompt; the frame the model's boxes are in.
        queue_wait_s: Time from submit until its batch started.
        inference_s: Backend time from the start of its batch until its row was finished.
        total_s: Time from submit until the result was ready.
        prompt_tokens: Prompt tokens, image included (0 when the backend does not say).
        output_tokens: Generated tokens.
        model_name: Model that answered.
        confidence: The answer's option probabilities from the model's own tokens, untempered
            (``core.confidence``; None: not read).
        batch_size: Requests answered in the same backend call as this one (1: alone).
        object_scores: Per parsed object, the probability the model gave to writing its id in
            the scene graph (``confidence.object_probabilities``; NaN: not measured; empty:
            not read).
    """

    request_id: int
    result: SpatialResult
    raw_text: str
    model_image_size: tuple[int, int]
    stated_size: tuple[int, int]
    queue_wait_s: float
    inference_s: float
    total_s: float
    prompt_tokens: int
    output_tokens: int
    model_name: str
    confidence: AnswerConfidence | None = None
    object_scores: tuple[float, ...] = ()
    batch_size: int = 1


@dataclass(frozen=True)
class StreamedText:
    """Text a request's model has written since the last call of its ``on_text``.

    Attributes:
        text: The new text (one or more backend chunks, in order).
        stated_size: ``(w, h)`` written in the prompt: the frame the model's boxes are in.
        source_size: ``(w, h)`` of the source image (see :func:`to_source_pixels`).
    """

    text: str
    stated_size: tuple[int, int]
    source_size: tuple[int, int]


#: A request's text callback (see ``InferenceEngine.submit``).
TextCallback = Callable[[StreamedText], None]


def to_source_pixels(
    parsed: SpatialResult, stated_size: tuple[int, int], source_size: tuple[int, int]
) -> SpatialResult:
    """Map a parsed output's boxes from the stated frame to source-image pixels (in place)."""
    if tuple(stated_size) != tuple(source_size):
        scaled = model_frame.scale_boxes(
            [obj.bbox for obj in parsed.objects], stated_size, source_size
        )
        parsed.objects = [
            dataclasses.replace(obj, bbox=tuple(box))
            for obj, box in zip(parsed.objects, scaled, strict=True)
        ]
    return parsed


# How long a request's answer waits for its text callback to finish with earlier text, so that
# the callback sees the rest first; a consumer stuck longer loses the rest, not the answer.
TEXT_FLUSH_WAIT_S = 0.5


class _TextPump:
    """Hands streamed text to the requests' callbacks on one thread of its own.

    The backend's thread only appends here (microseconds); text that arrives while a callback
    runs is joined and delivered in one piece next, so a slow consumer costs the model
    nothing. As a request's output is complete, :meth:`flush` hands over what of its text is
    still waiting, so its callback has seen all of it before its outcome is delivered; a
    consumer stuck in the request's callback for longer than :data:`TEXT_FLUSH_WAIT_S` loses
    that rest instead of holding up the answer. Text of a request that has ended otherwise
    (cancelled, failed, timed out) is dropped.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[_Request, list[str]]] = {}
        # Requests whose text the text thread has taken and not yet handed over.
        self._in_hand: set[int] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def push(self, request: _Request, text: str) -> None:
        with self._cond:
            if self._stopped or not text:
                return
            entry = self._pending.get(request.request_id)
            if entry is None:
                self._pending[request.request_id] = (request, [text])
            else:
                entry[1].append(text)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="engine-text", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, request: _Request, wait_s: float) -> None:
        """Hand the rest of ``request``'s text to its callback on the calling thread, after
        what the text thread already holds of it (so the pieces keep their order), waiting for
        that at most ``wait_s``. For a request whose backend has written its last text."""
        with self._cond:
            handed = self._cond.wait_for(
                lambda: request.request_id not in self._in_hand or self._stopped, wait_s
            )
            if not handed:
                return  # a consumer stuck in its callback: the rest is dropped as it ends
            entry = self._pending.pop(request.request_id, None)
        if entry is not None:
            self._hand_over(*entry)

    def drop(self, request_id: int) -> None:
        with self._cond:
            self._pending.pop(request_id, None)

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                ready = list(self._pending.values())
                self._pending.clear()
                self._in_hand = {request.request_id for request, _parts in ready}
            for request, parts in ready:
                self._hand_over(request, parts)
                with self._cond:
                    self._in_hand.discard(request.request_id)
                    self._cond.notify_all()

    @staticmethod
    def _hand_over(request: _Request, parts: list[str]) -> None:
        callback, frame = request.on_text, request.frame
        if callback is None or frame is None or request.state == "done":
            return
        try:
            callback(StreamedText("".join(parts), frame.stated_size, frame.source_size))
        except Exception:  # a consumer's bug must not stop the text of the others
            _LOG.exception("a request's text callback failed")


class _Request:
    """Internal per-request record; all mutable fields are guarded by the engine lock."""

    __slots__ = (
        "batch_size",
        "cancel_event",
        "deadline",
        "frame",
        "future",
        "image",
        "on_text",
        "options",
        "priority",
        "question",
        "request_id",
        "started",
        "state",
        "submitted",
    )

    def __init__(
        self,
        request_id: int,
        image: np.ndarray,
        question: str,
        options: tuple[str, ...],
        priority: Priority,
        deadline: float,
        submitted: float,
        on_text: TextCallback | None = None,
    ) -> None:
        self.request_id = request_id
        self.batch_size = 1
        self.on_text = on_text
        self.frame: Any = None  # the model frame, once the request runs
        self.image = image
        self.question = question
        self.options = options
        self.priority = priority
        self.submitted = submitted
        self.deadline = deadline
        self.started = 0.0
        self.state = "queued"
        self.cancel_event = threading.Event()
        self.future: Future[EngineResult] = Future()
        # Mark the future running so a caller's future.cancel() cannot bypass the engine:
        # cancellation goes through RequestHandle.cancel(), which keeps the counts right.
        self.future.set_running_or_notify_cancel()


class RequestHandle:
    """The caller's view of one request.

    Attributes:
        request_id: Unique, increasing id.
        future: Resolves to an ``EngineResult`` or fails with ``RequestFailed``.
    """

    __slots__ = ("_engine", "_request", "future", "request_id")

    def __init__(self, engine: InferenceEngine, request: _Request) -> None:
        self._engine = engine
        self._request = request
        self.request_id = request.request_id
        self.future = request.future

    @property
    def state(self) -> str:
        """ "queued", "running" or "done"."""
        return self._request.state

    @property
    def priority(self) -> Priority:
        """The priority it was submitted with."""
        return self._request.priority

    def cancel(self) -> bool:
        """Cancel the request.

        A queued request is removed and failed with kind "cancelled". A running one is failed
        the same way when the backend supports cancellation (the backend is asked to stop the
        row; its answer, if any, is discarded).

        Returns:
            True when this call ended the request, False when it had already ended or is
            running on a backend that cannot be interrupted.
        """
        return self._engine._cancel(self._request)

    @property
    def queue_position(self) -> int:
        """Requests that would run before this one (0 = next); -1 when it is not queued."""
        return self._engine.queue_position(self)

    def result(self, timeout: float | None = None) -> EngineResult:
        """Wait for the result (raises RequestFailed)."""
        return self.future.result(timeout)

    def __repr__(self) -> str:
        return f"RequestHandle(id={self.request_id}, state={self.state!r})"


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, interpolated; NaN for none."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


class InferenceEngine:
    """Thread-safe request scheduler around one backend.

    Args:
        backend: The backend (loaded by ``start`` when not loaded yet).
        config: Settings; defaults when None.
    """

    def __init__(self, backend: Backend, config: EngineConfig | None = None) -> None:
        self.backend = backend
        self.config = config or EngineConfig()
        if self.config.max_batch_size < 1 or self.config.max_queue_size < 1:
            raise ValueError("max_batch_size and max_queue_size must be at least 1")
        if self.config.frame_policy not in ("resize", "native"):
            raise ValueError(
                f"frame_policy must be 'resize' or 'native', not {self.config.frame_policy!r}"
            )
        self._min_pixels = (
            self.config.min_pixels
            if self.config.min_pixels is not None
            else model_frame.DEFAULT_MIN_PIXELS
        )
        self._max_pixels = (
            self.config.max_pixels
            if self.config.max_pixels is not None
            else model_frame.DEFAULT_MAX_PIXELS
        )
        for name, ours in (("min_pixels", self._min_pixels), ("max_pixels", self._max_pixels)):
            theirs = getattr(backend, name, None)
            if theirs is not None and self.config.frame_policy == "resize" and theirs != ours:
                # The processor would resize our model frame again and the stated size
                # would no longer be the size the model sees.
                _LOG.warning(
                    "backend %s=%s differs from the engine's %s=%s: boxes may be skewed",
                    name,
                    theirs,
                    name,
                    ours,
                )
        self._workers_wanted = max(
            1, int(self.config.max_in_flight or getattr(backend, "max_concurrency", 1) or 1)
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queues: tuple[deque[_Request], deque[_Request]] = (deque(), deque())
        # Open ``together`` blocks: while any is open, no worker takes a batch.
        self._holds = 0
        self._running: dict[int, _Request] = {}
        self._deliveries: list[tuple[Future[EngineResult], EngineResult | RequestFailed]] = []
        self._ids = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._accepting = True
        self._stopping = False
        self._started = False
        self._load_error: str | None = None
        self._engine_state = "created"
        self._counts = dict.fromkeys(
            ("accepted", "rejected", "expired", "completed", "failed", "cancelled", "batches"), 0
        )
        self._batched_requests = 0
        self._latencies: deque[float] = deque(maxlen=self.config.latency_window)
        self._token_rates: deque[tuple[int, float]] = deque(maxlen=self.config.latency_window)
        self._text = _TextPump()

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait: bool = True) -> None:
        """Load the backend (if needed) and start the workers.

        Args:
            wait: Load in this thread and raise ``BackendError`` on failure. With False the
                load runs in the background; requests queue meanwhile and fail with the
                reason if loading fails.
        """
        with self._locked():
            if self._started:
                return
            if self._stopping:
                raise RuntimeError("engine was shut down")
            self._started = True
            self._engine_state = "loading"
        if wait:
            try:
                self._load()
            except BackendError:
                with self._locked():
                    self._started = False
                raise
            self._spawn_workers()
        else:
            thread = threading.Thread(
                target=self._load_then_spawn, name="engine-loader", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _load(self) -> None:
        try:
            if not self.backend.loaded:
                self.backend.load()
        except BackendError as exc:
            with self._locked():
                self._load_error = exc.reason
                self._engine_state = "failed"
            raise
        with self._locked():
            self._engine_state = "running" if not self._stopping else "stopped"

    def _load_then_spawn(self) -> None:
        try:
            self._load()
        except BackendError as exc:
            _LOG.error("backend failed to load: %s", exc.reason)
            # Nothing can run: fail everything queued now and everything submitted later.
            self._fail_all_queued(f"backend failed to load: {exc.reason}", "backend")
            return
        except Exception as exc:  # a bug in a backend must not leave requests hanging
            _LOG.exception("backend load crashed")
            with self._locked():
                self._load_error = f"{type(exc).__name__}: {exc}"
                self._engine_state = "failed"
            self._fail_all_queued(f"backend failed to load: {self._load_error}", "backend")
            return
        self._spawn_workers()

    def _spawn_workers(self) -> None:
        with self._locked():
            if self._stopping:
                return
            for i in range(self._workers_wanted):
                thread = threading.Thread(
                    target=self._worker, name=f"engine-worker-{i}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            # One light thread fails expired requests on time even while every worker is
            # busy inside a long backend call.
            reaper = threading.Thread(target=self._reaper, name="engine-reaper", daemon=True)
            self._threads.append(reaper)
            reaper.start()

    def shutdown(self, reason: str = "engine shut down", timeout: float = 10.0) -> None:
        """Stop: fail every queued and running request with ``reason``, join, unload.

        Args:
            reason: Reason given to every pending request (kind "shutdown").
            timeout: Seconds to wait for workers still inside a backend call.
        """
        with self._locked():
            if self._stopping:
                return
            self._stopping = True
            self._accepting = False
            self._engine_state = "stopping"
            pending = [*self._queues[0], *self._queues[1], *self._running.values()]
            self._queues[0].clear()
            self._queues[1].clear()
            for request in pending:
                request.cancel_event.set()
                self._finish_locked(request, RequestFailed(reason, "shutdown"), "failed")
            self._cond.notify_all()
        end = time.monotonic() + timeout
        self._text.stop(max(0.0, end - time.monotonic()))
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        try:
            self.backend.unload()
        except Exception:  # unloading is best effort at shutdown
            _LOG.exception("backend unload failed")
        with self._locked():
            self._engine_state = "stopped"

    # ------------------------------------------------------------------ submission
    def submit(
        self,
        image: np.ndarray,
        question: str,
        options: Sequence[str] = (),
        priority: Priority = Priority.QUERY,
        timeout: float | None = None,
        on_text: TextCallback | None = None,
    ) -> RequestHandle:
        """Queue one question about one image.

        Never raises for a full queue, a stopped engine or bad input: the returned handle's
        future fails at once with the reason.

        Args:
            image: Source RGB image, ``HxWx3`` uint8. Not copied: do not modify it afterwards.
            question: The question.
            options: Multiple-choice options (may be empty).
            priority: ``Priority.QUERY`` runs before ``Priority.CONTINUOUS``.
            timeout: Seconds from now until the request expires if it has not started;
                None uses ``config.default_timeout_s``.
            on_text: Called with the text the model writes while it writes it (when the
                backend streams and ``config.generation.stream``), on the engine's text
                thread, never after the request has ended.

        Returns:
            The request's handle.
        """
        now = time.monotonic()
        limit = self.config.default_timeout_s if timeout is None else float(timeout)
        request = _Request(
            next(self._ids),
            image,
            str(question),
            tuple(str(o) for o in options),
            Priority(priority),
            now + limit,
            now,
            on_text,
        )
        handle = RequestHandle(self, request)
        problem = self._validate(image)
        with self._locked():
            if problem is not None:
                self._counts["rejected"] += 1
                self._finish_locked(request, RequestFailed(problem, "invalid"), None)
            elif not self._accepting:
                self._counts["rejected"] += 1
                self._finish_locked(request, RequestFailed("engine is shut down", "rejected"), None)
            elif self._load_error is not None:
                self._counts["rejected"] += 1
                self._finish_locked(
                    request,
                    RequestFailed(f"backend failed to load: {self._load_error}", "backend"),
                    None,
                )
            elif self._queued_locked() >= self.config.max_queue_size:
                self._counts["rejected"] += 1
                self._finish_locked(
                    request,
                    RequestFailed(
                        f"queue full ({self.config.max_queue_size} requests waiting)",
                        "rejected",
                    ),
                    None,
                )
            elif limit <= 0:
                self._counts["accepted"] += 1
                self._counts["expired"] += 1
                self._finish_locked(
                    request, RequestFailed("deadline expired before it could run", "expired"), None
                )
            else:
                self._counts["accepted"] += 1
                self._queues[request.priority].append(request)
                self._cond.notify_all()
        return handle

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Requests submitted inside the block are answered together: no worker takes a batch
        until it ends, so up to ``max_batch_size`` of them go into one backend call (the cameras
        of one question). Keep the block short: it holds every worker."""
        with self._locked():
            self._holds += 1
        try:
            yield
        finally:
            with self._locked():
                self._holds -= 1
                self._cond.notify_all()

    @staticmethod
    def _validate(image: Any) -> str | None:
        if not isinstance(image, np.ndarray):
            return f"image must be a numpy array, not {type(image).__name__}"
        if image.ndim != 3 or image.shape[2] != 3:
            return f"image must be HxWx3 RGB, got shape {image.shape}"
        if image.dtype != np.uint8:
            return f"image must be uint8, got {image.dtype}"
        if image.shape[0] < 1 or image.shape[1] < 1:
            return f"image is empty: shape {image.shape}"
        return None

    def queue_position(self, handle: RequestHandle) -> int:
        """Requests that would run before this one (0 = next); -1 when it is not queued."""
        request = handle._request
        with self._locked():
            if request.state != "queued":
                return -1
            queue = self._queues[request.priority]
            try:
                index = queue.index(request)
            except ValueError:
                return -1
            if request.priority == Priority.CONTINUOUS:
                index += len(self._queues[Priority.QUERY])
            return index

    # ------------------------------------------------------------------ outcomes
    def _queued_locked(self) -> int:
        return len(self._queues[0]) + len(self._queues[1])

    def _finish_locked(
        self, request: _Request, outcome: EngineResult | RequestFailed, count: str | None
    ) -> bool:
        """Give a request its one outcome. Caller holds the lock. False if it already had one."""
        if request.state == "done":
            return False
        request.state = "done"
        self._running.pop(request.request_id, None)
        self._text.drop(request.request_id)
        # The image is no longer needed; drop it so a finished handle does not pin a frame.
        request.image = None  # type: ignore[assignment]
        if count is not None:
            self._counts[count] += 1
        if isinstance(outcome, EngineResult):
            self._latencies.append(outcome.total_s)
            if outcome.inference_s > 0:
                self._token_rates.append((outcome.output_tokens, outcome.inference_s))
        # Resolved by _flush after the lock is released: done-callbacks run in the resolving
        # thread, and a callback that publishes, or submits the next request, must neither
        # block the engine nor deadlock on its lock.
        self._deliveries.append((request.future, outcome))
        return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The engine lock; outcomes decided inside are delivered after it is released."""
        with self._lock:
            yield
        if self._deliveries:
            self._flush()

    def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._deliveries:
                    return
                ready = list(self._deliveries)
                self._deliveries.clear()
            for future, outcome in ready:
                try:
                    if isinstance(outcome, EngineResult):
                        future.set_result(outcome)
                    else:
                        future.set_exception(outcome)
                except Exception:  # a failing done-callback must not lose other outcomes
                    _LOG.exception("delivering a request outcome failed")

    def _cancel(self, request: _Request) -> bool:
        with self._locked():
            if request.state == "queued":
                queue = self._queues[request.priority]
                with contextlib.suppress(ValueError):
                    queue.remove(request)
                return self._finish_locked(
                    request, RequestFailed("cancelled while queued", "cancelled"), "cancelled"
                )
            if request.state == "running" and getattr(self.backend, "supports_cancel", False):
                request.cancel_event.set()
                return self._finish_locked(
                    request, RequestFailed("cancelled while running", "cancelled"), "cancelled"
                )
            return False

    def _fail_all_queued(self, reason: str, kind: str) -> None:
        with self._locked():
            for queue in self._queues:
                while queue:
                    self._finish_locked(queue.popleft(), RequestFailed(reason, kind), "failed")

    def _expire_locked(self, now: float) -> float | None:
        """Fail expired queued requests; return the earliest remaining deadline."""
        nearest: float | None = None
        for queue in self._queues:
            if not queue:
                continue
            keep: list[_Request] = []
            for request in queue:
                if request.deadline <= now:
                    waited = now - request.submitted
                    self._finish_locked(
                        request,
                        RequestFailed(
                            f"deadline expired after {waited:.3f} s in the queue", "expired"
                        ),
                        "expired",
                    )
                else:
                    keep.append(request)
                    if nearest is None or request.deadline < nearest:
                        nearest = request.deadline
            if len(keep) != len(queue):
                queue.clear()
                queue.extend(keep)
        # A running request the backend has not answered by its deadline (plus a grace for an
        # answer already on its way) is failed and its row stopped: the engine is the one owner
        # of every request's deadline, queued or running.
        for request in list(self._running.values()):
            overdue = request.deadline + self.config.running_grace_s
            if overdue <= now:
                request.cancel_event.set()
                budget = request.deadline - request.submitted
                self._finish_locked(
                    request,
                    RequestFailed(f"deadline passed: no answer within {budget:g} s", "expired"),
                    "expired",
                )
            elif nearest is None or overdue < nearest:
                nearest = overdue
        return nearest

    # ------------------------------------------------------------------ workers
    def _reaper(self) -> None:
        while True:
            with self._locked():
                if self._stopping:
                    return
                nearest = self._expire_locked(time.monotonic())
                if not self._deliveries:
                    wait = 1.0 if nearest is None else max(0.0, nearest - time.monotonic())
                    self._cond.wait(min(wait, 1.0))

    def _take_batch_locked(self) -> list[_Request]:
        batch: list[_Request] = []
        now = time.monotonic()
        for queue in self._queues:  # QUERY first, then CONTINUOUS
            while queue and len(batch) < self.config.max_batch_size:
                request = queue.popleft()
                if request.deadline <= now:  # expired since the reaper last looked
                    self._finish_locked(
                        request,
                        RequestFailed(
                            f"deadline expired after {now - request.submitted:.3f} s in the queue",
                            "expired",
                        ),
                        "expired",
                    )
                    continue
                batch.append(request)
        return batch

    def _worker(self) -> None:
        while True:
            with self._locked():
                # Expiry is the reaper's job (and _take_batch_locked's); an idle worker only
                # waits for work.
                while not self._stopping and (not self._queued_locked() or self._holds):
                    self._cond.wait()
                if self._stopping:
                    return
                if (
                    self.config.batch_wait_s > 0
                    and self._queued_locked() < self.config.max_batch_size
                ):
                    # Give concurrent submitters a moment to join this batch.
                    self._cond.wait_for(
                        lambda: (
                            self._stopping or self._queued_locked() >= self.config.max_batch_size
                        ),
                        self.config.batch_wait_s,
                    )
                    if self._stopping:
                        return
                batch = self._take_batch_locked()
                if not batch:
                    continue
                now = time.monotonic()
                for request in batch:
                    request.state = "running"
                    request.started = now
                    self._running[request.request_id] = request
                self._counts["batches"] += 1
                self._batched_requests += len(batch)
            try:
                self._run_batch(batch)
            except Exception as exc:  # never leave a request without an outcome
                _LOG.exception("batch failed unexpectedly")
                with self._locked():
                    for request in batch:
                        self._finish_locked(
                            request,
                            RequestFailed(f"internal error: {type(exc).__name__}: {exc}"),
                            "failed",
                        )

    def _prepare(self, request: _Request) -> tuple[np.ndarray, str, Any]:
        height, width = request.image.shape[:2]
        frame = model_frame.plan_model_frame(
            width,
            height,
            policy=self.config.frame_policy,
            min_pixels=self._min_pixels,
            max_pixels=self._max_pixels,
        )
        image = model_frame.prepare_image(request.image, frame)
        prompt = build_prompt(request.question, request.options or None, frame.stated_size)
        return image, prompt, frame

    def _run_batch(self, batch: list[_Request]) -> None:
        prepared: list[tuple[_Request, np.ndarray, str, Any]] = []
        for request in batch:
            image = request.image
            if image is None:  # cancelled / shut down between taking and preparing
                continue
            try:
                model_image, prompt, frame = self._prepare(request)
            except Exception as exc:
                with self._locked():
                    self._finish_locked(
                        request,
                        RequestFailed(f"could not prepare the image: {exc}", "invalid"),
                        "failed",
                    )
                continue
            request.frame = frame
            prepared.append((request, model_image, prompt, frame))
        if not prepared:
            return
        for request, *_ in prepared:
            request.batch_size = len(prepared)
        # Text callbacks only where someone listens; the backend streams a row given one.
        on_text: list[Callable[[str], None] | None] | None = None
        if self.config.generation.stream and any(p[0].on_text for p in prepared):
            on_text = [
                (lambda text, r=p[0]: self._text.push(r, text)) if p[0].on_text else None
                for p in prepared
            ]

        started = time.monotonic()
        # Each row is delivered as soon as the backend has it: a stalled row of a remote
        # backend must not hold back (or fail at its deadline) the answers of its batch-mates.
        delivered: set[int] = set()
        try:
            rows = self.backend.answers(
                Batch(
                    [p[1] for p in prepared],
                    [p[2] for p in prepared],
                    self.config.generation,
                    cancel=[p[0].cancel_event for p in prepared],
                    on_text=on_text,
                )
            )
            for index, output in rows:
                if not 0 <= index < len(prepared) or index in delivered:
                    raise RuntimeError(f"backend returned row {index} of {len(prepared)} twice")
                delivered.add(index)
                self._deliver(prepared[index], output, time.monotonic() - started)
            missing = BackendError(
                f"backend returned no output ({len(delivered)} of {len(prepared)} rows)"
            )
        except Exception as exc:
            missing = BackendError(f"backend error: {type(exc).__name__}: {exc}")
        for index, row in enumerate(prepared):
            if index not in delivered:
                self._deliver(row, missing, time.monotonic() - started)

    def _deliver(
        self,
        row: tuple[_Request, np.ndarray, str, Any],
        output: BackendOutput | BackendError,
        inference_s: float,
    ) -> None:
        """Parse one backend output (boxes back to source pixels) and end its request."""
        request, model_image, _prompt, frame = row
        if isinstance(output, BackendError):
            outcome: EngineResult | RequestFailed = RequestFailed(output.reason, "backend")
        else:
            # The whole text reaches the request's text callback before its answer does.
            self._text.flush(request, TEXT_FLUSH_WAIT_S)
            try:
                parsed = to_source_pixels(
                    parse_output(
                        output.text, image_size=frame.stated_size, options=request.options or None
                    ),
                    frame.stated_size,
                    frame.source_size,
                )
                done = time.monotonic()
                outcome = EngineResult(
                    request_id=request.request_id,
                    result=parsed,
                    raw_text=output.text,
                    model_image_size=(int(model_image.shape[1]), int(model_image.shape[0])),
                    stated_size=tuple(frame.stated_size),
                    queue_wait_s=request.started - request.submitted,
                    inference_s=inference_s,
                    total_s=done - request.submitted,
                    prompt_tokens=output.prompt_tokens,
                    output_tokens=output.output_tokens,
                    model_name=self.backend.model_name,
                    confidence=answer_confidence(parsed, request.options, output.token_scores),
                    object_scores=_object_scores(output.text, parsed, output.token_scores),
                    batch_size=request.batch_size,
                )
            except Exception as exc:
                outcome = RequestFailed(
                    f"could not read the model output: {type(exc).__name__}: {exc}", "error"
                )
        with self._locked():
            counter = "completed" if isinstance(outcome, EngineResult) else "failed"
            self._finish_locked(request, outcome, counter)

    # ------------------------------------------------------------------ diagnostics
    @property
    def state(self) -> str:
        """ "created", "loading", "running", "failed", "stopping" or "stopped"."""
        return self._engine_state

    def stats(self) -> dict[str, Any]:
        """Counters, queue depth, latency percentiles and throughput for diagnostics."""
        with self._locked():
            latencies = sorted(self._latencies)
            tokens = sum(t for t, _ in self._token_rates)
            seconds = sum(s for _, s in self._token_rates)
            stats: dict[str, Any] = {
                "state": self._engine_state,
                "queue_depth": self._queued_locked(),
                "queue_depth_query": len(self._queues[Priority.QUERY]),
                "queue_depth_continuous": len(self._queues[Priority.CONTINUOUS]),
                "running": len(self._running),
                "max_queue_size": self.config.max_queue_size,
                "max_batch_size": self.config.max_batch_size,
                "workers": self._workers_wanted,
                **self._counts,
                "mean_batch_size": (
                    self._batched_requests / self._counts["batches"]
                    if self._counts["batches"]
                    else 0.0
                ),
                "latency_p50_s": percentile(latencies, 0.5),
                "latency_p90_s": percentile(latencies, 0.9),
                "latency_p99_s": percentile(latencies, 0.99),
                # Per-request decode rate (a batch shares its seconds, so this is per stream).
                "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
                "load_error": self._load_error,
            }
        try:
            stats["backend"] = self.backend.describe()
        except Exception as exc:
            stats["backend"] = {"state": f"unknown ({type(exc).__name__})"}
        stats["backend_state"] = stats["backend"].get("state", "unknown")
        return stats

    def __enter__(self) -> InferenceEngine:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown("engine closed")
