"""Benchmark lifting 20 boxes on a 640x480 depth image.

Not a test: run ``python benchmarks/bench_lift.py`` and read the median. Goal: <= 1 ms.
The depth comes from the demo scene (16UC1 converted to metres, noise and holes included); the
20 boxes are the scene's objects repeated plus a few shifted copies, so some boxes mix surfaces.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from spatialthinker_ros.core.camera import depth_to_metres
from spatialthinker_ros.core.lifting import lift_boxes
from spatialthinker_ros.core.synthetic_scene import demo_scene


def make_inputs(n_boxes: int = 20) -> tuple[list[tuple[float, ...]], np.ndarray, object]:
    """Boxes, depth in metres and intrinsics from the demo scene."""
    scene = demo_scene()
    base = [o.bbox for o in scene.objects if o.bbox is not None]
    boxes = []
    for i in range(n_boxes):
        x1, y1, x2, y2 = base[i % len(base)]
        shift = 7.0 * (i // len(base))
        boxes.append((x1 + shift, y1 + shift, x2 + shift, y2 + shift))
    return boxes, depth_to_metres(scene.depth_mm, "16UC1"), scene.intrinsics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    boxes, depth, cam = make_inputs(args.boxes)
    for _ in range(50):  # warm-up
        lift_boxes(boxes, depth, cam)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        lift_boxes(boxes, depth, cam)
        times.append(time.perf_counter() - t0)
    median_ms = statistics.median(times) * 1e3
    p90_ms = sorted(times)[int(0.9 * len(times))] * 1e3
    result = {
        "benchmark": "lift_boxes",
        "boxes": len(boxes),
        "depth": f"{depth.shape[1]}x{depth.shape[0]}",
        "median_ms": round(median_ms, 4),
        "p90_ms": round(p90_ms, 4),
        "goal_ms": 1.0,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"lift_boxes: {len(boxes)} boxes on {result['depth']} depth: "
            f"median {median_ms:.3f} ms, "
            f"p90 {p90_ms:.3f} ms (goal <= 1 ms)"
        )


if __name__ == "__main__":
    main()
