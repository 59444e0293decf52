"""Security: the API key's path, model output as data only, every published text bounded.

Complements test_hardening_security.py (parameters, CLI output folder, parser on code) and
test_hardening_faults.py (key in the Authorization header, absent from log/diagnostics on
the happy path). This module adds the unhappy path: a server or proxy that echoes the key in
its error body (real ones do: "Incorrect API key provided: sk-..."), the key in the node's
parameters, command line and params file, a static check that nothing that touches model
output evaluates it, and a field-by-field length bound on everything the node publishes.
"""

from __future__ import annotations

import ast
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node_harness import DEMO_SCENE, NodeProcess, Rig, running_node, scripted_reply
from rcl_interfaces.srv import GetParameters, ListParameters
from std_msgs.msg import Header

from spatialthinker_ros.engine import EngineResult
from spatialthinker_ros.lifting import Lifted3D
from spatialthinker_ros.parsing import parse_output
from spatialthinker_ros.ros_conversions import answer_message, scene_graph_message

SCENE = DEMO_SCENE
KEY_ENV = "SPATIALTHINKER_SECURITY_TEST_KEY"
KEY = "sk-sec-0b5e1a7d93c24f6e-do-not-leak"
PACKAGE = Path(__file__).resolve().parents[1] / "spatialthinker_ros"


class EchoingServer:
    """An OpenAI-compatible server whose errors echo the caller's credentials.

    ``mode`` "ok" answers with the scripted SpatialThinker reply; "echo401" / "echo500"
    answer that status with the received Authorization header inside the error message.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.authorizations: list[str] = []
        reply = scripted_reply(SCENE)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                auth = self.headers.get("Authorization", "")
                server.authorizations.append(auth)
                if server.mode.startswith("echo"):
                    status = int(server.mode[4:])
                    key = auth.removeprefix("Bearer ")
                    message = f"Incorrect API key provided: {key}. Header was '{auth}'."
                    self._send(status, {"error": {"message": message, "type": "auth"}})
                    return
                text = reply(body)
                self._send(
                    200,
                    {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    echoing = EchoingServer()
    yield echoing
    echoing.close()


@pytest.fixture(scope="module")
def node(server, rig):
    with running_node(
        rig,
        {
            "backend": "openai",
            "model": "security",
            "openai.base_url": server.base_url,
            "openai.api_key_env": KEY_ENV,
            "openai.max_retries": 1,
            "request_timeout": 20.0,
            "max_frame_age": 3.0,
            "diagnostics_period": 0.2,
        },
        env={KEY_ENV: KEY},
    ) as process:
        yield process


def _assert_key_nowhere(rig: Rig, node: NodeProcess, *texts: str) -> None:
    for text in texts:
        assert KEY not in text, f"API key leaked: {text[:300]}"
    assert KEY not in node.log(), "API key leaked into the node's log"
    for array in list(rig.diagnostics):
        for status in array.status:
            assert KEY not in status.message, f"API key in /diagnostics: {status.message}"
            assert all(KEY not in kv.value for kv in status.values), "API key in /diagnostics"
    for answer in list(rig.answers):
        assert KEY not in answer.raw_output and all(KEY not in w for w in answer.warnings)


def test_the_key_reaches_the_server_only_in_the_authorization_header(node, rig, server) -> None:
    server.mode = "ok"
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    assert server.authorizations[-1] == f"Bearer {KEY}"
    # Not on the command line, not in the params file, not in any parameter.
    cmdline = Path(f"/proc/{node.process.pid}/cmdline").read_bytes().decode(errors="replace")
    assert KEY not in cmdline and KEY not in node.params_file.read_text()
    listed = rig.node.create_client(ListParameters, "/spatialthinker/list_parameters")
    getter = rig.node.create_client(GetParameters, "/spatialthinker/get_parameters")
    try:
        assert listed.wait_for_service(timeout_sec=10) and getter.wait_for_service(timeout_sec=10)
        names = rig.wait_future(listed.call_async(ListParameters.Request()), 10).result.names
        assert "openai.api_key_env" in names
        values = rig.wait_future(getter.call_async(GetParameters.Request(names=names)), 10)
        assert all(KEY not in str(value) for value in values.values)
        env_name = values.values[list(names).index("openai.api_key_env")].string_value
        assert env_name == KEY_ENV
    finally:
        rig.node.destroy_client(listed)
        rig.node.destroy_client(getter)
    _assert_key_nowhere(rig, node, response.message)


@pytest.mark.parametrize("mode", ["echo401", "echo500"], ids=["401 echoing", "500 echoing"])
def test_a_server_that_echoes_the_key_does_not_make_the_node_leak_it(
    node, rig, server, mode
) -> None:
    server.mode = mode
    try:
        rig.settle()
        response = rig.query(wait=30)
        assert not response.success
        assert f"HTTP {mode[4:]}" in response.message, response.message
        rig.settle(0.6)  # a few diagnostics with the backend error
    finally:
        server.mode = "ok"
    _assert_key_nowhere(rig, node, response.message)
    response = rig.query(wait=30)
    assert response.success, response.message


# ------------------------------------------------------------------ no eval

# Modules that handle model output, server replies or topic data.
DATA_MODULES = [
    "parsing.py",
    "engine.py",
    "ros_conversions.py",
    "node.py",
    "prompt.py",
    "lifting.py",
    "images.py",
    "backends/openai_backend.py",
    "backends/transformers_backend.py",
    "answer_json.py",
    "answering.py",
    "ask.py",
    "tool_files.py",
    "tool_pipeline.py",
    "replay.py",
    "evaluate.py",
]
# Built-ins called by bare name (a torch model's ``.eval()`` method is harmless).
FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}


@pytest.mark.parametrize("module", DATA_MODULES)
def test_no_module_that_sees_model_output_evaluates_it(module: str) -> None:
    path = PACKAGE / module
    if not path.exists():
        pytest.fail(f"{module} is gone: update DATA_MODULES")
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            if isinstance(func, ast.Name) and name in FORBIDDEN_BUILTINS:
                problems.append(f"line {node.lineno}: {name}()")
            if owner in ("os", "builtins") and name in ("system", "popen", "eval", "exec"):
                problems.append(f"line {node.lineno}: {owner}.{name}()")
            if owner == "pickle" or (owner == "yaml" and name in ("load", "unsafe_load")):
                problems.append(f"line {node.lineno}: {owner}.{name}()")
            if any(k.arg == "shell" for k in node.keywords):
                problems.append(f"line {node.lineno}: shell=...")
    assert not problems, f"{module} evaluates or shells out: {problems}"


# --------------------------------------------------------------- bounded text


def _string_fields(msg: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string in a ROS message, recursively, with its field path."""
    found: list[tuple[str, str]] = []
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        where = f"{path}.{name}" if path else name
        items = value if isinstance(value, list | tuple) else [value]
        for index, item in enumerate(items):
            label = f"{where}[{index}]" if isinstance(value, list | tuple) else where
            if isinstance(item, str):
                found.append((label, item))
            elif hasattr(item, "get_fields_and_field_types"):
                found.extend(_string_fields(item, label))
    return found


