"""Benchmark spatialthinker_node: idle CPU under a 30 Hz camera, and per-request overhead.

Part 1 (idle CPU): a camera process publishes 640x480 rgb8 + 16UC1 depth +
camera_info at 30 Hz. Beside spatialthinker_node (no question pending) runs a
plain rclpy node that subscribes to the same topics and converts every frame
to numpy, the way a naive perception node does. Both CPU times are read from
/proc over the same window. Goals: node <= 5% of one core and <= 0.25x the
plain node.

Part 2 (overhead): service calls against the node with the openai backend
pointed at a scripted loopback server that answers at once; overhead = call
round trip minus the backend's own time (SpatialAnswer.inference_s). Goal:
<= 10 ms at 640x480.

Run from the repository root: ``.venv-jazzy/bin/python benchmarks/bench_node.py``
(the Makefile's environment, or AMENT_PREFIX_PATH=.venv-jazzy).
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

from spatialthinker_ros.ros.fastdds import set_default_profile

ROOT = Path(__file__).resolve().parents[1]
TEST_DIR = ROOT / "spatialthinker_ros" / "test"
sys.path.insert(0, str(TEST_DIR))

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 180)))
# Jazzy's Fast DDS reads the profile from FASTRTPS_..., Kilted's from FASTDDS_...: name both.
set_default_profile(os.environ, ROOT / "spatialthinker_ros" / "config" / "fastdds_large_images.xml")

CAMERA = """
import sys, time
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
sys.path.insert(0, {test_dir!r})
from node_harness import camera_info_for
from spatialthinker_ros.core.images import numpy_to_image
from spatialthinker_ros.core.synthetic_scene import demo_scene
rclpy.init()
node = rclpy.create_node("bench_camera")
scene = demo_scene()
colour, depth = numpy_to_image(scene.rgb, "rgb8"), numpy_to_image(scene.depth_mm, "16UC1")
info = camera_info_for(scene, "camera_color_optical_frame")
pubs = [node.create_publisher(t, n, qos_profile_sensor_data) for t, n in
        ((Image, "/bench/image"), (Image, "/bench/depth"), (CameraInfo, "/bench/camera_info"))]
def tick():
    stamp = node.get_clock().now().to_msg()
    for pub, msg in zip(pubs, (colour, depth, info)):
        msg.header.stamp = stamp
        msg.header.frame_id = "camera_color_optical_frame"
        pub.publish(msg)
node.create_timer(1 / {rate}, tick)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
"""

PLAIN_NODE = """
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from spatialthinker_ros.core.images import image_to_numpy, to_rgb
from spatialthinker_ros.core.camera import depth_to_metres
rclpy.init()
node = rclpy.create_node("plain_converter")
latest = {}
def colour(msg):
    latest["rgb"] = to_rgb(image_to_numpy(msg), msg.encoding).copy()
def depth(msg):
    latest["depth"] = depth_to_metres(image_to_numpy(msg), msg.encoding)
node.create_subscription(Image, "/bench/image", colour, qos_profile_sensor_data)
node.create_subscription(Image, "/bench/depth", depth, qos_profile_sensor_data)
node.create_subscription(CameraInfo, "/bench/camera_info", lambda m: None, qos_profile_sensor_data)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="CPU window, seconds")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--calls", type=int, default=50, help="service calls for part 2")
    parser.add_argument(
        "--viewers", action="store_true", help="subscribe to markers and debug_image in part 2"
    )
    args = parser.parse_args()

    from node_harness import NodeProcess, Rig, scripted_reply
    from scripted_openai_server import ScriptedOpenAIServer

    from spatialthinker_ros.core.synthetic_scene import demo_scene

    scene = demo_scene()
    remaps = {"image": "/bench/image", "depth": "/bench/depth", "camera_info": "/bench/camera_info"}
    with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
        node = NodeProcess(
            {"backend": "openai", "model": "bench", "openai.base_url": server.base_url},
            remaps=remaps,
        )
        camera = subprocess.Popen(
            [sys.executable, "-c", CAMERA.format(test_dir=str(TEST_DIR), rate=args.rate)]
        )
        plain = subprocess.Popen([sys.executable, "-c", PLAIN_NODE])
        rig = Rig(scene, rate_hz=0.001)  # planner only: the camera is its own process
        rig.camera_on = False
        if not args.viewers:
            # A planner alone: nobody looks at markers or the debug image, so the
            # node skips drawing them (they are computed only while subscribed).
            for subscription in list(rig.node.subscriptions):
                if subscription.topic_name.endswith(("markers", "debug_image")):
                    rig.node.destroy_subscription(subscription)
        try:
            rig.wait_for_node()
            time.sleep(5.0)  # discovery and warm-up
            pids = {"spatialthinker_node": node.process.pid, "plain converter": plain.pid}
            start = {name: cpu_seconds(pid) for name, pid in pids.items()}
            t0 = time.monotonic()
            time.sleep(args.duration)
            elapsed = time.monotonic() - t0
            share = {name: (cpu_seconds(pid) - start[name]) / elapsed for name, pid in pids.items()}
            print(f"Idle CPU over {elapsed:.0f} s of {args.rate:g} Hz 640x480 rgb8 + 16UC1 input:")
            for name, value in share.items():
                print(f"  {name:<20} {100 * value:6.2f} % of one core")
            ratio = share["spatialthinker_node"] / max(share["plain converter"], 1e-9)
            print(f"  ratio node / plain   {ratio:6.3f}   (goal <= 0.25; node goal <= 5 %)")

            # Part 2 on its own: the plain converter would only add CPU contention.
            plain.terminate()
            plain.wait(10)
            overheads, round_trips = [], []
            for i in range(args.calls):
                t = time.perf_counter()
                response = rig.query(question=f"Which is nearer? #{i}")
                round_trip = time.perf_counter() - t
                if not response.success:
                    print(f"  call {i} failed: {response.message}")
                    continue
                round_trips.append(round_trip)
                overheads.append(round_trip - response.answer.inference_s)
            if overheads:
                overheads.sort()
                print(f"Service call overhead (round trip - backend time), {len(overheads)} calls:")
                print(
                    f"  median {1000 * statistics.median(overheads):.2f} ms,"
                    f" p90 {1000 * overheads[int(0.9 * (len(overheads) - 1))]:.2f} ms,"
                    f" median round trip {1000 * statistics.median(round_trips):.2f} ms"
                    " (goal <= 10 ms)"
                )
        finally:
            rig.close()
            for process in (camera, plain):
                process.terminate()
                process.wait(10)
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
