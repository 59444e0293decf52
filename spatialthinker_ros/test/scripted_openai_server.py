"""Test helper: a scripted OpenAI-compatible chat-completions server on loopback.

It speaks just enough of the API for the ``openai`` client (``POST /v1/chat/completions``,
``GET /v1/models``), answers with scripted texts, records every request, and can misbehave on
purpose: answer HTTP 500 the next N times, answer slowly, or send a malformed body. A scripted
reply may also be a :class:`RawReply`, a hostile server's answer: any body and headers, sent a
byte at a time, endless, compressed, or held back until the test releases it.

A request with ``"stream": true`` is answered as vLLM does, with server-sent events of
chat.completion chunks (``stream_chunk_chars`` characters each, ``stream_delay_s`` apart, a usage
chunk when ``stream_options.include_usage``, then ``data: [DONE]``), unless ``honour_stream`` is
False (a server that answers whole). A :class:`StreamReply` scripts a faulty stream (cut off,
a malformed chunk, no finish_reason). The server notices a client that closes a stream early
(``streams_closed`` and ``stream_closed_at``).

In-process use::

    with ScriptedOpenAIServer(replies=["<answer> (A) left </answer>"]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")

From another process (the ROS node tests)::

    python scripted_openai_server.py --port 0 --reply-file answer.txt

prints ``PORT <n>`` on stdout once listening and serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class RawReply:
    """A hand-made HTTP reply, for hostile-server tests.

    Attributes:
        body: Bytes sent as the body (see ``endless``).
        status: HTTP status.
        headers: Extra headers (e.g. ``{"Content-Encoding": "gzip"}``).
        drip_s: Seconds between body bytes, sent one at a time (0: all at once).
        endless: The body never ends: ``body`` is sent over and over until the client leaves.
        hold: Wait for this event before answering (a stalled request the test releases).
    """

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float = 0.0
    endless: bool = False
    hold: threading.Event | None = None


@dataclass
class StreamReply:
    """A streamed answer with faults on purpose (the request need not ask for a stream).

    Attributes:
        text: The answer's text.
        chunk_chars: Characters per chunk (None: the server's ``stream_chunk_chars``).
        delay_s: Seconds between chunks (None: the server's ``stream_delay_s``).
        cut_after: Drop the connection after this many text chunks (no end, no [DONE]).
        malformed_after: After this many text chunks send one that is not JSON.
        finish: The last text chunk carries ``finish_reason: stop``.
        hold: Before text chunk ``hold_at``, wait (at most 60 s) until this event is set: a
            stream that goes on only once the test has seen what came before.
        hold_at: See ``hold``.
    """

    text: str
    chunk_chars: int | None = None
    delay_s: float | None = None
    cut_after: int | None = None
    malformed_after: int | None = None
    finish: bool = True
    hold: threading.Event | None = None
    hold_at: int = 0

    @staticmethod
    def chunk_after(text: str, marker: str, chunk_chars: int) -> int:
        """Index of the first chunk after the one that completes ``marker`` in ``text``."""
        end = text.index(marker) + len(marker)
        return -(-end // chunk_chars)


def completion_body(text: str, **fields: Any) -> bytes:
    """A chat-completion JSON body answering ``text``; ``fields`` replace top-level fields
    (e.g. ``usage="garbage"`` or ``choices=[]``)."""
    body: dict[str, Any] = {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "OX-PIXL/SpatialThinker-7B",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }
    body.update(fields)
    return json.dumps(body).encode()


Reply = str | RawReply | StreamReply | Callable[[dict[str, Any]], "str | RawReply | StreamReply"]


class ScriptedOpenAIServer:
    """OpenAI-compatible server answering with scripted completions.

    Args:
        replies: Texts (or callables taking the request body) used in order; when they run
            out, ``default_reply`` answers.
        default_reply: Reply after the script is used up.
        port: 0 picks a free port.
        model: Model name reported by ``/v1/models``.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        default_reply: Reply = "<answer> (A) yes </answer>",
        port: int = 0,
        model: str = "OX-PIXL/SpatialThinker-7B",
    ) -> None:
        self._replies: deque[Reply] = deque(replies)
        self.default_reply = default_reply
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # lower-case names
        self.delay_s = 0.0
        self._fail_next = 0
        self._fail_status = 500
        self._malformed_next = 0
        self._lock = threading.Lock()
        self._in_flight = 0
        self._connections: set[socket.socket] = set()
        self.max_in_flight_seen = 0
        # Raw replies whose client closed the connection before the body was complete.
        self.abandoned = 0
        # Streaming (see the module doc).
        self.honour_stream = True
        self.stream_chunk_chars = 16
        self.stream_delay_s = 0.0
        self.streams_closed = 0  # streams the client closed before their end
        self.stream_closed_at: list[float] = []  # time.monotonic() of each
        self.streams_sent = 0  # streams sent to their end
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- scripting
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_replies(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` completion requests with HTTP ``status``."""
        with self._lock:
            self._fail_next, self._fail_status = count, status

    def malformed_next(self, count: int) -> None:
        """Answer the next ``count`` completion requests with a 200 that is not valid JSON."""
        with self._lock:
            self._malformed_next = count

    @property
    def completion_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat-completion requests received, in order."""
        with self._lock:
            return list(self.requests)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> ScriptedOpenAIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed server: stop listening and drop every open connection.

        The client keeps HTTP/1.1 connections alive; without dropping them, a "stopped"
        server would go on answering on them.
        """
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                connection.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -------------------------------------------------------------- HTTP
    def _next_action(self, body: dict[str, Any]) -> tuple[str, Any]:
        with self._lock:
            self.requests.append(body)
            if self._fail_next > 0:
                self._fail_next -= 1
                return "status", self._fail_status
            if self._malformed_next > 0:
                self._malformed_next -= 1
                return "malformed", None
            reply = self._replies.popleft() if self._replies else self.default_reply
        text = reply(body) if callable(reply) else reply
        if isinstance(text, RawReply):
            return "raw", text
        if isinstance(text, StreamReply):
            return "stream", text
        if body.get("stream") and self.honour_stream:
            return "stream", StreamReply(text)
        return "ok", text

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], finish: str | None) -> bytes:
        data = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def stream_events(self, body: dict[str, Any], reply: StreamReply) -> Iterable[bytes | None]:
        """The SSE events of a streamed reply; None where the connection is to be dropped."""
        size = reply.chunk_chars or self.stream_chunk_chars
        pieces = [reply.text[i : i + size] for i in range(0, len(reply.text), size)] or [""]
        yield self._chunk(body, {"role": "assistant", "content": ""}, None)
        for index, piece in enumerate(pieces):
            if reply.cut_after is not None and index >= reply.cut_after:
                yield None
                return
            if reply.hold is not None and index == reply.hold_at:
                reply.hold.wait(60)
            if reply.malformed_after is not None and index == reply.malformed_after:
                yield b'data: {"choices": [ this is not json\n\n'
            last = index == len(pieces) - 1
            yield self._chunk(body, {"content": piece}, "stop" if last and reply.finish else None)
        if (body.get("stream_options") or {}).get("include_usage"):
            tokens = max(1, len(reply.text.split()))
            usage = {"prompt_tokens": 100, "completion_tokens": tokens}
            usage["total_tokens"] = 100 + tokens
            data = {"id": "chatcmpl-usage", "object": "chat.completion.chunk", "choices": []}
            data.update(created=int(time.time()), model=self.model, usage=usage)
            yield b"data: " + json.dumps(data).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    def _completion(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": max(1, len(text.split())),
                "total_tokens": 100 + max(1, len(text.split())),
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def handle(self) -> None:
                # A client that closes a kept-alive connection (a stream it closed) is normal.
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    super().handle()

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                # The client may have given up already (timeout test), or the server was
                # stopped under it (killed-server test).
                with contextlib.suppress(OSError, ValueError):
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def _send_raw(self, reply: RawReply) -> None:
                if reply.hold is not None:
                    reply.hold.wait()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "application/json")
                    length = 10**12 if reply.endless else len(reply.body)
                    self.send_header("Content-Length", str(length))
                    self.end_headers()
                    self.wfile.flush()
                    for piece in itertools.repeat(reply.body) if reply.endless else [reply.body]:
                        if reply.drip_s > 0:
                            for index in range(len(piece)):
                                self.wfile.write(piece[index : index + 1])
                                self.wfile.flush()
                                time.sleep(reply.drip_s)
                        else:
                            self.wfile.write(piece)
                    self.wfile.flush()
                except (OSError, ValueError):  # the client gave up and closed the connection
                    with server._lock:
                        server.abandoned += 1
                    self.close_connection = True

            def _peer_closed(self, wait_s: float) -> bool:
                """Wait up to ``wait_s``; True as soon as the client closes the connection."""
                readable, _, _ = select.select([self.connection], [], [], wait_s)
                if not readable:
                    return False
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _send_stream(self, body: dict[str, Any], reply: StreamReply) -> None:
                delay = server.stream_delay_s if reply.delay_s is None else reply.delay_s
                closed = False
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for event in server.stream_events(body, reply):
                        if event is None:  # cut off: drop the connection mid-stream
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        if delay > 0 and self._peer_closed(delay):
                            closed = True
                            break
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                    else:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                except (OSError, ValueError):
                    closed = True
                with server._lock:
                    if closed:
                        server.streams_closed += 1
                        server.stream_closed_at.append(time.monotonic())
                    else:
                        server.streams_sent += 1
                if closed:
                    self.close_connection = True

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    data = {
                        "object": "list",
                        "data": [{"id": server.model, "object": "model", "owned_by": "test"}],
                    }
                    self._send(200, json.dumps(data).encode(), "application/json")
                else:
                    self._send(404, b'{"error": {"message": "not found"}}', "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}', "application/json")
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, b'{"error": {"message": "bad json"}}', "application/json")
                    return
                with server._lock:
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server._in_flight += 1
                    server.max_in_flight_seen = max(server.max_in_flight_seen, server._in_flight)
                try:
                    action, value = server._next_action(body)
                    if server.delay_s > 0:
                        time.sleep(server.delay_s)
                    if action == "status":
                        err = {"error": {"message": "scripted failure", "type": "server_error"}}
                        self._send(int(value), json.dumps(err).encode(), "application/json")
                    elif action == "raw":
                        self._send_raw(value)
                    elif action == "stream":
                        self._send_stream(body, value)
                    elif action == "malformed":
                        self._send(200, b'{"choices": [ this is not json', "application/json")
                    else:
                        payload = json.dumps(server._completion(body, value)).encode()
                        self._send(200, payload, "application/json")
                finally:
                    with server._lock:
                        server._in_flight -= 1

        return Handler


def request_image_urls(body: dict[str, Any]) -> list[str]:
    """Image URLs in a chat-completions request body."""
    urls = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return urls


def request_texts(body: dict[str, Any]) -> list[str]:
    """Text parts in a chat-completions request body."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if p.get("type") == "text"]
    return texts


def main(argv: list[str] | None = None) -> int:
    """Serve scripted replies until killed (for tests that need another process)."""
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply-file", type=Path, required=True, help="text of every reply")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--model", default="OX-PIXL/SpatialThinker-7B")
    parser.add_argument(
        "--log-file", type=Path, help="append each request body to this file as one JSON line"
    )
    args = parser.parse_args(argv)
    reply_text = args.reply_file.read_text(encoding="utf-8")

    def reply(body: dict[str, Any]) -> str:
        if args.log_file is not None:
            with args.log_file.open("a", encoding="utf-8") as log:
                log.write(json.dumps(body) + "\n")
        return reply_text

    server = ScriptedOpenAIServer(default_reply=reply, port=args.port, model=args.model)
    server.delay_s = args.delay
    print(f"PORT {server.port}", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
