"""A hostile server's text and a signal mid-request, end to end (issue 26: findings 1, 4, 7, 9).

The node is a real subprocess on the openai backend; the scripted server in this process
answers over HTTP and this process talks to the node over loopback DDS.

* A lone UTF-16 surrogate (JSON ``"\\ud800"``, valid JSON that Python decodes to a ``str`` no
  UTF-8 encoder accepts) in the model's output or in an error's message: publishing it raised
  inside the executor and the node exited with status 1. Streamed (action feedback and result)
  and whole (``stream: false``), the request is answered with U+FFFD in its place, and the node
  answers the next request.
* Server-sent-events lines without data (``retry:``, ``id:``) failed every streamed request.
* Text after a chunk's ``finish_reason`` was appended: a second ``<answer>`` won.
* SIGINT while a request waits on a slow server: its caller is told ``node shutting down``.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import pytest
from node_harness import (
    DEMO_SCENE,
    NodeProcess,
    Rig,
    openai_params,
    running_node,
    scripted_reply,
    still_serving,
)
from scripted_openai_server import RawReply, StreamReply, completion_body

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_msgs.msg import SpatialAnswer
from spatialthinker_msgs.srv import Query
from spatialthinker_ros.ros.node_calls import unsendable

REPLY = scripted_reply(DEMO_SCENE)
# Half of a UTF-16 surrogate pair: the server's json.dumps writes it as the escape "\ud800".
LONE = "\ud800"
FFFD = "\ufffd"
QUESTION = "Is the red box in front of or behind the green box?"


def hostile_text(body: dict[str, Any]) -> str:
    """The scripted model's answer with a lone surrogate in the observation, an object's id
    (and so the relation that names it), the reasoning and the answer."""
    text = REPLY(body)
    return (
        text.replace("A red box", f"A red{LONE} box")
        .replace("red_box.1", f"red_box{LONE}.1")
        .replace("<think> ", f"<think> {LONE} ")
        .replace("(A) in front", f"(A) in front {LONE}")
    )


@pytest.fixture(scope="class")
def node(request: pytest.FixtureRequest, server, rig):
    """The node of the test class, with the ``stream`` parameter the class names."""
    params = {"model": "spatialthinker-test", "max_batch_size": 1, "stream": request.cls.STREAM}
    with running_node(rig, openai_params(server.base_url, params)) as process:
        yield process


@pytest.fixture(autouse=True)
def _plain_server(server):
    """Each test starts with the server streaming at once and answering in time."""
    server.stream_chunk_chars, server.stream_delay_s, server.delay_s = 16, 0.0, 0.0
    yield


def _goal(rig: Rig, feedback: list[Any]) -> QueryAction.Result:
    """Send one action goal, keeping its feedback; its result."""
    assert rig.action_client.wait_for_server(timeout_sec=10)
    goal = QueryAction.Goal(question=QUESTION, options=["in front", "behind"])
    send = rig.action_client.send_goal_async(goal, feedback_callback=feedback.append)
    handle = rig.wait_future(send, 30)
    assert handle.accepted
    return rig.wait_future(handle.get_result_async(), 60).result


def _check_hostile_answer(result: QueryAction.Result) -> None:
    """The answer to :func:`hostile_text`: each lone surrogate is U+FFFD where it was written."""
    assert result.success, result.message
    answer = result.answer
    assert answer.raw_output.count(FFFD) == hostile_text({}).count(LONE)
    assert f"A red{FFFD} box" in answer.observation
    assert answer.reasoning.startswith(FFFD)
    assert answer.answer == f"(A) in front {FFFD}" and answer.choice == "A"
    # The id is read as red_box.1; the warnings that say so quote what the model wrote.
    assert answer.scene_graph.objects[0].id == "red_box.1"
    assert any(f"'red_box{FFFD}.1'" in warning for warning in answer.warnings), answer.warnings


def test_what_rclpy_cannot_serialise_is_caught_before_it_is_sent() -> None:
    """The guard behind the entrance: a response no encoder accepts (a backend that let a lone
    surrogate through) is found before rclpy would raise inside the executor, with a reason
    that can itself be sent and logged."""
    assert unsendable(Query.Response(success=True, answer=SpatialAnswer(answer="(A) x"))) is None
    why = unsendable(Query.Response(success=True, answer=SpatialAnswer(answer=f"(A) {LONE}")))
    assert why is not None and "surrogates not allowed" in why, why
    why.encode("utf-8")


class TestStreamed:
    """``stream: true``: the text reaches the action feedback while it is written."""

    STREAM = True

    def test_lone_surrogates_in_the_stream_are_answered_and_the_node_lives(
        self, node, rig, server
    ) -> None:
        rig.settle()
        # Paced, so that the watch timer sends text feedback while the model writes.
        server.stream_chunk_chars, server.stream_delay_s = 24, 0.02
        server.add_replies(lambda body: StreamReply(hostile_text(body)))
        feedback: list[Any] = []
        result = _goal(rig, feedback)
        _check_hostile_answer(result)
        assert any(FFFD in f.feedback.text for f in feedback), [f.feedback for f in feedback]
        still_serving(rig, node)

    def test_a_lone_surrogate_in_an_error_is_a_reason_and_the_node_lives(
        self, node, rig, server
    ) -> None:
        rig.settle()
        body = json.dumps({"error": {"message": f"model {LONE} unavailable", "type": "x"}})
        server.add_replies(RawReply(body=body.encode(), status=400))
        response = rig.query()
        assert not response.success
        assert f"model {FFFD} unavailable" in response.message, response.message
        # /diagnostics publishes the backend's failing state with that reason.
        status = rig.engine_status(lambda s: f"model {FFFD} unavailable" in s.message)
        assert status.level == status.ERROR
        still_serving(rig, node)

    @pytest.mark.parametrize("between", [b"retry: 3000\n\n", b"id: 41\n\n"], ids=["retry", "id"])
    def test_server_sent_event_lines_without_data_are_skipped(
        self, node, rig, server, between
    ) -> None:
        rig.settle()
        server.add_replies(lambda body: StreamReply(REPLY(body), between=between))
        response = rig.query()
        assert response.success, response.message
        assert response.answer.answer == "(A) in front"

    def test_text_after_the_finish_reason_changes_nothing(self, node, rig, server) -> None:
        rig.settle()
        extra = "<answer> (B) behind </answer>"
        server.add_replies(lambda body: StreamReply(REPLY(body), after_finish=extra))
        response = rig.query()
        assert response.success, response.message
        assert response.answer.choice == "A" and "(B)" not in response.answer.raw_output


class TestWhole:
    """``stream: false``: one whole response, sent as the result."""

    STREAM = False

    def test_lone_surrogates_in_a_whole_answer_are_answered_and_the_node_lives(
        self, node, rig, server
    ) -> None:
        rig.settle()
        server.add_replies(hostile_text)
        result = _goal(rig, [])
        _check_hostile_answer(result)
        assert "stream" not in server.completion_requests[-1]
        still_serving(rig, node)


def test_sigint_fails_calls_in_flight_with_node_shutting_down(server, rig) -> None:
    """A service call and an action goal wait on a server that holds its answers; SIGINT."""
    release = threading.Event()
    held = RawReply(body=completion_body("<answer> (A) in front </answer>"), hold=release)
    server.add_replies(held, held)
    asked = len(server.completion_requests)
    process = NodeProcess(openai_params(server.base_url))
    try:
        rig.wait_for_node(60)
        rig.settle()
        call = rig.query_client.call_async(
            Query.Request(question=QUESTION, options=["in front", "behind"])
        )
        assert rig.action_client.wait_for_server(timeout_sec=10)
        goal = QueryAction.Goal(question=QUESTION, options=["in front", "behind"])
        handle = rig.wait_future(rig.action_client.send_goal_async(goal), 30)
        assert handle.accepted
        result = handle.get_result_async()
        waited = threading.Event()
        for _ in range(600):  # both requests reached the server (at most 60 s)
            if len(server.completion_requests) >= asked + 2:
                break
            waited.wait(0.1)
        assert len(server.completion_requests) >= asked + 2, process.log()[-3000:]

        process.process.send_signal(signal.SIGINT)
        response = rig.wait_future(call, 30)
        outcome = rig.wait_future(result, 30).result
        assert process.process.wait(30) == 0, process.log()[-3000:]
    finally:
        release.set()
        process.stop()
    assert (response.success, response.message) == (False, "node shutting down")
    assert (outcome.success, outcome.message) == (False, "node shutting down")
