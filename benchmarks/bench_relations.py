"""Benchmark verify_relations: the depth check of 50 relations among 20 lifted objects.

Not a test: run ``python benchmarks/bench_relations.py`` and read the median. Goal: < 1 ms.
The relations cycle through every predicate family (and one wording outside the vocabulary),
with a reasoning text of realistic length that names most objects, so the verdicts, the
evidence texts and the "relied on" search are all paid for. Also timed: the same check with a
measured up direction (above, below and on in the levelled frame), and measuring that up
direction on the real 640x480 TUM office depth frame (paid once per answer with such a
relation; goal < 5 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from spatialthinker_ros.core.gravity import UpEstimate, estimate_up
from spatialthinker_ros.core.lifting import Lifted3D
from spatialthinker_ros.core.parsing import ParsedObject, ParsedRelation, SpatialResult
from spatialthinker_ros.core.relation_check import FAMILIES, Verdict, verify_relations

NAMES = ["chair", "table", "lamp", "sofa", "plant", "book", "cup", "traffic_light", "person", "tv"]
WORDINGS = [*FAMILIES, "is to the left of", "sitting on", "next to", "holding"]


def make_answer(objects: int = 20, relations: int = 50) -> tuple[SpatialResult, list[Lifted3D]]:
    """A parsed answer and one 3D estimate per object (two without 3D)."""
    ids = [f"{NAMES[i % 10]}.{i // 10 + 1}" for i in range(objects)]
    lifted = []
    for i in range(objects):
        if i in (5, 13):
            lifted.append(Lifted3D(None, None, 4, 0.02, "too few valid depth pixels"))
            continue
        x, y, z = (i % 5) * 0.4 - 0.8, (i // 5) * 0.3 - 0.45, 1.0 + 0.23 * i
        size = (0.1 + 0.03 * (i % 4), 0.12 + 0.02 * (i % 3), 0.1 + 0.03 * (i % 4))
        lifted.append(Lifted3D((x, y, z), size, 300, 0.8, "", z - size[2] / 2))
    rels = [
        ParsedRelation(ids[k % objects], WORDINGS[k % len(WORDINGS)], ids[(k * 7 + 3) % objects])
        for k in range(relations)
    ]
    think = " ".join(
        f"Step {k}: {ids[k % objects]} is {WORDINGS[k % len(WORDINGS)]} the "
        f"{NAMES[(k + 3) % 10].replace('_', ' ')}, judging by where its box sits in the image."
        for k in range(22)
    )
    parsed = SpatialResult(
        reasoning=think,
        answer="(B) right of the sofa",
        objects=[ParsedObject(i, i.split(".")[0], (0, 0, 10, 10)) for i in ids],
        relations=rels,
    )
    return parsed, lifted


def timed(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and p90 of ``call`` in milliseconds, after a warm-up."""
    for _ in range(min(50, runs)):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, sorted(times)[int(runs * 0.9)] * 1e3


def main() -> None:
    """Time many checks and print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    runs = ap.parse_args().runs
    parsed, lifted = make_answer()
    report = verify_relations(parsed, lifted)
    counts = {v.name.lower(): sum(c.verdict == v for c in report.checks) for v in Verdict}
    median_ms, p90_ms = timed(lambda: verify_relations(parsed, lifted), runs)
    print(
        f"verify_relations: {len(parsed.relations)} relations among {len(parsed.objects)} "
        f"objects ({counts}), {len(report.warnings)} warnings"
    )
    print(
        f"median {median_ms:.3f} ms, p90 {p90_ms:.3f} ms over {runs} runs "
        f"(goal < 1 ms: {'met' if median_ms < 1.0 else 'NOT met'})"
    )
    up = UpEstimate((0.0, -0.87, -0.49), 29.3, 0.18)
    median_ms, p90_ms = timed(lambda: verify_relations(parsed, lifted, up), runs)
    print(
        f"with a measured up (29 deg): median {median_ms:.3f} ms, p90 {p90_ms:.3f} ms "
        f"(goal < 1 ms: {'met' if median_ms < 1.0 else 'NOT met'})"
    )
    sys.path.insert(
        0, str(Path(__file__).resolve().parents[1] / "spatialthinker_ros" / "test" / "fixtures")
    )
    from real_rgbd import load_real_frames

    (frame,) = [f for f in load_real_frames() if f.name.startswith("tum")]
    found = estimate_up(frame.depth_m, frame.intrinsics)
    median_ms, p90_ms = timed(lambda: estimate_up(frame.depth_m, frame.intrinsics), runs // 10)
    tilt = f"{found.tilt_deg:.1f} deg" if found else "none"
    print(
        f"estimate_up on {frame.depth_m.shape[1]}x{frame.depth_m.shape[0]} real depth ({tilt}):"
        f" median {median_ms:.2f} ms, p90 {p90_ms:.2f} ms "
        f"(goal < 5 ms: {'met' if median_ms < 5.0 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
