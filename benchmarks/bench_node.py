"""Benchmark spatialthinker_node: idle CPU under a 30 Hz camera, and per-request overhead by
depth timing.

Part 1 (idle CPU): a camera process (spatialthinker_ros/test/fixtures/camera_process.py) publishes
640x480 rgb8 + 16UC1 depth + camera_info at 30 Hz. Beside spatialthinker_node (no question
pending) runs a plain rclpy node that subscribes to the same topics and converts every frame to
numpy, the way a naive perception node does. Both CPU times are read from /proc over the same
window. Goals: node <= 5% of one core and <= 0.25x the plain node.

Part 2 (overhead, P2): service calls from a client that adds nothing: a plain rclpy node on its
own SingleThreadedExecutor, spun by the calling thread only while its call is in flight (not
the test rig, whose multi-threaded executor and subscriptions cost milliseconds per call). The
node's openai backend points at a scripted loopback server that answers at once. P2 = call round
trip minus the backend's own time (SpatialAnswer.inference_s). Goal: <= 10 ms at 640x480.
Measured per depth timing (depth 0, 15, 30, 60 ms after its colour; depth at 15 Hz) with
``sync_wait`` at its default and at 0: the difference is what waiting for a due depth frame
adds; the pairing function's own cost is timed apart (microseconds).

Run from the repository root: ``.venv-jazzy/bin/python benchmarks/bench_node.py``
(the Makefile's environment, or AMENT_PREFIX_PATH=.venv-jazzy). ``--parts 1`` with
``PYTHONPATH=<another checkout>/spatialthinker_ros`` measures that checkout's node the same way.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spatialthinker_ros.ros.fastdds import set_default_profile

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = ROOT / "spatialthinker_ros" / "test" / "fixtures"
sys.path.insert(0, str(FIXTURES_DIR))

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 180)))
# Jazzy's Fast DDS reads the profile from FASTRTPS_..., Kilted's from FASTDDS_...: name both.
set_default_profile(os.environ, ROOT / "spatialthinker_ros" / "config" / "fastdds_large_images.xml")

PREFIX = "/bench"
NODE = "/spatialthinker"
REMAPS = {
    "image": f"{PREFIX}/image",
    "depth": f"{PREFIX}/depth",
    "camera_info": f"{PREFIX}/camera_info",
}
# Part 2's depth timings: (label, camera settings).
TIMINGS = (
    ("depth 0 ms after colour", {"lag_ms": 0.0, "depth_every": 1}),
    ("depth 15 ms after colour", {"lag_ms": 15.0, "depth_every": 1}),
    ("depth 30 ms after colour", {"lag_ms": 30.0, "depth_every": 1}),
    ("depth 60 ms after colour", {"lag_ms": 60.0, "depth_every": 1}),
    ("depth at 15 Hz, 10 ms after", {"lag_ms": 10.0, "depth_every": 2}),
)

PLAIN_NODE = f"""
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from spatialthinker_ros.core.images import image_to_numpy, to_rgb
from spatialthinker_ros.core.camera import depth_to_metres
rclpy.init()
node = rclpy.create_node("plain_converter")
latest = {{}}
def colour(msg):
    latest["rgb"] = to_rgb(image_to_numpy(msg), msg.encoding).copy()
def depth(msg):
    latest["depth"] = depth_to_metres(image_to_numpy(msg), msg.encoding)