def _enormous_output() -> str:
    big = "W" * 300_000
    objects = ", ".join(
        f'{{"id": "{big if i < 3 else "o"}.{i}", "bbox": [1, 1, 20, 20]}}' for i in range(300)
    )
    relations = ", ".join(
        f'{{"subject": "o.{i}", "predicate": "{big}", "object": "o.{i + 1}"}}' for i in range(300)
    )
    return (
        f"<observe>{big}</observe><scene>{{'objects': [{objects}], "
        f"'relationships': [{relations}]}}</scene><think>{big * 3}</think>"
        f"<answer>{big} (A) {big}</answer>" + "<junk>" * 50_000
    )


def test_every_text_field_published_is_bounded_whatever_the_model_wrote() -> None:
    text = _enormous_output()
    options = ["x" * 1024] * 26
    parsed = parse_output(text, image_size=(640, 480), options=options)
    result = EngineResult(
        request_id="r" * 10_000,
        result=parsed,
        raw_text=text,
        model_image_size=(640, 480),
        stated_size=(640, 480),
        queue_wait_s=0.0,
        inference_s=0.0,
        total_s=0.0,
        prompt_tokens=0,
        output_tokens=0,
        model_name="M" * 100_000,
    )
    lifted = [Lifted3D(None, None, 0, 0.0, "R" * 100_000) for _ in parsed.objects]
    graph = scene_graph_message(Header(), result, lifted, "N" * 100_000)
    answer = answer_message(
        Header(), "id", "Q" * 100_000, options, result, graph, ["E" * 100_000] * 100
    )
    fields = _string_fields(answer)
    assert fields, "walked no fields"
    too_long = [(name, len(value)) for name, value in fields if len(value) > 32768]
    assert not too_long, too_long
    assert len(answer.warnings) <= 64
    assert len(graph.objects) <= 100 and len(graph.relations) <= 100
    # The whole message stays small enough for any DDS transport.
    assert sum(len(value) for _, value in fields) < 1_500_000
    assert np.isfinite([o.x_min for o in graph.objects]).all()
