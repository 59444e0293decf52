"""Benchmark converting 640x480 sensor_msgs/Image messages to numpy.

Not a test: run ``python benchmarks/bench_images.py`` and read the medians. Goal for rgb8:
<= 0.2 ms (a view on the message buffer, no per-pixel work). Other encodings are listed for
comparison (bgr8 -> RGB and 16UC1 -> metres do per-pixel work by nature).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from spatialthinker_ros.core.camera import depth_to_metres
from spatialthinker_ros.core.images import image_to_numpy, image_to_rgb, numpy_to_image


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = rng.integers(300, 5000, (480, 640), dtype=np.uint16)
    rgb_msg = numpy_to_image(rgb, "rgb8")
    padded_msg = numpy_to_image(rgb, "rgb8", step=640 * 3 + 64)
    bgr_msg = numpy_to_image(rgb, "bgr8")
    depth_msg = numpy_to_image(depth, "16UC1")
    results = {
        "rgb8_to_numpy_ms": _median_ms(lambda: image_to_numpy(rgb_msg), args.repeat),
        "rgb8_padded_to_numpy_ms": _median_ms(lambda: image_to_numpy(padded_msg), args.repeat),
        "rgb8_to_rgb_ms": _median_ms(lambda: image_to_rgb(rgb_msg), args.repeat),
        "bgr8_to_rgb_ms": _median_ms(lambda: image_to_rgb(bgr_msg), args.repeat),
        "16UC1_to_metres_ms": _median_ms(
            lambda: depth_to_metres(image_to_numpy(depth_msg), "16UC1"), args.repeat
        ),
    }
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in results.items()} | {"goal_rgb8_ms": 0.2}))
    else:
        for name, value in results.items():
            print(f"{name:26s} median {value:.4f} ms")
        print("goal: rgb8 640x480 -> array <= 0.2 ms")


if __name__ == "__main__":
    main()