node.create_subscription(Image, "{PREFIX}/image", colour, qos_profile_sensor_data)
node.create_subscription(Image, "{PREFIX}/depth", depth, qos_profile_sensor_data)
node.create_subscription(
    CameraInfo, "{PREFIX}/camera_info", lambda msg: None, qos_profile_sensor_data
)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class PlainClient:
    """A planner that adds nothing: one rclpy node, a SingleThreadedExecutor spun by the caller
    only while its call is in flight."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter_client import AsyncParameterClient

        from spatialthinker_msgs.srv import Query

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_planner", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.query = self.node.create_client(Query, f"{NODE}/query")
        self.parameters = AsyncParameterClient(self.node, NODE)
        self.request_type = Query.Request

    def wait_for_node(self, timeout: float = 60.0) -> None:
        assert self.query.wait_for_service(timeout_sec=timeout), "node never came up"
        assert self.parameters.wait_for_services(timeout_sec=timeout), "no parameter services"

    def call(self, question: str, timeout: float = 30.0) -> tuple[float, Any]:
        """One ~/query call: ``(round trip in seconds, response or None)``."""
        request = self.request_type(question=question, options=["in front", "behind"])
        start = time.perf_counter()
        future = self.query.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        return time.perf_counter() - start, future.result() if future.done() else None

    def set_parameter(self, name: str, value: Any) -> bool:
        """Set one of the node's parameters; False when the node refuses it (e.g. an older
        node without it)."""
        from rclpy.parameter import Parameter

        for _ in range(3):  # a lost response (Jazzy, a new client) is asked again
            future = self.parameters.set_parameters([Parameter(name, value=value)])
            self.executor.spin_until_future_complete(future, timeout_sec=10.0)
            if future.done():
                return all(r.successful for r in future.result().results)
        raise RuntimeError(f"no response to setting {name}")

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def idle_cpu(node: Any, plain: subprocess.Popen, duration: float, rate: float) -> None:
    """Part 1: both processes' CPU over the same window."""
    pids = {"spatialthinker_node": node.process.pid, "plain converter": plain.pid}
    start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(duration)
    elapsed = time.monotonic() - t0
    share = {name: (cpu_seconds(pid) - start[name]) / elapsed for name, pid in pids.items()}
    print(f"Idle CPU over {elapsed:.0f} s of {rate:g} Hz 640x480 rgb8 + 16UC1 input:")
    for name, value in share.items():
        print(f"  {name:<20} {100 * value:6.2f} % of one core")
    ratio = share["spatialthinker_node"] / max(share["plain converter"], 1e-9)
    print(f"  ratio node / plain   {ratio:6.3f}   (goal <= 0.25; node goal <= 5 %)", flush=True)


def overhead(client: PlainClient, calls: int, rng: random.Random) -> dict[str, Any]:
    """Part 2, one setting: ``calls`` calls at random moments; P2 and what was paired."""
    p2, with_3d, exact = [], 0, 0
    failures: list[str] = []
    for i in range(calls):
        time.sleep(rng.uniform(0.0, 0.05))  # a random phase against the camera's frames
        round_trip, response = client.call(f"Which is nearer? #{i}")
        if response is None or not response.success:
            failures.append("no response" if response is None else response.message)
            continue
        answer = response.answer
        p2.append(round_trip - answer.inference_s)
        objects = answer.scene_graph.objects
        with_3d += bool(objects) and all(o.has_3d for o in objects)
        exact += (answer.depth_stamp.sec, answer.depth_stamp.nanosec) == (
            answer.header.stamp.sec,
            answer.header.stamp.nanosec,
        )
    return {"p2": p2, "with_3d": with_3d, "exact": exact, "failures": failures}


def pairing_cost(repeat: int = 20000) -> tuple[float, float]:
    """The pairing function's own cost per request (select + plan_wait), microseconds, on a
    buffer as the node holds it (6 colour, 8 depth frames, depth 60 ms late)."""
    from spatialthinker_ros.core.frame_buffer import FrameBuffer

    buffer = FrameBuffer()
    period = 1 / 30
    for i in range(12):
        stamp = 100.0 + i * period
        buffer.add("colour", stamp, b"", stamp, follows=True)
        if stamp + 0.06 <= 100.0 + 11 * period:
            buffer.add("depth", stamp, b"", stamp + 0.06, follows=True)
    now = 100.0 + 11 * period + 0.005
    start = time.perf_counter()
    for _ in range(repeat):
        selection = buffer.select(now, 1.0, 0.05)
    select_us = (time.perf_counter() - start) / repeat * 1e6
    start = time.perf_counter()
    for _ in range(repeat):
        buffer.plan_wait(selection, now, 0.1)
    plan_us = (time.perf_counter() - start) / repeat * 1e6
    return select_us, plan_us


