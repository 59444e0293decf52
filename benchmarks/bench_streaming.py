"""Benchmark streaming: time to the scene graph vs time to the answer, and cancel to close.

spatialthinker_node (a subprocess, openai backend) reads the scripted server's SSE stream of a
realistic answer (``</scene>`` at ~45 % of the text) paced like a model writing it in about
``--answer-s`` seconds (an H100 writes SpatialThinker-7B's ~400 tokens in ~2.2 s). For each
action goal it prints, against the time from sending the goal to its result:

* the time to the first feedback carrying the scene graph (with 3D), and
* the time to the first ~/scene_graph message,

as ratios (goal: <= 0.6). Then it cancels goals while the model is ``thinking`` and prints the
time from the cancel request to the server seeing the stream's connection closed, through the
node (action cancel) and through the pipeline alone (``AnswerHandle.cancel``). Last, what the
openai backend spends per streamed chunk (one token each) of a 20,000-token stream.

Run from the repository root: ``.venv/bin/python benchmarks/bench_streaming.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from spatialthinker_ros.ros.fastdds import set_default_profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spatialthinker_ros" / "test" / "fixtures"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 180)))
set_default_profile(os.environ, ROOT / "spatialthinker_ros" / "config" / "fastdds_large_images.xml")

from node_harness import DEMO_SCENE, Rig, running_node  # noqa: E402
from scripted_openai_server import ScriptedOpenAIServer  # noqa: E402
from streaming_replies import realistic_reply, scene_fraction  # noqa: E402

from spatialthinker_msgs.action import Query as QueryAction  # noqa: E402
from spatialthinker_ros.answering.parameters import PARAMETERS  # noqa: E402
from spatialthinker_ros.answering.pipeline import AnsweringPipeline, Frames  # noqa: E402

CHUNK_CHARS = 16


def _goal_times(rig: Rig, question: str) -> tuple[float, float, float]:
    """Seconds from sending a goal to: scene graph in feedback, on ~/scene_graph, result."""
    times: dict[str, float] = {}
    done = threading.Event()
    graphs_before = len(rig.graphs)

    def on_feedback(message: Any) -> None:
        if message.feedback.scene_graph.objects:
            times.setdefault("feedback", time.monotonic())

    goal = QueryAction.Goal(question=question, options=["red box", "green box"])
    start = time.monotonic()
    send = rig.action_client.send_goal_async(goal, feedback_callback=on_feedback)
    handle = rig.wait_future(send, 20)
    result_future = handle.get_result_async()
    result_future.add_done_callback(
        lambda _f: (times.setdefault("result", time.monotonic()), done.set())
    )
    while not done.is_set():
        if "topic" not in times and len(rig.graphs) > graphs_before:
            times["topic"] = time.monotonic()
        time.sleep(0.001)
    result = result_future.result().result
    assert result.success, result.message
    return times["feedback"] - start, times["topic"] - start, times["result"] - start


def _cancel_through_node(rig: Rig, server: ScriptedOpenAIServer) -> float:
    thinking = threading.Event()

    def on_feedback(message: Any) -> None:
        if message.feedback.stage == "thinking":
            thinking.set()

    closed = server.streams_closed
    goal = QueryAction.Goal(question="Is the pillar behind the boxes?", options=[])
    handle = rig.wait_future(
        rig.action_client.send_goal_async(goal, feedback_callback=on_feedback), 20
    )
    assert thinking.wait(30), "never thinking"
    cancelled = time.monotonic()
    rig.wait_future(handle.cancel_goal_async(), 20)
    while server.streams_closed == closed:
        time.sleep(0.001)
    seconds = server.stream_closed_at[-1] - cancelled
    rig.wait_future(handle.get_result_async(), 30)
    return seconds


def _cancel_through_pipeline(server: ScriptedOpenAIServer, runs: int) -> list[float]:
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update({"backend": "openai", "model": "bench", "openai.base_url": server.base_url})
    pipeline = AnsweringPipeline(values, {"check_on_load": False})
    pipeline.start()
    frames = Frames(DEMO_SCENE.rgb, DEMO_SCENE.depth_m, DEMO_SCENE.intrinsics)
    seconds = []
    try:
        for index in range(runs):
            thinking = threading.Event()
            closed = server.streams_closed
            handle = pipeline.submit(
                frames, "Which is nearer?", [], f"bench-{index}",
                on_progress=lambda p, t=thinking: p.stage == "thinking" and t.set(),
            )  # fmt: skip
            assert thinking.wait(30)
            cancelled = time.monotonic()
            handle.cancel()
            while server.streams_closed == closed:
                time.sleep(0.001)
            seconds.append(server.stream_closed_at[-1] - cancelled)
    finally:
        pipeline.shutdown()
    return seconds


def _client_cost_per_chunk(chunks: int = 20_000) -> float:
    """Seconds the openai backend spends per streamed chunk (one 4-character token each, sent
    with no delay): reading the SSE event, the text callback, the size bound."""
    import numpy as np

    from spatialthinker_ros.core.backends import Batch, GenerationSettings
    from spatialthinker_ros.core.backends.openai_backend import OpenAIBackend

    with ScriptedOpenAIServer(default_reply="<answer> (A) </answer>" + "tok " * chunks) as server:
        server.stream_chunk_chars = 4
        backend = OpenAIBackend(
            model="bench", base_url=server.base_url, max_retries=0, check_on_load=False
        )
        backend.load()
        try:
            settings = GenerationSettings(max_new_tokens=1024, stream=True)
            image = np.zeros((56, 56, 3), np.uint8)
            pieces: list[str] = []
            started = time.perf_counter()
            [(_, output)] = list(
                backend.answers(Batch([image], ["q"], settings, on_text=[pieces.append]))
            )
            elapsed = time.perf_counter() - started
        finally:
            backend.unload()
    assert not hasattr(output, "reason"), output
    return elapsed / len(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="goals measured")
    parser.add_argument("--answer-s", type=float, default=2.2, help="seconds to stream an answer")
    args = parser.parse_args()

    reply = realistic_reply(DEMO_SCENE)
    sample = reply({"messages": []})
    chunks = -(-len(sample) // CHUNK_CHARS)
    with ScriptedOpenAIServer(default_reply=reply) as server:
        server.stream_chunk_chars = CHUNK_CHARS
        server.stream_delay_s = args.answer_s / chunks
        print(
            f"answer: {len(sample)} characters, </scene> at {scene_fraction(sample):.0%},"
            f" {chunks} chunks {server.stream_delay_s * 1000:.0f} ms apart"
        )
        rig = Rig(DEMO_SCENE)
        try:
            params = {
                "backend": "openai",
                "model": "bench",
                "openai.base_url": server.base_url,
                "max_batch_size": 1,
                "request_timeout": 30.0,
                "max_frame_age": 3.0,
            }
            with running_node(rig, params):
                rig.settle(1.0)
                assert rig.action_client.wait_for_server(timeout_sec=10)
                _goal_times(rig, "warm-up?")
                rows = [_goal_times(rig, f"Which is nearer ({i})?") for i in range(args.runs)]
                feedback = [f / r for f, _, r in rows]
                topic = [t / r for _, t, r in rows]
                answer = statistics.median(r for _, _, r in rows)
                print(f"time to answer (median of {args.runs}): {answer:.3f} s")
                ratio = statistics.median(feedback)
                print(
                    f"time to scene graph / time to answer: feedback {ratio:.2f}"
                    f" (max {max(feedback):.2f}), ~/scene_graph {statistics.median(topic):.2f}"
                    f" (max {max(topic):.2f})  [goal <= 0.6]"
                )
                node_cancel = [
                    _cancel_through_node(rig, server) for _ in range(max(3, args.runs // 2))
                ]
        finally:
            rig.close()
        pipe_cancel = _cancel_through_pipeline(server, max(3, args.runs // 2))
    node_ms = [s * 1000 for s in node_cancel]
    print(
        f"cancel -> server sees the connection closed: through the node (action cancel)"
        f" median {statistics.median(node_ms):.0f} ms (max {max(node_ms):.0f}),"
        f" through the pipeline median {statistics.median(pipe_cancel) * 1000:.0f} ms"
        f" (max {max(pipe_cancel) * 1000:.0f})"
    )
    per_chunk = _client_cost_per_chunk()
    print(f"openai backend, per streamed chunk (a token): {per_chunk * 1e6:.0f} us")


if __name__ == "__main__":
    main()
