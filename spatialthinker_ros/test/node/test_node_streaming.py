"""Streaming end to end: the node (a real subprocess, openai backend) reads the scripted
server's SSE stream; the scene graph with 3D reaches an action client's feedback and a
~/scene_graph subscriber before the result. Order is asserted, never time: where a test shows
the scene graph comes before the reasoning is written, the server holds the stream after
``</scene>`` until the client has seen the scene graph (``StreamReply.hold``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from node_harness import DEMO_SCENE, SCRIPTED_OBJECTS, Rig, openai_params, running_node
from scripted_openai_server import ScriptedOpenAIServer, StreamReply
from streaming_replies import realistic_reply

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_ros.core.stream_reader import STAGES

REPLY = realistic_reply(DEMO_SCENE)


@pytest.fixture(scope="module")
def server():
    with ScriptedOpenAIServer(default_reply=REPLY) as scripted:
        yield scripted


@pytest.fixture(scope="module")
def node(server, rig):
    with running_node(
        rig,
        openai_params(
            server.base_url,
            {"model": "spatialthinker-test", "max_batch_size": 1, "request_timeout": 30.0},
        ),
    ) as process:
        yield process


@pytest.fixture(autouse=True)
def paced_stream(server):
    """A stream paced like a model writing (~70 chunks, a little apart)."""
    server.stream_chunk_chars, server.stream_delay_s = 24, 0.02
    yield


class GoalLog:
    """What an action client and a ~/scene_graph subscriber saw, in the order it arrived."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []
        self.graphs_before = len(rig.graphs)
        self.result = threading.Event()
        # Set once the scene graph arrived on the topic and in the feedback.
        self.scene_seen = threading.Event()
        self._feedback_graph = False
        self._graph_seen = False
        self._stop = threading.Event()
        # ~/scene_graph arrivals, noted in the same log as the feedback (the rig keeps them).
        self._watch = threading.Thread(target=self._watch_graphs, daemon=True)
        self._watch.start()

    def _watch_graphs(self) -> None:
        while not self._stop.is_set():
            with self.rig._lock:
                graphs = self.rig.graphs[self.graphs_before :]
            if graphs and not self._graph_seen:
                with self.lock:
                    self.events.append(("scene_graph", graphs[0]))
                self._graph_seen = True
            if self._graph_seen and self._feedback_graph:
                self.scene_seen.set()
            time.sleep(0.002)

    def feedback(self, message: Any) -> None:
        with self.lock:
            self.events.append(("feedback", message.feedback))
        if message.feedback.scene_graph.objects:
            self._feedback_graph = True

    def held_reply(self, chunk_chars: int = 24) -> Any:
        """A realistic streamed reply that waits after </scene> until ``scene_seen``."""

        def reply(body: dict[str, Any]) -> StreamReply:
            text = REPLY(body)
            at = StreamReply.chunk_after(text, "</scene>", chunk_chars)
            return StreamReply(text, chunk_chars, hold=self.scene_seen, hold_at=at)

        return reply

    def done(self, future: Any) -> None:
        with self.lock:
            self.events.append(("result", future.result().result))
        self.result.set()

    def close(self) -> None:
        self._stop.set()
        self._watch.join(2)

    def kinds(self) -> list[str]:
        with self.lock:
            return [kind for kind, _ in self.events]


def _send(rig: Rig, log: GoalLog, question: str = "Which is nearer?") -> Any:
    assert rig.action_client.wait_for_server(timeout_sec=10)
    goal = QueryAction.Goal(question=question, options=["red box", "green box"])
    send = rig.action_client.send_goal_async(goal, feedback_callback=log.feedback)
    handle = rig.wait_future(send, 20)
    assert handle.accepted
    return handle


def _centres(graph: Any) -> list[tuple[str, bool, np.ndarray]]:
    return [(o.id, o.has_3d, np.array([o.center.x, o.center.y, o.center.z])) for o in graph.objects]


