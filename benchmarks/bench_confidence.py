"""What reading the option probabilities costs, against the generation (goal: under 2 %).

The transformers backend reads every output's token scores from the same ``generate`` call's raw
logits (``output_logits``: transformers copies each step's logits anyway, keeping them costs
memory, not time), then reduces them: a log-softmax per step, the letter tokens' variants
(``_TokenScorer.scores``); the engine then reads the answer's option probabilities from them
(``answer_confidence``). Both are timed here, per ``generate`` call, on the tiny model writing a
realistic SpatialThinker answer (forced through the real generate path), single and batched:

* ``scoring``: the reduction plus ``answer_confidence`` for every row, ms;
* ``generation``: the whole ``generate`` call with scoring, ms; the share is their ratio;
* ``without``: the same call with ``score_tokens=False``, for the end-to-end difference (noisy
  on a shared CPU; the share above is measured directly).

Usage::

    python benchmarks/bench_confidence.py [--repeats 5] [--batches 1,4]

Exits 1 when the share is 2 % or more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spatialthinker_ros" / "test" / "fixtures"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_engine_overhead import typical_answer  # noqa: E402
from forced_text import ForcedText  # noqa: E402

from spatialthinker_ros.core.backends import GenerationSettings  # noqa: E402
from spatialthinker_ros.core.backends.transformers_backend import TransformersBackend  # noqa: E402
from spatialthinker_ros.core.confidence import answer_confidence  # noqa: E402
from spatialthinker_ros.core.parsing import parse_output  # noqa: E402
from spatialthinker_ros.core.tiny_model import build_tiny_model  # noqa: E402

OPTIONS = ["in front of", "behind", "left of", "right of"]
GOAL = 0.02


class _Timed:
    """Wraps the backend's scorer and accumulates the seconds it takes."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.seconds = 0.0
        self._scores = backend._scorer.scores

        def scores(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self._scores(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        backend._scorer.scores = scores


def _measure(backend: TransformersBackend, batch: int, repeats: int, timer: _Timed) -> dict:
    images = [
        np.random.default_rng(i).integers(0, 256, (224, 224, 3), dtype=np.uint8)
        for i in range(batch)
    ]
    prompts = [f"Where is the mug? ({i})" for i in range(batch)]
    settings = GenerationSettings(max_new_tokens=1024)
    rows: dict[str, list[float]] = {"generation": [], "scoring": [], "without": []}
    for _ in range(repeats):
        backend.score_tokens = True
        timer.seconds = 0.0
        started = time.perf_counter()
        outputs = backend.generate(images, prompts, settings)
        generation = time.perf_counter() - started
        started = time.perf_counter()
        for output in outputs:
            parsed = parse_output(output.text, options=OPTIONS)
            confidence = answer_confidence(parsed, OPTIONS, output.token_scores)
            assert confidence.measured, confidence.note
        reading = time.perf_counter() - started
        rows["generation"].append(generation)
        rows["scoring"].append(timer.seconds + reading)
        backend.score_tokens = False
        started = time.perf_counter()
        backend.generate(images, prompts, settings)
        rows["without"].append(time.perf_counter() - started)
    tokens = outputs[0].output_tokens
    return {"batch": batch, "tokens": tokens, **{k: statistics.median(v) for k, v in rows.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default="1,4")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(Path(folder) / "tiny")
        backend = TransformersBackend(model, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
        backend.load()
    text = typical_answer(224, 224)
    backend.logits_processor = [ForcedText(backend.processor.tokenizer, text)]
    timer = _Timed(backend)
    _measure(backend, 1, 1, timer)  # warm-up
    worst = 0.0
    print("batch  tokens  generation ms  scoring ms  share   without scoring ms")
    for batch in (int(b) for b in args.batches.split(",")):
        result = _measure(backend, batch, args.repeats, timer)
        share = result["scoring"] / result["generation"]
        worst = max(worst, share)
        print(
            f"{result['batch']:5d}  {result['tokens']:6d}  {1000 * result['generation']:13.1f}"
            f"  {1000 * result['scoring']:10.2f}  {100 * share:4.2f} %"
            f"  {1000 * result['without']:18.1f}"
        )
    # The memory the raw logits take on the real model, for the record.
    print(
        "raw logits kept during a call: steps x rows x vocabulary x 4 B (7B: 152064 entries,"
        f" 0.61 MB a token and row; 1024 tokens x 4 rows: {1024 * 4 * 152064 * 4 / 2**30:.1f} GiB)"
    )
    verdict = "within" if worst < GOAL else "OVER"
    print(f"worst share {100 * worst:.2f} % of the generation time: {verdict} the 2 % goal")
    return 0 if worst < GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
