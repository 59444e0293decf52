"""Remote backend: any OpenAI-compatible chat-completions server (vLLM, SGLang, ...).

This is how users scale past one GPU: a serving engine with continuous batching answers many
robots, and this backend only encodes the image, sends the request and reads the answer. Each
row of a batch is its own HTTP request; at most ``max_in_flight`` run at once across all
batches, so the engine may run several batches concurrently without overloading the server.

With ``GenerationSettings.stream`` (the default) the answer is asked for as a stream of
chat.completion chunks: the text reaches the row's ``on_text`` callback as the server writes it,
and a cancelled row's connection is closed mid-stream, which stops the server generating. The
stream is read under the same total deadline and size bound as a whole response (see
``bounded_http``). A server that ignores ``stream`` and answers whole is read as a whole answer.
Server-sent-events lines without data (``retry:``, ``id:``, a lone ``event:``; proxies send
them) are skipped, and the stream is read up to the chunk with the ``finish_reason`` (and the
usage chunk after it), not past it.

Every request asks for the model's log-probabilities (``logprobs``, ``top_logprobs``: vLLM serves
them for image requests, streamed or not); each output's ``token_scores`` are read from them, the
answer's option probabilities from the letter token's top alternatives. A server that sends none
still answers (its outputs say so); one that refuses the fields (HTTP 400 naming them) is asked
again at once without them, and from then on never with them.

Every text read from a response is valid Unicode, whatever the server sends (see
:func:`_field` and :meth:`OpenAIBackend.redact`): JSON may write half of a UTF-16 surrogate
pair (``"\\ud800"``), which decodes to a lone surrogate that no UTF-8 encoder accepts (ROS
messages, the tools' JSON output), so each becomes U+FFFD where the text enters.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np

from spatialthinker_ros.core.backends.base import (
    Backend,
    BackendError,
    BackendOutput,
    Batch,
    Cancel,
    GenerationSettings,
    Images,
    Prompts,
    Row,
)
from spatialthinker_ros.core.token_scores import (
    TokenScoreBuilder,
    TokenScores,
    letter_slot,
    letter_variants,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_SERVED_MODEL = "OX-PIXL/SpatialThinker-7B"
# A chat completion of max_new_tokens is a few kB; 8 MiB leaves room for logprobs and proxies'
# error pages while keeping a runaway or hostile body (or a compression bomb) out of memory.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: Alternatives asked for per token (``top_logprobs``): the most the OpenAI API and vLLM's default
#: ``--max-logprobs`` allow; options whose letter is not among them count as 0.
TOP_LOGPROBS = 20

_LOG = logging.getLogger(__name__)


def encode_image(image: np.ndarray, image_format: str = "jpeg", jpeg_quality: int = 90) -> str:
    """Encode an RGB image as a ``data:`` URL.

    Args:
        image: ``HxWx3`` uint8 RGB.
        image_format: "jpeg" (small, lossy) or "png" (lossless, about 5x larger).
        jpeg_quality: 1 to 100.

    Returns:
        ``data:image/jpeg;base64,...`` or ``data:image/png;base64,...``.
    """
    import cv2

    bgr = np.ascontiguousarray(image[:, :, ::-1])  # OpenCV encodes BGR
    fmt = image_format.lower()
    if fmt in ("jpeg", "jpg"):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        mime = "image/jpeg"
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
        mime = "image/png"
    else:
        raise ValueError(f"image_format must be 'jpeg' or 'png', not {image_format!r}")
    if not ok:
        raise ValueError("image encoding failed")
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


_BEARER = re.compile(r"Bearer\s+\S+")


class OpenAIBackend(Backend):
    """Chat completions over HTTP through the ``openai`` client.

    Args:
        base_url: Server URL including ``/v1``.
        model: Served model name (vLLM's ``--served-model-name``).
        api_key_env: Name of the environment variable holding the API key. The key itself is
            never a setting (settings end up in logs and launch files). When the variable is
            unset, "EMPTY" is sent, which local vLLM/SGLang servers accept.
        timeout_s: Total time one HTTP request may take (connect, send, and reading the whole
            response), seconds; not just the gap between bytes.
        max_retries: Extra attempts after a connection error or a 5xx answer.
        backoff_s: First retry delay; doubles per retry.
        max_in_flight: HTTP requests in flight at once (across all batches).
        image_format: "jpeg" or "png".
        jpeg_quality: JPEG quality 1 to 100.
        check_on_load: Ask the server for its models on ``load`` and log what it says (an
            unreachable server does not fail loading: it may come up later).
        max_response_bytes: Largest response body accepted, on the wire and decompressed.

    Proxy environment variables are not used: requests go straight to ``base_url`` (a proxy
    transport would bypass the deadline and size bound).
    """

    name = "openai"
    supports_cancel = True
    supports_streaming = True

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_SERVED_MODEL,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_in_flight: int = 4,
        image_format: str = "jpeg",
        jpeg_quality: int = 90,
        check_on_load: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if image_format.lower() not in ("jpeg", "jpg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', not {image_format!r}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
        self.base_url = base_url
        self.served_model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = max(0.0, float(backoff_s))
        self.max_in_flight = int(max_in_flight)
        self.max_concurrency = self.max_in_flight
        self.image_format = image_format
        self.jpeg_quality = int(jpeg_quality)
        self.check_on_load = check_on_load
        self.max_response_bytes = int(max_response_bytes)
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        # Why the server refused the log-probability fields ("" until it does).
        self._logprobs_refused = ""
        self._state = "not loaded"
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.served_model

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(
            base_url=self.base_url,
            max_in_flight=self.max_in_flight,
            api_key_env=self.api_key_env,
            api_key_set=bool(os.environ.get(self.api_key_env)),
        )
        return info

    def load(self) -> None:
        """Create the client (and probe the server when ``check_on_load``)."""
        import httpx2
        import openai

        from spatialthinker_ros.core.backends.bounded_http import BoundedTransport, request_budget

        with self._lock:
            if self._client is not None:
                return
            api_key = os.environ.get(self.api_key_env) or "EMPTY"
            http_client = httpx2.Client(
                transport=BoundedTransport(self.max_in_flight, self.max_response_bytes),
                timeout=self.timeout_s,
                trust_env=False,
            )
            # Retries are ours (with backoff and cancellation); the client's would hide them.
            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=api_key,
                timeout=self.timeout_s,
                max_retries=0,
                http_client=http_client,
            )
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="openai-req")
            self._logprobs_refused = ""  # a server configured again may serve them now
            self._state = "loaded"
        if self.check_on_load:
            try:
                with request_budget(5.0):
                    served = [m.id for m in self._client.with_options(timeout=5.0).models.list()]
            except Exception as exc:
                self._state = "loaded (server unreachable at load)"
                _LOG.warning(
                    "OpenAI-compatible server at %s not reachable yet (%s); requests will retry",
                    self.base_url,
                    type(exc).__name__,
                )
                return
            if served and self.served_model not in served:
                _LOG.warning(
                    "server at %s serves %s, not %r", self.base_url, served, self.served_model
                )
            self._state = "loaded"

    def unload(self) -> None:
        """Close the HTTP client and its worker threads."""
        with self._lock:
            client, pool = self._client, self._pool
            self._client, self._pool = None, None
            self._state = "not loaded"
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()

    def _messages(self, image: np.ndarray, prompt: str) -> list[dict[str, Any]]:
        url = encode_image(image, self.image_format, self.jpeg_quality)
        # Same layout as the embedded backend: one user message, image first, no system text.
        return [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ]

    def _request(
        self, image: np.ndarray, prompt: str, settings: GenerationSettings
    ) -> dict[str, Any]:
        """The chat-completions request of one row (raises when the image cannot be encoded)."""
        request: dict[str, Any] = {
            "model": self.served_model,
            "messages": self._messages(image, prompt),
            "max_tokens": int(settings.max_new_tokens),
            "temperature": float(settings.temperature),
        }
        if not self._logprobs_refused:
            # The model's probabilities of its tokens and of their top alternatives: what the
            # answer's option probabilities are read from (vLLM serves them, images included).
            request.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        if settings.min_new_tokens:
            request["extra_body"] = {"min_tokens": int(settings.min_new_tokens)}
        return request

    def _one(
        self,
        image: np.ndarray,
        prompt: str,
        settings: GenerationSettings,
        cancel: threading.Event | None,
        on_text: Callable[[str], None] | None = None,
    ) -> BackendOutput | BackendError:
        from spatialthinker_ros.core.backends.bounded_http import request_budget

        client = self._client
        if client is None:
            return BackendError("backend not loaded")
        try:
            request = self._request(image, prompt, settings)
        except Exception as exc:
            return BackendError(f"could not encode the image: {exc}")
        started = time.perf_counter()
        # Text already passed on: a retry would write the answer a second time.
        streamed = _Streamed(on_text)
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                return BackendError("cancelled")
            try:
                # One total deadline per HTTP request, the whole stream included; cancelling
                # closes its connection.
                with request_budget(self.timeout_s, cancel):
                    if settings.stream:
                        output = self._read_stream(client, request, streamed, started)
                    else:
                        response = client.chat.completions.create(**request)
                        output = self._read(response, time.perf_counter() - started)
            except Exception as exc:
                if cancel is not None and cancel.is_set():
                    return BackendError("cancelled")
                if self._refused_logprobs(exc, request):
                    continue  # asked again at once, without them: not a failed attempt
                retryable, reason = self._classify(exc)
                if streamed.chars:
                    if retryable:  # the connection broke
                        reason = f"stream cut off after {streamed.chars} characters: {reason}"
                    else:
                        reason = f"{reason} (after {streamed.chars} streamed characters)"
                    retryable = False
            else:
                ok = not isinstance(output, BackendError)
                self._set_state("loaded" if ok else f"failing: {self.redact(output.reason)}")
                return self._without_logprobs(output) if "logprobs" not in request else output
            reason = self.redact(reason)
            if not retryable or attempt >= self.max_retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                # Diagnostics show the server failing until a request succeeds again.
                self._set_state(f"failing: {reason}{tries}")
                return BackendError(reason + tries)
            delay = self.backoff_s * (2**attempt)
            attempt += 1
            _LOG.debug("retry %d in %.2f s: %s", attempt, delay, reason)
            if cancel is not None:
                if cancel.wait(delay):
                    return BackendError("cancelled")
            else:
                time.sleep(delay)

    def _refused_logprobs(self, exc: Exception, request: dict[str, Any]) -> bool:
        """Whether ``exc`` is the server refusing the log-probability fields of ``request``
        (HTTP 400/422 naming them: a server without them, or a ``--max-logprobs`` below
        :data:`TOP_LOGPROBS`). Then they are dropped from ``request`` and from every request
        after it (until the backend is loaded again), and True is returned."""
        import openai

        if "logprobs" not in request or not isinstance(exc, openai.APIStatusError):
            return False
        if exc.status_code not in (400, 422) or "logprob" not in str(exc.message).lower():
            return False
        reason = self.redact(str(exc.message))[:300]
        with self._lock:
            self._logprobs_refused = reason
        _LOG.warning(
            "server at %s refused log-probabilities (%s): answers go on without confidence",
            self.base_url,
            reason,
        )
        request.pop("logprobs", None)
        request.pop("top_logprobs", None)
        return True

    def _without_logprobs(
        self, output: BackendOutput | BackendError
    ) -> BackendOutput | BackendError:
        """An output of a request sent without the log-probability fields: why it has none."""
        if isinstance(output, BackendError):
            return output
        reason = f"the server refused log-probabilities ({self._logprobs_refused})"
        return dataclasses.replace(output, token_scores=TokenScores.unavailable(reason))

    def _read_stream(
        self, client: Any, request: dict[str, Any], streamed: _Streamed, started: float
    ) -> BackendOutput | BackendError:
        """Ask for the answer as a stream and read it chunk by chunk (see the module doc)."""
        body = {key: value for key, value in request.items() if key != "extra_body"}
        body.update(
            request.get("extra_body", {}), stream=True, stream_options={"include_usage": True}
        )
        # The same client call as chat.completions.create, with each chunk left as plain JSON:
        # building the client's typed chunk objects costs ~0.3 ms per chunk (one per token),
        # more than everything else the node does with it.
        stream = client.post(
            "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=_chunk_stream()
        )
        try:
            content_type = stream.response.headers.get("content-type", "")
            if "text/event-stream" not in content_type.lower():
                # A server that cannot stream answers whole (the body is size-bounded too).
                try:
                    body = json.loads(stream.response.read())
                except ValueError as exc:
                    return BackendError(f"bad response from {self.base_url}: not JSON ({exc})")
                output = self._read(body, time.perf_counter() - started)
                if not isinstance(output, BackendError):
                    streamed.add(output.text)
                return output
            usage: Any = None
            finished = False
            scores = _ServerScores()
            for chunk in stream:
                usage = _field(chunk, "usage") or usage
                if finished:
                    # The answer ended at its finish_reason: the usage chunk comes next (read
                    # just above), and anything else would change a finished answer (a second
                    # <answer> would win). Stop as at [DONE].
                    break
                choices = _field(chunk, "choices")
                if not choices:
                    continue  # the usage chunk, or a keep-alive
                if not isinstance(choices, list):
                    return BackendError(f"malformed stream chunk: choices is {choices!r:.80}")
                text = _field(_field(choices[0], "delta"), "content")
                if text is not None and not isinstance(text, str):
                    return BackendError(f"malformed stream chunk: content is {text!r:.80}")
                streamed.add(text or "")
                scores.add(_field(choices[0], "logprobs"))
                if streamed.chars > self.max_response_bytes:
                    return BackendError(
                        f"streamed answer is longer than {self.max_response_bytes} characters"
                    )
                finished = bool(_field(choices[0], "finish_reason"))
        finally:
            stream.close()  # an unfinished stream's connection is closed, not reused
        if not finished:
            return BackendError(
                f"stream from {self.base_url} ended before the answer was finished"
                f" ({streamed.chars} characters, no finish_reason)"
            )
        return BackendOutput(
            streamed.text,
            _token_count(_field(usage, "prompt_tokens")),
            _token_count(_field(usage, "completion_tokens")),
            time.perf_counter() - started,
            scores.finish(streamed.text),
        )

    def _set_state(self, state: str) -> None:
        with self._lock:
            if self._client is not None:  # an unload in between has the last word
                self._state = state

    def _classify(self, exc: Exception) -> tuple[bool, str]:
        """Whether a failed attempt is worth retrying, and the reason users see."""
        import httpx2
        import openai

        from spatialthinker_ros.core.backends.bounded_http import ResponseTooLarge

        chain: list[BaseException] = []
        cause: BaseException | None = exc
        while cause is not None and cause not in chain:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        too_large = next((c for c in chain if isinstance(c, ResponseTooLarge)), None)
        if too_large is not None:
            return False, f"response from {self.base_url} refused: {too_large}"
        if any(isinstance(c, openai.APITimeoutError | httpx2.TimeoutException) for c in chain):
            # A slow server is not helped by sending it the same work again.
            return False, f"request to {self.base_url} timed out after {self.timeout_s!r} s"
        if isinstance(exc, openai.APIConnectionError | openai.InternalServerError):
            return True, self._reason(exc)
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code >= 500, self._reason(exc)
        # Malformed bodies and anything unexpected.
        return False, f"bad response from {self.base_url}: {type(exc).__name__}: {exc}"

    def redact(self, text: str) -> str:
        """A reason as it may leave the backend: without the API key, and valid Unicode.

        Servers and proxies echo the key in error bodies ("Incorrect API key provided:
        sk-...") and in response fields, and reasons reach logs and /diagnostics; an error
        body's message may hold a lone surrogate (see :func:`valid_text`). ``answers`` applies
        this to every reason that leaves, and the state /diagnostics shows is built from it.
        """
        key = os.environ.get(self.api_key_env, "")
        if len(key) >= 4:
            text = text.replace(key, "[redacted]")
        return valid_text(_BEARER.sub("Bearer [redacted]", text))

    def _reason(self, exc: Exception) -> str:
        import openai

        if isinstance(exc, openai.APIStatusError):
            return f"server {self.base_url} answered HTTP {exc.status_code}: {exc.message}"
        return f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}"

    @staticmethod
    def _read(response: Any, seconds: float) -> BackendOutput | BackendError:
        """One whole chat completion (the client's object, or its JSON as a dict)."""
        choices = _field(response, "choices")
        if not choices or not isinstance(choices, list):
            return BackendError(f"malformed response: no choices ({str(response)[:120]!r})")
        text = _field(_field(choices[0], "message"), "content")
        if not isinstance(text, str):
            return BackendError("malformed response: the first choice has no text content")
        # Token counts are informational: a malformed usage field must not cost the answer.
        usage = _field(response, "usage")
        prompt_tokens = _token_count(_field(usage, "prompt_tokens"))
        output_tokens = _token_count(_field(usage, "completion_tokens"))
        scores = _ServerScores()
        scores.add(_field(choices[0], "logprobs"))
        return BackendOutput(text, prompt_tokens, output_tokens, seconds, scores.finish(text))

    def generate_rows(self, batch: Batch) -> Iterator[Row]:
        """Send every row as its own request (concurrently, within ``max_in_flight``) and
        yield each as its answer arrives.

        A cancelled row stops retrying and its connection is closed. ``batch.on_text`` gets
        each row's text as it streams in (``settings.stream``).
        """
        images, prompts, settings = batch.images, batch.prompts, batch.settings
        pool = self._pool
        if pool is None:
            yield from (
                (i, BackendError(f"backend not loaded ({self._state})")) for i in range(len(images))
            )
            return
        events = list(batch.cancel) if batch.cancel is not None else [None] * len(images)
        callbacks = list(batch.on_text) if batch.on_text is not None else [None] * len(images)
        try:
            futures = {
                pool.submit(self._one, image, prompt, settings, event, callback): index
                for index, (image, prompt, event, callback) in enumerate(
                    zip(images, prompts, events, callbacks, strict=True)
                )
            }
        except RuntimeError as exc:  # pool shut down by a concurrent unload
            yield from ((i, BackendError(f"backend unloaded: {exc}")) for i in range(len(images)))
            return
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as exc:
                yield futures[future], BackendError(f"request failed: {type(exc).__name__}: {exc}")

    def generate(
        self, images: Images, prompts: Prompts, settings: GenerationSettings, cancel: Cancel = None
    ) -> list[BackendOutput | BackendError]:
        """Answer a batch (rows in order; see ``generate_rows``)."""
        results: list[BackendOutput | BackendError] = [BackendError("no answer")] * len(images)
        for index, output in self.answers(Batch(images, prompts, settings, cancel)):
            results[index] = output
        return results


class _Streamed:
    """The text of one row's stream so far, passed on to its callback as it comes."""

    def __init__(self, on_text: Callable[[str], None] | None) -> None:
        self._on_text = on_text
        self._parts: list[str] = []
        self.chars = 0

    def add(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        self.chars += len(text)
        if self._on_text is not None:
            self._on_text(text)

    @property
    def text(self) -> str:
        return "".join(self._parts)


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate replaced by U+FFFD.

    JSON may escape half of a surrogate pair (``"\\ud800"``); Python decodes it to a lone
    surrogate, a ``str`` no UTF-8 encoder accepts: publishing it raised inside the node's
    executor and ended the node, and the tools' UTF-8 output failed. (A whole pair decodes to
    its one character, which is kept.)
    """
    if text.isascii():  # nearly every chunk: no search
        return text
    return _SURROGATE.sub("\ufffd", text)


def _field(item: Any, name: str) -> Any:
    """A field of a response object (the client's model or plain JSON); None when absent.

    Every text read from a response passes here, so it is where a text from the server
    becomes valid Unicode (:func:`valid_text`).
    """
    value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
    return valid_text(value) if isinstance(value, str) else value


@functools.cache
def _chunk_stream() -> type:
    """The client's ``Stream`` of plain-JSON chunks, without the server-sent events that carry
    no data.

    A ``retry:`` or ``id:`` line alone (proxies send ``retry:``), or an ``event:`` without
    data, is a valid event the event-stream format does not dispatch; the client's reader
    hands it on with empty data, which it then fails to read as JSON, failing every streamed
    request. A ``data:`` line that is not JSON still fails the request.
    """
    from openai import Stream

    class ChunkStream(Stream[object]):
        # The client's own event reader, filtered (openai is pinned in requirements; the
        # retry:/id: tests in test_openai_hostile_server.py fail if this hook goes away).
        def _iter_events(self) -> Iterator[Any]:
            return (event for event in super()._iter_events() if event.data)

    return ChunkStream


class _ServerScores:
    """The log-probabilities a server sends with its answer (a choice's ``logprobs.content``:
    per token its text, ``bytes``, ``logprob`` and ``top_logprobs``), read into token scores as
    they come (one response, or chunk by chunk).

    A token holding one letter gets the log-probabilities of its letter variants from its top
    alternatives (a variant not listed: ``-inf``, below every listed one; with no alternatives
    listed at all: NaN, not measured). Malformed log-probabilities cost the scores, never the
    answer.
    """

    def __init__(self) -> None:
        self._builder = TokenScoreBuilder()
        self._problem = ""

    def add(self, logprobs: Any) -> None:
        """Read one choice's (or chunk's) ``logprobs`` field (None: the server sent none)."""
        content = _field(logprobs, "content") if logprobs is not None else None
        if content is None or self._problem:
            return
        if not isinstance(content, list):
            self._problem = (
                f"malformed log-probabilities from the server: content is {content!r:.60}"
            )
            return
        for entry in content:
            try:
                self._builder.add(*_server_token(entry))
            except (TypeError, ValueError) as exc:
                self._problem = f"malformed log-probabilities from the server: {exc}"
                return

    def finish(self, text: str) -> TokenScores:
        """The scores of the answer ``text``, or why there are none."""
        if self._problem:
            return TokenScores.unavailable(self._problem)
        if not len(self._builder):
            return TokenScores.unavailable("the server returned no log-probabilities")
        return self._builder.finish(text)


def _logprob(value: Any) -> float:
    """A log-probability from the server: a number <= 0 (``-inf`` allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value <= 1e-6:
        raise ValueError(f"logprob {value!r:.40} is not a log-probability")
    return min(float(value), 0.0)


def _server_token(entry: Any) -> tuple[bytes, float, list[float] | None]:
    """One token entry as (its bytes, its log-probability, its letter variants' or None)."""
    token = _field(entry, "token")
    if not isinstance(token, str):
        raise ValueError(f"token {token!r:.40} is not a text")
    logprob = _logprob(_field(entry, "logprob"))
    raw = _field(entry, "bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        piece = bytes(raw)
    else:
        piece = token.encode("utf-8", "replace")
    slot = letter_slot(token)
    if slot is None:
        return piece, logprob, None
    top = _field(entry, "top_logprobs") or []
    if not isinstance(top, list):
        raise ValueError("top_logprobs is not a list")
    listed: dict[str, float] = {}
    for alternative in top:
        text = _field(alternative, "token")
        if isinstance(text, str):
            value = _logprob(_field(alternative, "logprob"))
            listed[text] = max(value, listed.get(text, -math.inf))
    floor = -math.inf if listed else math.nan
    listed[token] = logprob
    return piece, logprob, [listed.get(v, floor) for v in letter_variants(token, slot)]


def _token_count(value: Any) -> int:
    """A usage count as a non-negative int; 0 when the server sent something else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if not 0 <= value < 2**53:  # also false for NaN
        return 0
    return int(value)