def test_scene_graph_with_3d_reaches_feedback_and_topic_before_the_result(
    node, rig, server
) -> None:
    rig.settle()
    log = GoalLog(rig)
    server.add_replies(log.held_reply())
    try:
        handle = _send(rig, log)
        handle.get_result_async().add_done_callback(log.done)
        assert log.result.wait(60), "no result"
        rig.latest(rig.answers, lambda a: a.question == "Which is nearer?")
        time.sleep(0.3)  # the final answer's scene graph follows the result on the topic
    finally:
        log.close()
    kinds = log.kinds()
    result = next(value for kind, value in log.events if kind == "result")
    assert result.success, result.message
    feedback = [value for kind, value in log.events if kind == "feedback"]

    # Stages in order; the text grows and is bounded.
    stages = [f.stage for f in feedback]
    assert stages == sorted(stages, key=STAGES.index), stages
    assert set(stages) & {"scene", "thinking"}
    assert all(len(f.text) <= 4096 for f in feedback)
    assert all(f.state in ("queued", "running") for f in feedback)

    # The scene graph with 3D in the feedback, before the result, while the model was thinking.
    with_graph = [i for i, f in enumerate(feedback) if f.scene_graph.objects]
    assert with_graph, "no feedback carried the scene graph"
    first = feedback[with_graph[0]]
    assert first.stage in ("scene", "thinking")
    assert "</think>" not in first.text and "<answer>" not in first.text
    assert kinds.index("result") > kinds.index("feedback") + with_graph[0]
    answer = result.answer
    early = _centres(first.scene_graph)
    final = _centres(answer.scene_graph)
    assert [e[0] for e in early] == list(SCRIPTED_OBJECTS) == [f[0] for f in final]
    for (_, has_3d, centre), (_, _, final_centre) in zip(early, final, strict=True):
        assert has_3d
        np.testing.assert_allclose(centre, final_centre, atol=1e-9)
    assert first.scene_graph.header.frame_id == rig.frame_id

    # ~/scene_graph: the same graph, before the result, before the answer was written.
    assert "scene_graph" in kinds and kinds.index("scene_graph") < kinds.index("result")
    topic_graph = log.events[kinds.index("scene_graph")][1]
    assert [c[0] for c in _centres(topic_graph)] == list(SCRIPTED_OBJECTS)
    before = [f for k, f in log.events[: kinds.index("scene_graph")] if k == "feedback"]
    assert all(f.stage != "answering" for f in before)
    # The answer's graph follows unchanged on the topic.
    with rig._lock:
        graphs = rig.graphs[log.graphs_before :]
    assert len(graphs) == 2
    assert [c[0] for c in _centres(graphs[1])] == [c[0] for c in _centres(graphs[0])]

    # scene_s: request start to the scene graph published, well before the whole answer.
    assert 0 < answer.scene_s < answer.total_s


def test_diagnostics_report_time_to_scene_graph(node, rig) -> None:
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    diagnostics = rig.latest(
        rig.diagnostics,
        lambda d: any(
            kv.key == "scene_p50_s" and kv.value != "nan"
            for s in d.status
            if "engine" in s.name
            for kv in s.values
        ),
        wait=5,
    )
    engine = next(s for s in diagnostics.status if "engine" in s.name)
    values = {kv.key: kv.value for kv in engine.values}
    assert float(values["scene_p50_s"]) < float(values["latency_p50_s"])
    assert "scene_p99_s" in values


def test_cancel_while_thinking_ends_with_a_reason_and_closes_the_stream(node, rig, server) -> None:
    rig.settle()
    closed_before = server.streams_closed
    server.stream_delay_s = 0.05  # ~3.5 s of stream: time to cancel while thinking
    log = GoalLog(rig)
    thinking = threading.Event()

    def reply(body: dict[str, Any]) -> StreamReply:
        # Held after "<think>" until the client saw "thinking".
        text = REPLY(body)
        return StreamReply(
            text, 24, hold=thinking, hold_at=StreamReply.chunk_after(text, "<think>", 24)
        )

    server.add_replies(reply)
    try:
        handle = _send(rig, log, "Is the pillar behind the boxes?")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with log.lock:
                if any(k == "feedback" and v.stage == "thinking" for k, v in log.events):
                    thinking.set()
                    break
            time.sleep(0.01)
        else:
            raise AssertionError(f"never thinking: {log.kinds()}")
        rig.wait_future(handle.cancel_goal_async(), 20)
        outcome = rig.wait_future(handle.get_result_async(), 30)
    finally:
        log.close()
    assert outcome.result.success is False
    assert "cancel" in outcome.result.message
    deadline = time.monotonic() + 10
    while server.streams_closed == closed_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.streams_closed == closed_before + 1, "the server never saw the stream closed"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (StreamReply(REPLY({"messages": []}), cut_after=10), "stream cut off after"),
        (StreamReply("<answer> (A) x </answer>", chunk_chars=3, malformed_after=2), "bad response"),
        (StreamReply("<answer> (A) x </answer>", finish=False), "ended before the answer"),
    ],
    ids=["cut-mid-way", "malformed-chunk", "no-finish-reason"],
)
def test_bad_streams_fail_with_a_reason(node, rig, server, reply, reason) -> None:
    rig.settle()
    server.add_replies(reply)
    response = rig.query()
    assert not response.success
    assert reason in response.message, response.message
    # The node keeps serving.
    response = rig.query()
    assert response.success, response.message


def test_server_that_ignores_stream_still_answers(node, rig, server) -> None:
    rig.settle()
    server.honour_stream = False
    try:
        log = GoalLog(rig)
        try:
            handle = _send(rig, log)
            handle.get_result_async().add_done_callback(log.done)
            assert log.result.wait(60)
        finally:
            log.close()
    finally:
        server.honour_stream = True
    result = next(value for kind, value in log.events if kind == "result")
    assert result.success, result.message
    assert [o.id for o in result.answer.scene_graph.objects] == list(SCRIPTED_OBJECTS)
