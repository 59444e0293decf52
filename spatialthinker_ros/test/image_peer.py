"""A camera or a listener of 640x480 frames in a process of its own, for the Fast DDS profile test.

Usage:
    python image_peer.py camera TOPIC COUNT RATE_HZ  # publish COUNT numbered rgb8 frames at RATE_HZ
    python image_peer.py listener TOPIC COUNT        # count the numbered frames that arrive
    python image_peer.py segment                     # only report the shared-memory segment

Both use sensor-data QoS (best effort), as camera drivers do. Each mode prints one JSON line on
stdout with what it saw, including the largest Fast DDS shared-memory segment the process maps
(the profile's 16 MB segment or Fast DDS's default of about 0.5 MB), and exits 0.
"""

from __future__ import annotations

import json
import re
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

WIDTH, HEIGHT = 640, 480
DISCOVERY_TIMEOUT_S = 30.0
# Fast DDS names its shared-memory segments fastdds_<hex> (3.x) or fastrtps_<hex> (2.x); the
# fastdds_port<N> files are port queues, not segments.
_SEGMENT = re.compile(r"/dev/shm/fast(?:dds|rtps)_[0-9a-f]+$")


def largest_segment_bytes() -> int:
    """Size of the largest Fast DDS shared-memory segment mapped into this process."""
    largest = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and _SEGMENT.search(fields[-1]):
                start, end = (int(value, 16) for value in fields[0].split("-"))
                largest = max(largest, end - start)
    return largest


def frame(index: int) -> Image:
    """A 640x480 rgb8 frame whose every byte is its index (mod 256), numbered in frame_id."""
    image = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
    image.header.frame_id = str(index)
    image.data = bytes([index % 256]) * (WIDTH * HEIGHT * 3)
    return image


def run_camera(node: rclpy.node.Node, topic: str, count: int, rate_hz: float) -> dict:
    """Wait for the listener, then publish ``count`` frames at ``rate_hz``."""
    publisher = node.create_publisher(Image, topic, qos_profile_sensor_data)
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise SystemExit("camera: no listener discovered")
        time.sleep(0.05)
    time.sleep(1.0)  # both ends matched, shared-memory ports opened
    frames = [frame(index) for index in range(count)]
    start = time.monotonic()
    for index, image in enumerate(frames):
        time.sleep(max(0.0, start + index / rate_hz - time.monotonic()))
        publisher.publish(image)
    return {"sent": count, "seconds": time.monotonic() - start}


def run_listener(node: rclpy.node.Node, topic: str, count: int) -> dict:
    """Count the distinct intact frames that arrive until all came or the camera went quiet."""
    received: set[int] = set()
    corrupt = 0
    arrivals: list[float] = []

    def keep(image: Image) -> None:
        nonlocal corrupt
        index = int(image.header.frame_id)
        data = bytes(image.data)
        expected = WIDTH * HEIGHT * 3
        if len(data) != expected or data[0] != data[-1] or data[0] != index % 256:
            corrupt += 1
            return
        received.add(index)
        arrivals.append(time.monotonic())

    # Best effort like the camera; a deeper history than the camera's so that a listener
    # descheduled for a moment on a busy machine does not count as frames the transport lost.
    qos = QoSProfile(
        depth=50,
        reliability=qos_profile_sensor_data.reliability,
        durability=qos_profile_sensor_data.durability,
    )
    node.create_subscription(Image, topic, keep, qos)
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S + 60.0
    while len(received) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        if arrivals and time.monotonic() - arrivals[-1] > 3.0:
            break  # the camera has finished
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return {"received": len(received), "corrupt": corrupt, "seconds": span}


def main() -> int:
    mode = sys.argv[1]
    rclpy.init()
    node = rclpy.create_node(f"image_peer_{mode}")
    try:
        if mode == "camera":
            result = run_camera(node, sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        elif mode == "listener":
            result = run_listener(node, sys.argv[2], int(sys.argv[3]))
        elif mode == "segment":
            node.create_publisher(Image, "image_peer_segment", qos_profile_sensor_data)
            result = {}
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        result["segment_bytes"] = largest_segment_bytes()
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
