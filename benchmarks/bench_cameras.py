"""Benchmark one node serving two cameras (issue 23).

Not a test: run ``.venv-jazzy/bin/python benchmarks/bench_cameras.py`` and read the figures.

Part 1 (idle CPU): camera processes (``test/fixtures/camera_process.py``) publish 640x480 rgb8 +
16UC1 + camera_info at 30 Hz; the node (nothing asked) runs with one camera, then with two
(``cameras: [front, wrist]``), each for ``--duration`` seconds, its CPU read from /proc.
Goal: two cameras cost at most 2.2x one.

Part 2 (answer time): the in-process tiny transformers model (made here, offline), writing
``--max-new-tokens`` tokens per answer (256 by default: the 7B model's answers are 300-500); the
node with both cameras answers ``~/query`` about one camera and ``~/query_all`` about both,
alternately, ``--calls`` times each: median wall time of the call, and of the model call in
it. Goal: ``~/query_all`` at most 1.3x one camera's answer (both cameras in one batch).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from spatialthinker_ros.ros.fastdds import set_default_profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spatialthinker_ros" / "test" / "fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 180)))
set_default_profile(os.environ, ROOT / "spatialthinker_ros" / "config" / "fastdds_large_images.xml")

from bench_node import cpu_seconds  # noqa: E402

NODE = "/spatialthinker"
PREFIXES = {"front": "/bench_front", "wrist": "/bench_wrist"}
QUESTION = "Is the red box in front of or behind the green box?"


def _remaps(cameras: list[str]) -> dict[str, str]:
    topics = ("image", "depth", "camera_info")
    if not cameras:
        return {topic: f"{PREFIXES['front']}/{topic}" for topic in topics}
    return {f"{name}/{topic}": f"{PREFIXES[name]}/{topic}" for name in cameras for topic in topics}


class Planner:
    """A client node on its own executor, spun by the caller while a call is in flight."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from spatialthinker_msgs.srv import Query, QueryAll

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_cameras_planner", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.query = self.node.create_client(Query, f"{NODE}/query")
        self.query_all = self.node.create_client(QueryAll, f"{NODE}/query_all")
        self.types = (Query.Request, QueryAll.Request)

    def call(self, client: Any, request: Any, timeout: float = 120.0) -> tuple[float, Any]:
        start = time.perf_counter()
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        return time.perf_counter() - start, future.result() if future.done() else None

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def idle_cpu(duration: float, rate: float) -> None:
    from node_harness import NodeProcess

    shares = {}
    for label, cameras in (("one camera", []), ("two cameras", ["front", "wrist"])):
        params: dict[str, Any] = {"backend": "openai", "model": "bench"}
        params["openai.base_url"] = "http://127.0.0.1:9/v1"  # never asked
        if cameras:
            params["cameras"] = cameras
        node = NodeProcess(params, remaps=_remaps(cameras))
        try:
            time.sleep(8.0)  # start, discovery, warm-up
            start, t0 = cpu_seconds(node.process.pid), time.monotonic()
            time.sleep(duration)
            shares[label] = (cpu_seconds(node.process.pid) - start) / (time.monotonic() - t0)
        finally:
            node.stop()
    one, two = shares["one camera"], shares["two cameras"]
    print(f"Idle node CPU, {rate:g} Hz 640x480 RGB-D per camera, {duration:.0f} s each:")
    print(f"  one camera {100 * one:.2f} % of a core, two cameras {100 * two:.2f} %")
    print(f"  ratio {two / one:.2f}x (goal <= 2.2x)")


def answer_time(calls: int, max_new_tokens: int) -> None:
    from node_harness import NodeProcess

    from spatialthinker_ros.core.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "tiny"
        build_tiny_model(model)
        params = {
            "backend": "transformers",
            "model": str(model),
            "max_new_tokens": max_new_tokens,
            "cameras": ["front", "wrist"],
        }
        node = NodeProcess(params, remaps=_remaps(["front", "wrist"]))
        planner = Planner()
        try:
            assert planner.query_all.wait_for_service(timeout_sec=120.0), "node never came up"
            query_type, all_type = planner.types
            one = query_type(question=QUESTION, options=["in front", "behind"], camera="front")
            both = all_type(question=QUESTION, options=["in front", "behind"])
            ready, deadline = 0, time.monotonic() + 120.0
            while ready < 3 and time.monotonic() < deadline:  # frames in; caches warm
                _took, reply = planner.call(planner.query_all, both)
                answered = reply is not None and reply.answers
                ready = ready + 1 if answered and all(a.success for a in reply.answers) else 0
                time.sleep(0.2)
            assert ready == 3, f"the node did not answer both cameras: {reply}"
            times: dict[str, list[float]] = {"one": [], "all": []}
            model: dict[str, list[float]] = {"one": [], "all": []}
            batches = []
            for _ in range(calls):
                took, response = planner.call(planner.query, one)
                if response is not None and response.success:
                    times["one"].append(took)
                    model["one"].append(response.answer.inference_s)
                took, reply = planner.call(planner.query_all, both)
                if reply is not None and reply.answers and all(a.success for a in reply.answers):
                    times["all"].append(took)
                    model["all"].append(max(a.answer.inference_s for a in reply.answers))
                    batches.append(reply.answers[0].answer.batch_size)
        finally:
            planner.close()
            node.stop()
    one_median, all_median = statistics.median(times["one"]), statistics.median(times["all"])
    print(
        f"Answer time, tiny transformers model on the CPU, {max_new_tokens} tokens per answer,"
        f" {calls} calls each:"
    )
    print(f"  ~/query (one camera) median {1000 * one_median:.0f} ms ({len(times['one'])} ok)")
    print(
        f"  ~/query_all (two cameras) median {1000 * all_median:.0f} ms ({len(times['all'])} ok,"
        f" batch size {statistics.mode(batches) if batches else 'n/a'})"
    )
    print(f"  ratio {all_median / one_median:.2f}x (goal <= 1.3x)")
    one_model, all_model = statistics.median(model["one"]), statistics.median(model["all"])
    print(
        f"  of which the model call: {1000 * one_model:.0f} ms alone,"
        f" {1000 * all_model:.0f} ms for the batch of two ({all_model / one_model:.2f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="CPU window, seconds")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--calls", type=int, default=20, help="calls of each kind (part 2)")
    parser.add_argument("--parts", default="12", help="which parts to run: 1, 2 or 12")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="tokens the tiny model writes per answer (it writes noise until this many; the 7B"
        " model's answers are 300-500 tokens)",
    )
    args = parser.parse_args()
    from script_process import ScriptProcess

    processes = [
        ScriptProcess("camera_process.py", PREFIXES["front"], str(args.rate)),
        ScriptProcess("camera_process.py", PREFIXES["wrist"], str(args.rate)),
    ]
    try:
        if "1" in args.parts:
            idle_cpu(args.duration, args.rate)
        if "2" in args.parts:
            answer_time(args.calls, args.max_new_tokens)
    finally:
        for process in processes:
            process.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