def report_overheads(results: list[tuple[str, float, dict[str, Any]]], calls: int) -> None:
    print(f"P2 = round trip - backend time, plain client, {calls} calls each (goal <= 10 ms):")
    print(
        f"  {'depth timing':<30} {'sync_wait':>9} {'median':>8} {'p90':>8}"
        f" {'+wait med':>9} {'3D':>6} {'exact':>6}"
    )
    no_wait = {label: statistics.median(r["p2"]) for label, w, r in results if w == 0 and r["p2"]}
    for label, sync_wait, result in results:
        p2 = result["p2"]
        if not p2:
            print(f"  {label:<30} {sync_wait:>9g}  all failed: {result['failures'][:2]}")
            continue
        median = statistics.median(p2)
        added = median - no_wait[label] if sync_wait > 0 and label in no_wait else 0.0
        p90 = percentile(p2, 0.9)
        print(
            f"  {label:<30} {sync_wait:>9g} {1000 * median:7.2f}ms {1000 * p90:7.2f}ms"
            f" {1000 * added:8.2f}ms {result['with_3d']:>3}/{len(p2):<2}"
            f" {result['exact']:>3}/{len(p2):<2}"
        )
        if result["failures"]:
            print(f"    failed: {len(result['failures'])}: {result['failures'][:2]}")
    try:
        select_us, plan_us = pairing_cost()
    except (TypeError, AttributeError):
        return  # a node from before pairing (PYTHONPATH names an older checkout)
    print(
        f"  pairing itself: select {select_us:.0f} us, plan_wait {plan_us:.0f} us per request"
        " (6 colour + 8 depth frames held)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="CPU window, seconds")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--calls", type=int, default=50, help="service calls per setting (part 2)")
    parser.add_argument("--parts", default="12", help="which parts to run: 1, 2 or 12")
    parser.add_argument(
        "--timings",
        default=",".join(str(i) for i in range(len(TIMINGS))),
        help="part 2's depth timings, by index: "
        + ", ".join(f"{i}: {label}" for i, (label, _s) in enumerate(TIMINGS)),
    )
    parser.add_argument(
        "--viewers", action="store_true", help="subscribe to markers and debug_image in part 2"
    )
    args = parser.parse_args()

    from node_harness import NodeProcess, scripted_reply
    from scripted_openai_server import ScriptedOpenAIServer

    from spatialthinker_ros.core.synthetic_scene import demo_scene

    scene = demo_scene()
    with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
        node = NodeProcess(
            {"backend": "openai", "model": "bench", "openai.base_url": server.base_url},
            remaps=REMAPS,
        )
        from script_process import ScriptProcess

        camera = ScriptProcess("camera_process.py", PREFIX, str(args.rate))
        plain = subprocess.Popen([sys.executable, "-c", PLAIN_NODE])
        client = PlainClient()
        viewers = []
        try:
            client.wait_for_node()
            if args.viewers:
                from sensor_msgs.msg import Image
                from visualization_msgs.msg import MarkerArray

                viewers = [
                    client.node.create_subscription(MarkerArray, f"{NODE}/markers", len, 1),
                    client.node.create_subscription(Image, f"{NODE}/debug_image", len, 1),
                ]
            time.sleep(5.0)  # discovery and warm-up
            if "1" in args.parts:
                idle_cpu(node, plain, args.duration, args.rate)
            # Part 2 on its own: the plain converter would only add CPU contention.
            plain.terminate()
            plain.wait(10)
            if "2" in args.parts:
                rng = random.Random(20)
                results = []
                chosen = [TIMINGS[int(i)] for i in args.timings.split(",")]
                for label, settings in chosen:
                    camera.set(**settings)
                    for sync_wait in (0.1, 0.0):
                        # A node from before sync_wait refuses it: it never waits.
                        if not client.set_parameter("sync_wait", sync_wait) and sync_wait > 0:
                            continue
                        time.sleep(2.0)  # frames of this timing, its lag measured
                        results.append((label, sync_wait, overhead(client, args.calls, rng)))
                report_overheads(results, args.calls)
        finally:
            for viewer in viewers:
                client.node.destroy_subscription(viewer)
            client.close()
            camera.close()
            if plain.poll() is None:
                plain.terminate()
                plain.wait(10)
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
