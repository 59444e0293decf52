"""Benchmark parse_output on a realistic ~2,000-token SpatialThinker output.

Not a test: run ``python benchmarks/bench_parse.py`` and read the median. Goal: <= 1 ms.
The output has the real format: an observation, a scene graph of 20 objects and 19 relations,
a long internal monologue, and a multiple-choice answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from spatialthinker_ros.core.parsing import parse_output

OPTIONS = ["left of the sofa", "right of the sofa", "behind the sofa", "in front of the sofa"]
NAMES = ["chair", "table", "lamp", "sofa", "plant", "book", "cup", "traffic_light", "person", "tv"]


def make_output() -> str:
    """A ~2,000-token output (about 4 characters per token) in the trained format."""
    objects = []
    for i in range(20):
        x, y = (i % 5) * 120 + 7, (i // 5) * 110 + 11
        objects.append({"id": f"{NAMES[i % 10]}.{i // 10 + 1}", "bbox": [x, y, x + 97, y + 88]})
    predicates = ["left of", "behind", "in front of", "on", "near"]
    relations = [
        {
            "subject": objects[i]["id"],
            "predicate": predicates[i % 5],
            "object": objects[i - 1]["id"],
        }
        for i in range(1, 20)
    ]
    scene = json.dumps({"objects": objects, "relationships": relations}, indent=1)
    observe = (
        "The image shows a living room with a grey sofa against the far wall, a wooden table in "
        "the middle, two chairs, a floor lamp in the corner, several plants and a television. "
    ) * 3
    think = " ".join(
        f"Step {k}: compare the {NAMES[k % 10]} with the {NAMES[(k + 3) % 10]}; its box "
        f"spans x from {k * 7} to {k * 7 + 90}, and its lower edge is nearer the bottom of the "
        "image, which suggests it is closer to the camera than the other object."
        for k in range(22)
    )
    return (
        f"<observe>\n{observe}\n</observe>\n<scene>\n{scene}\n</scene>\n"
        f"<think>\n{think}\n</think>\n<answer> (B) right of the sofa </answer>"
    )


def main() -> None:
    """Time many parses and print the median."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    runs = ap.parse_args().runs
    text = make_output()
    result = parse_output(text, (644, 476), OPTIONS)
    assert result.strict and not result.warnings and len(result.objects) == 20, result.warnings
    for _ in range(50):  # warm-up
        parse_output(text, (644, 476), OPTIONS)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        parse_output(text, (644, 476), OPTIONS)
        times.append(time.perf_counter() - start)
    median_ms = statistics.median(times) * 1e3
    print(
        f"parse_output: {len(text)} chars (~{len(text) // 4} tokens), {len(result.objects)} "
        f"objects, {len(result.relations)} relations"
    )
    print(
        f"median {median_ms:.3f} ms, p90 {sorted(times)[int(runs * 0.9)] * 1e3:.3f} ms "
        f"over {runs} runs (goal <= 1 ms: {'met' if median_ms <= 1.0 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
