"""Test helper: a scripted OpenAI-compatible chat-completions server on loopback.

It speaks just enough of the API for the ``openai`` client (``POST /v1/chat/completions``,
``GET /v1/models``), answers with scripted texts, records every request, and can misbehave on
purpose: answer HTTP 500 the next N times, answer slowly, or send a malformed body. A scripted
reply may also be a :class:`RawReply`, a hostile server's answer: any body and headers, sent a
byte at a time, endless, compressed, or held back until the test releases it.

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


Reply = str | RawReply | Callable[[dict[str, Any]], "str | RawReply"]


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
        return "ok", text

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
