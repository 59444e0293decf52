"""Engine overhead per request, excluding the backend (goal: <= 2 ms).

Runs the real engine (queue, worker thread, model-frame planning, resize, prompt, parsing, box
scaling, futures) around a backend that answers instantly with a typical SpatialThinker output
(10 objects, 8 relations), and reports, per request:

* ``overhead``: end-to-end time from ``submit`` to the result minus the backend call;
* the same for sequential requests (one at a time, latency view) and for a burst (queue and
  batching at work).

Usage::

    python benchmarks/bench_engine_overhead.py [--requests 300] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from spatialthinker_ros.core.backends.base import Backend, BackendOutput
from spatialthinker_ros.core.engine import EngineConfig, InferenceEngine, Priority


def typical_answer(width: int, height: int) -> str:
    """A SpatialThinker-format answer of realistic size (about 350 tokens)."""
    rng = np.random.default_rng(0)
    objects = []
    for i in range(10):
        x1, y1 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        x2, y2 = x1 + rng.integers(20, width // 2), y1 + rng.integers(20, height // 2)
        objects.append(
            {"id": f"object_{i % 4}.{i + 1}", "bbox": [int(x1), int(y1), int(x2), int(y2)]}
        )
    relations = [
        {"subject": objects[i]["id"], "predicate": "left of", "object": objects[i + 1]["id"]}
        for i in range(8)
    ]
    scene = json.dumps({"objects": objects, "relationships": relations})
    return (
        "<observe> A table with several objects: a mug, a laptop, a bottle and two books. "
        "The camera looks down at about 30 degrees. </observe>\n"
        f"<scene>\n{scene}\n</scene>\n"
        "<think> The mug is left of the laptop and closer to the camera than the bottle, so "
        "the answer is that it is in front. </think>\n<answer> (A) in front of </answer>"
    )


class InstantBackend(Backend):
    """Answers at once, so everything measured is engine overhead."""

    name = "instant"

    def __init__(self, text: str) -> None:
        self.text = text
        self._loaded = False
        self.backend_seconds = 0.0

    @property
    def model_name(self) -> str:
        return "instant"

    def load(self) -> None:
        self._loaded = True

    def unload(self) -> None:
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def generate(self, images, prompts, settings, cancel=None):
        started = time.perf_counter()
        out = [BackendOutput(self.text, 540, 350, 0.0) for _ in prompts]
        self.backend_seconds += time.perf_counter() - started
        return out


def _summary(values_ms: list[float]) -> str:
    values = sorted(values_ms)
    p90 = values[int(0.9 * (len(values) - 1))]
    median, mean = statistics.median(values), statistics.fmean(values)
    return f"median {median:.3f} ms, p90 {p90:.3f} ms, mean {mean:.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    image = np.random.default_rng(1).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    options = ["in front of", "behind"]
    backend = InstantBackend(typical_answer(args.width, args.height))
    engine = InferenceEngine(
        backend, EngineConfig(max_queue_size=args.requests + 1, max_batch_size=args.batch)
    )
    engine.start()
    try:
        for _ in range(20):  # warm-up: imports, caches, first-call costs
            engine.submit(image, "Is the mug in front of the bottle?", options).result(10)

        sequential = []
        for _ in range(args.requests):
            started = time.perf_counter()
            result = engine.submit(image, "Is the mug in front of the bottle?", options).result(10)
            sequential.append((time.perf_counter() - started - result.inference_s) * 1e3)
        assert len(result.result.objects) == 10 and result.result.choice == "A"

        backend.backend_seconds = 0.0
        started = time.perf_counter()
        handles = [
            engine.submit(image, "Is the mug in front?", options, priority=Priority.CONTINUOUS)
            for _ in range(args.requests)
        ]
        for h in handles:
            h.result(30)
        burst_wall = time.perf_counter() - started
        burst_per_request = (burst_wall - backend.backend_seconds) / args.requests * 1e3
        stats = engine.stats()
    finally:
        engine.shutdown("benchmark done")

    print(
        f"source {args.width}x{args.height} -> model frame "
        f"{result.stated_size[0]}x{result.stated_size[1]}"
    )
    print(f"sequential (submit -> result, minus backend): {_summary(sequential)}")
    print(
        f"burst of {args.requests} (batch {args.batch}): {burst_per_request:.3f} ms/request "
        f"engine work, mean batch {stats['mean_batch_size']:.2f}"
    )
    goal = statistics.median(sequential) <= 2.0
    print(f"goal <= 2 ms per request: {'met' if goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
