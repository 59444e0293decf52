"""Benchmark answers in the robot's frames (TF target frames, issue 21).

Not a test: run ``python benchmarks/bench_transforms.py`` and read the figures.

1. Transforming an answer of 20 objects: the lookup of ``odom <- camera`` at an image's stamp
   (a three-link chain, the dynamic link interpolated between 50 Hz samples) plus the scene
   graph message with the placement applied (centres, surfaces, orientation, up), minus the
   same message without a placement. Goal: < 0.5 ms.
2. The TF subscription's CPU: a node holding the (polled) ``TfListener`` subscribed to ``/tf`` while
   another process publishes ``odom -> base_link`` at 50 Hz, against the same node not
   subscribed (CPU time of the process over ``--seconds``). Goal: < 1 % of a core.
   Needs ROS 2 (the venv's rclpy) and the tf2_msgs interface (``make venv``).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relations import make_answer

from spatialthinker_ros.answering.pipeline import SceneProgress
from spatialthinker_ros.answering.robot_frames import FrameRequest, look_up
from spatialthinker_ros.core.gravity import UpEstimate
from spatialthinker_ros.core.relation_check import RelationReport
from spatialthinker_ros.core.transforms import TransformBuffer

CAMERA = "camera_color_optical_frame"
TF_HZ = 50.0


def robot_buffer(seconds: float = 10.0) -> TransformBuffer:
    """A robot's tree: odom -> base_link at 50 Hz over ``seconds`` (driving and turning),
    base_link -> camera_link -> optical frame static."""
    buffer = TransformBuffer()
    optical = Rotation.from_matrix([[0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    buffer.set_transform(
        "base_link", "camera_link", 0.0, (0.1, 0, 1.2), (0, 0.2588, 0, 0.9659), True
    )
    buffer.set_transform("camera_link", CAMERA, 0.0, (0, 0, 0), optical.as_quat(), True)
    for k in range(int(seconds * TF_HZ)):
        t = 100.0 + k / TF_HZ
        yaw = Rotation.from_euler("z", 0.3 * (t - 100.0)).as_quat()
        buffer.set_transform("odom", "base_link", t, (t - 100.0, 0.0, 0.0), yaw)
    return buffer


def _median_us(function, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.9 * len(times))]


def bench_answer(repeat: int) -> None:
    from std_msgs.msg import Header

    from spatialthinker_ros.ros.ros_conversions import scene_graph_message

    parsed, lifted = make_answer(objects=20, relations=10)
    up = UpEstimate((0.0, -0.87, -0.5), "depth", 0.95, False)
    report = RelationReport([], 0, [], up)
    buffer = robot_buffer()
    request = FrameRequest.of(CAMERA, "odom", "base_link")
    header = Header(frame_id=CAMERA)
    camera_frame = SceneProgress("r", parsed, tuple(lifted), "", report)
    stamp = 104.123

    def transformed() -> None:
        placed = look_up(buffer, request, stamp)
        scene_graph_message(
            header, SceneProgress("r", parsed, tuple(lifted), "", report, (), placed.placement)
        )

    def untransformed() -> None:
        scene_graph_message(header, camera_frame)

    for function in (transformed, untransformed):  # warm up
        function()
    lookup_median, lookup_p90 = _median_us(lambda: look_up(buffer, request, stamp), repeat)
    with_median, with_p90 = _median_us(transformed, repeat)
    without_median, _ = _median_us(untransformed, repeat)
    cost = (with_median - without_median) / 1000.0
    print(f"lookup odom <- {CAMERA} (+ gravity) at a stamp: median {lookup_median:.0f} us,", end="")
    print(f" p90 {lookup_p90:.0f} us")
    print(
        f"scene graph of 20 objects: {with_median / 1000:.3f} ms in odom,"
        f" {without_median / 1000:.3f} ms in the camera frame (p90 {with_p90 / 1000:.3f} ms)"
    )
    print(f"transforming an answer of 20 objects: {cost:.3f} ms (goal < 0.5 ms)")


def _publish_tf(seconds: float, domain: int) -> None:
    """Another process: odom -> base_link on /tf at 50 Hz, as a robot's odometry does."""
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    rclpy.init()
    node = rclpy.create_node("bench_tf_publisher")
    publisher = node.create_publisher(TFMessage, "/tf", 100)
    start = time.time()
    while time.time() - start < seconds and rclpy.ok():
        now = node.get_clock().now().to_msg()
        link = TransformStamped()
        link.header.stamp, link.header.frame_id, link.child_frame_id = now, "odom", "base_link"
        link.transform.translation.x = time.time() - start
        link.transform.rotation.w = 1.0
        try:
            publisher.publish(TFMessage(transforms=[link]))
        except Exception:  # terminated: rclpy's signal handler shut the context down
            return
        time.sleep(1.0 / TF_HZ)
    node.destroy_node()
    rclpy.shutdown()


def bench_subscription(seconds: float) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from spatialthinker_ros.ros.tf_listener import TfListener

    domain = 100 + os.getpid() % 100
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    node = rclpy.create_node("bench_tf_listener")
    listener = TfListener(node, lambda: node.get_clock().now().nanoseconds * 1e-9)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    spinning.start()
    publisher = multiprocessing.get_context("spawn").Process(
        target=_publish_tf, args=(3 * seconds + 10.0, domain)
    )
    publisher.start()
    try:
        time.sleep(4.0)  # discovery
        figures = {}
        for subscribed in (False, True, False, True):
            if subscribed:
                listener.subscribe()
            else:
                listener.unsubscribe()
            time.sleep(1.0)
            cpu, wall = time.process_time(), time.monotonic()
            time.sleep(seconds / 2)
            share = 100.0 * (time.process_time() - cpu) / (time.monotonic() - wall)
            figures.setdefault(subscribed, []).append(share)
            if subscribed and listener.buffer.newest_stamp() is None:
                print("warning: no /tf received: the figure is not the subscription's cost")
        idle, busy = statistics.mean(figures[False]), statistics.mean(figures[True])
        newest = listener.buffer.newest_stamp()
        print(
            f"node process CPU: {idle:.2f} % of a core not subscribed,"
            f" {busy:.2f} % with /tf at {TF_HZ:.0f} Hz"
        )
        print(
            f"the TF subscription adds {busy - idle:.2f} % of a core (goal < 1 %);"
            f" newest stamp {newest}"
        )
    finally:
        publisher.terminate()
        publisher.join()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU sampling time")
    parser.add_argument("--skip-cpu", action="store_true", help="only the answer transform")
    args = parser.parse_args()
    if not math.isfinite(args.seconds) or args.seconds <= 0:
        parser.error("--seconds must be positive")
    bench_answer(args.repeat)
    if not args.skip_cpu:
        bench_subscription(args.seconds)


if __name__ == "__main__":
    main()
