"""Security: the API key's path, model output as data only, every published text bounded, CLI
output confined to its folder.

The key (through the running node, openai backend against the scripted server): it reaches the
server only as ``Authorization: Bearer ...``; it is not in the node's command line, params file
or any parameter; it is nowhere in the log, /diagnostics or anything published, also when a
server or proxy echoes it in an error body (real ones do: "Incorrect API key provided: sk-...")
or in a reply without choices. No parameter can hold a secret. Model output is only data: a
static check that nothing that touches model output evaluates it, and the parser on code.
Every text field the node publishes has a length bound. `cli/files.output_path` keeps CLI
outputs inside the output folder.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from hypothesis import given, settings
from hypothesis import strategies as st
from node_harness import NodeProcess, Rig, openai_params, running_node, still_serving
from rcl_interfaces.srv import GetParameters, ListParameters
from scripted_openai_server import RawReply, completion_body
from std_msgs.msg import Header

from spatialthinker_ros.answering.parameters import PARAMETERS
from spatialthinker_ros.answering.pipeline import SceneAnswer
from spatialthinker_ros.cli.files import output_path
from spatialthinker_ros.core.engine import EngineResult
from spatialthinker_ros.core.lifting import Lifted3D
from spatialthinker_ros.core.parsing import parse_output
from spatialthinker_ros.core.relation_check import verify_relations
from spatialthinker_ros.ros.ros_conversions import answer_message

KEY_ENV = "SPATIALTHINKER_SECURITY_TEST_KEY"
KEY = "sk-sec-0b5e1a7d93c24f6e-do-not-leak"
PACKAGE = Path(__file__).resolve().parents[2] / "spatialthinker_ros"


@pytest.fixture(scope="module")
def node(server, rig):
    params = openai_params(
        server.base_url,
        {"model": "security", "openai.api_key_env": KEY_ENV, "openai.max_retries": 1},
    )
    with running_node(rig, params, env={KEY_ENV: KEY}) as process:
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
        assert KEY not in answer.raw_output and KEY not in answer.model
        assert all(KEY not in w for w in answer.warnings)


# ------------------------------------------------------------------ the API key's path


def test_no_parameter_can_hold_a_secret() -> None:
    # The only key-related setting names an environment variable; no parameter takes a key.
    names = [spec.name for spec in PARAMETERS]
    assert [n for n in names if "key" in n or "token" in n.replace("tokens", "")] == [
        "openai.api_key_env"
    ]
    assert all("secret" not in n and "password" not in n for n in names)


def test_the_key_reaches_the_server_only_in_the_authorization_header(node, rig, server) -> None:
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    assert server.headers[-1]["authorization"] == f"Bearer {KEY}"
    # Not on the command line, not in the params file, not in any parameter.
    cmdline = Path(f"/proc/{node.process.pid}/cmdline").read_bytes().decode(errors="replace")
    assert KEY not in cmdline and KEY not in node.params_file.read_text()
    with rig.side_node("parameter_reader") as side:
        listed = side.create_client(ListParameters, "/spatialthinker/list_parameters")
        getter = side.create_client(GetParameters, "/spatialthinker/get_parameters")
        assert listed.wait_for_service(timeout_sec=10) and getter.wait_for_service(timeout_sec=10)
        names = rig.wait_future(listed.call_async(ListParameters.Request()), 10).result.names
        assert "openai.api_key_env" in names
        values = rig.wait_future(getter.call_async(GetParameters.Request(names=names)), 10)
        assert all(KEY not in str(value) for value in values.values)
        env_name = values.values[list(names).index("openai.api_key_env")].string_value
        assert env_name == KEY_ENV
    rig.settle(0.5)  # a few more diagnostics messages
    # Not in the log, /diagnostics or anything published.
    _assert_key_nowhere(rig, node, response.message)


def _echoing(server, status: int):
    """A reply that answers ``status`` with the Authorization header it received inside the
    error message, as some servers and proxies do."""

    def reply(_body: dict[str, Any]) -> RawReply:
        auth = server.headers[-1].get("authorization", "")
        key = auth.removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key}. Header was '{auth}'."
        body = json.dumps({"error": {"message": message, "type": "auth"}}).encode()
        return RawReply(body=body, status=status)

    return reply


@pytest.mark.parametrize("status", [401, 500], ids=["401 echoing", "500 echoing"])
def test_a_server_that_echoes_the_key_does_not_make_the_node_leak_it(
    node, rig, server, status
) -> None:
    healthy = server.default_reply
    server.default_reply = _echoing(server, status)  # every try, the retry too
    try:
        rig.settle()
        response = rig.query(wait=30)
        assert not response.success
        assert f"HTTP {status}" in response.message, response.message
        rig.settle(0.6)  # a few diagnostics with the backend error
    finally:
        server.default_reply = healthy
    _assert_key_nowhere(rig, node, response.message)
    response = rig.query(wait=30)
    assert response.success, response.message


def test_a_key_echoed_in_a_reply_without_choices_leaks_nowhere(node, rig, server) -> None:
    rig.settle()
    server.add_replies(RawReply(body=completion_body("x", id=KEY, choices=[])))
    seen = len(rig.diagnostics)
    response = rig.query(wait=30)
    assert not response.success
    assert "no choices" in response.message and "[redacted]" in response.message
    assert KEY not in response.message
    status = rig.engine_status(lambda s: s.level == DiagnosticStatus.ERROR, after=seen, wait=20)
    texts = [status.message] + [f"{v.key}={v.value}" for v in status.values]
    assert any("[redacted]" in text for text in texts)
    assert not any(KEY in text for text in texts)
    assert KEY not in node.log()
    still_serving(rig, node)


# ------------------------------------------------------------------ no eval

# Modules that handle model output, server replies or topic data.
DATA_MODULES = [
    "core/parsing/__init__.py",
    "core/parsing/output.py",
    "core/parsing/sections.py",
    "core/parsing/lenient_json.py",
    "core/parsing/scene.py",
    "core/parsing/answer_choice.py",
    "core/parsing/results.py",
    "core/parsing/notes.py",
    "core/engine.py",
    "ros/ros_conversions.py",
    "ros/node.py",
    "core/prompt.py",
    "core/lifting.py",
    "core/images.py",
    "core/backends/openai_backend.py",
    "core/backends/transformers_backend.py",
    "ros/answer_json.py",
    "answering/pipeline.py",
    "cli/ask.py",
    "cli/files.py",
    "cli/offline_pipeline.py",
    "cli/replay.py",
    "cli/evaluate.py",
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
    lifted = tuple(Lifted3D(None, None, 0, 0.0, "R" * 100_000) for _ in parsed.objects)
    scene = SceneAnswer(
        request_id="i" * 100_000,
        question="Q" * 100_000,
        options=tuple(options),
        engine=result,
        lifted=lifted,
        no_3d_reason="N" * 100_000,
        relations=verify_relations(parsed, lifted),
        warnings=(*parsed.warnings, *["E" * 100_000] * 100),
    )
    answer = answer_message(Header(), scene)
    graph = answer.scene_graph
    fields = _string_fields(answer)
    assert fields, "walked no fields"
    too_long = [(name, len(value)) for name, value in fields if len(value) > 32768]
    assert not too_long, too_long
    assert len(answer.warnings) <= 64
    assert len(graph.objects) <= 100 and len(graph.relations) <= 100
    # The whole message stays small enough for any DDS transport.
    assert sum(len(value) for _, value in fields) < 1_500_000
    assert np.isfinite([o.x_min for o in graph.objects]).all()


# ------------------------------------------------------------------ model output is data


def test_model_output_is_only_ever_data() -> None:
    # Python and shell in the scene are parsed as text (or rejected), never executed.
    marker = Path("/tmp/spatialthinker_should_not_exist")
    text = (
        "<scene>{'objects': [__import__('os').system('touch /tmp/spatialthinker_should_not_exist')]"
        ", 'relationships': []}</scene><answer> (A) x </answer>"
    )
    result = parse_output(text, options=["x", "y"])
    assert not marker.exists()
    assert result.objects == []
    assert result.warnings


# --------------------------------------------------------------- CLI output folder


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_cli_output_files_never_leave_the_output_folder(tmp_path_factory, name: str) -> None:
    root = tmp_path_factory.mktemp("out")
    path = output_path(root, name)
    assert path.parent == Path(root).resolve()
    assert not path.name.startswith(".")


def test_known_escape_attempts_stay_inside(tmp_path: Path) -> None:
    for name in ("../../etc/passwd", "/etc/passwd", "..", "a/../../b", "~/.ssh/id_rsa", "\x00x"):
        path = output_path(tmp_path / "out", name)
        assert path.parent == (tmp_path / "out").resolve(), name
