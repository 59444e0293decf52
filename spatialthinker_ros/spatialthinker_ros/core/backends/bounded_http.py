"""An HTTP transport for the ``openai`` client with a total deadline and a size bound.

httpx's timeouts bound each network operation (one connect, one read), not the request: a
server, proxy or slow link that sends one byte a second keeps a request alive indefinitely, and
its body (or a small gzip body that inflates to gigabytes) is read into memory whole. Here every
request runs under a :class:`RequestBudget` set by the thread that sends it:

* every socket operation (connect, each write, each read, headers included) waits at most the
  time left until the request's deadline, so connect + send + reading the whole body together
  take at most the budget; reads also wake up a few times a second to notice cancellation;
* the body is read and decompressed here (gzip and deflate), counting both the bytes on the wire
  and the decompressed bytes, and the request fails once either passes ``max_bytes``;
* a failed request's connection is closed, so nothing keeps reading after the caller was failed.

Everything is public httpcore2/httpx2 API: a network backend wrapping the sync one, and a
transport on top of ``httpcore2.ConnectionPool``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

__all__ = ["BoundedTransport", "RequestBudget", "ResponseTooLarge", "request_budget"]

# How often a blocked read wakes up to notice that its request was cancelled.
_CANCEL_POLL_S = 0.2
# Largest piece written per socket call, so a server that reads slowly cannot stretch one write
# past the deadline.
_WRITE_SLICE = 64 * 1024


#: How many times ``max_bytes`` an event stream may send on the wire (each chunk of a token or
#: two of text comes in an envelope of some 150 bytes).
EVENT_STREAM_WIRE_FACTOR = 64


class ResponseTooLarge(httpx2.TransportError):
    """The response body (on the wire or decompressed) is larger than the limit."""


@dataclass
class RequestBudget:
    """Limits of the request the current thread is sending.

    Attributes:
        deadline: ``time.monotonic()`` by which the whole request must be done.
        seconds: The budget in seconds (for messages).
        cancel: Set to abandon the request (its connection is closed).
    """

    deadline: float
    seconds: float
    cancel: threading.Event | None = None

    def remaining(self, operation: str, timeout_type: type[Exception]) -> float:
        """Seconds left; raises ``timeout_type`` when the deadline has passed."""
        if self.cancel is not None and self.cancel.is_set():
            raise httpcore2.ReadError("request cancelled")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise timeout_type(f"{operation} exceeded the total deadline of {self.seconds:g} s")
        return left


_CURRENT = threading.local()


@contextlib.contextmanager
def request_budget(seconds: float, cancel: threading.Event | None = None) -> Iterator[None]:
    """Run the HTTP requests sent by this thread inside the block under one total deadline."""
    previous = getattr(_CURRENT, "budget", None)
    _CURRENT.budget = RequestBudget(time.monotonic() + seconds, seconds, cancel)
    try:
        yield
    finally:
        _CURRENT.budget = previous


def _budget() -> RequestBudget | None:
    return getattr(_CURRENT, "budget", None)


def _cap(timeout: float | None, left: float) -> float:
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    """A socket stream whose every operation ends by the sending thread's deadline."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = _budget()
        if budget is None:
            return self._inner.read(max_bytes, timeout)
        waited_until = None if timeout is None else time.monotonic() + timeout
        while True:
            left = budget.remaining("reading the response", httpcore2.ReadTimeout)
            if waited_until is not None:
                left = min(left, waited_until - time.monotonic())
                if left <= 0:
                    raise httpcore2.ReadTimeout(f"no data for {timeout:g} s")
            try:
                # A recv that times out has consumed nothing, so waiting in slices is exact.
                return self._inner.read(max_bytes, min(left, _CANCEL_POLL_S))
            except httpcore2.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        budget = _budget()
        if budget is None:
            self._inner.write(buffer, timeout)
            return
        view = memoryview(buffer)
        while view:
            left = budget.remaining("sending the request", httpcore2.WriteTimeout)
            self._inner.write(bytes(view[:_WRITE_SLICE]), _cap(timeout, left))
            view = view[_WRITE_SLICE:]

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        budget = _budget()
        if budget is not None:
            timeout = _cap(timeout, budget.remaining("the TLS handshake", httpcore2.ConnectTimeout))
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    """httpcore2's sync network backend with every stream bounded by the request deadline."""

    def __init__(self) -> None:
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        budget = _budget()
        if budget is not None:
            timeout = _cap(timeout, budget.remaining("connecting", httpcore2.ConnectTimeout))
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        budget = _budget()
        if budget is not None:
            timeout = _cap(timeout, budget.remaining("connecting", httpcore2.ConnectTimeout))
        return _DeadlineStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore2 exceptions as the httpx2 exceptions of the same name (the client expects
    those: a timeout must reach it as ``httpx2.TimeoutException``)."""
    try:
        yield
    except httpcore2.TimeoutException as exc:
        mapped = getattr(httpx2, type(exc).__name__, httpx2.TimeoutException)
        raise mapped(str(exc)) from exc
    except (httpcore2.NetworkError, httpcore2.ProtocolError, httpcore2.ProxyError) as exc:
        mapped = getattr(httpx2, type(exc).__name__, httpx2.TransportError)
        raise mapped(str(exc)) from exc


class _BoundedBody(httpx2.SyncByteStream):
    """A response body read, decompressed and counted here; closed on any failure."""

    def __init__(self, response: httpcore2.Response, encoding: str, max_bytes: int) -> None:
        self._response = response
        self._encoding = encoding
        self._max_bytes = max_bytes

    def _decoder(self) -> Any:
        if self._encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._encoding == "deflate":
            return zlib.decompressobj()
        return None

    def __iter__(self) -> Iterator[bytes]:
        limit = self._max_bytes
        too_large = f"response body is larger than {limit} bytes"
        decoder = self._decoder()
        wire = decoded = 0
        try:
            with _httpx_errors():
                for chunk in self._response.stream:
                    wire += len(chunk)
                    if wire > limit:
                        raise ResponseTooLarge(too_large)
                    if decoder is None:
                        yield chunk
                        continue
                    data = chunk
                    while data:
                        # max_length keeps one small chunk of a compression bomb from
                        # inflating past the limit before it is counted.
                        out = decoder.decompress(data, limit - decoded + 1)
                        decoded += len(out)
                        if decoded > limit:
                            raise ResponseTooLarge(f"{too_large} once decompressed")
                        if out:
                            yield out
                        data = decoder.unconsumed_tail
        except zlib.error as exc:
            self.close()
            raise httpx2.DecodingError(
                f"cannot decompress the {self._encoding} body: {exc}"
            ) from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # An unfinished body leaves the connection unusable: httpcore closes it.
        with contextlib.suppress(Exception):
            self._response.close()


class BoundedTransport(httpx2.BaseTransport):
    """HTTP transport with a total deadline (see :func:`request_budget`) and a body-size bound.

    Args:
        max_connections: Connections kept to the server (the backend's in-flight limit).
        max_bytes: Largest response body accepted, on the wire and decompressed.
    """

    #: Content encodings decoded (and bounded) here; nothing else is requested.
    ENCODINGS = ("gzip", "deflate")

    def __init__(self, max_connections: int, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._pool = httpcore2.ConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=_DeadlineBackend(),
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.headers["Accept-Encoding"] = ", ".join(self.ENCODINGS)
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        headers = httpx2.Headers(response.headers)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in (*self.ENCODINGS, "identity", ""):
            response.close()
            raise httpx2.DecodingError(f"server sent an unsupported content encoding {encoding!r}")
        # The body reaches httpx already decoded.
        for name in ("content-encoding", "content-length"):
            if encoding not in ("identity", "") and name in headers:
                del headers[name]
        # An event stream is read as it comes (only its text is kept, and the backend bounds
        # that), while every chunk's envelope is many times its text: its wire bound is wider.
        limit = self.max_bytes
        if "text/event-stream" in headers.get("content-type", "").lower():
            limit *= EVENT_STREAM_WIRE_FACTOR
        return httpx2.Response(
            status_code=response.status,
            headers=headers,
            stream=_BoundedBody(response, encoding, limit),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
