"""Long fuzzing run (outside CI) of the parser and the image decoders.

Generates inputs by mutating the test corpus of real-format model outputs
(splicing, truncating, duplicating, inserting tag and JSON fragments, random
bytes) and random sensor_msgs Image / CompressedImage messages. Any exception
other than the documented ValueError from a decoder (and any exception at all
from parse_output, which must never raise) is a failure. Prints a summary and
exits non-zero on failure.

    .venv/bin/python benchmarks/fuzz.py --inputs 100000 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "spatialthinker_ros" / "test" / "data" / "outputs"

FRAGMENTS = [
    "<observe>", "</observe>", "<scene>", "</scene>", "<think>", "</think>", "<answer>",
    "</answer>", "{", "}", "[", "]", '"', "'", ",", ":", '"objects":', '"relationships":',
    '"bbox": [', '"id": "cup.1"', "```json", "```", "\\", "\x00", "(A)", "(b)", "NaN", "1e309",
    "-0", "]]]]", "{{{{", "\u202e", "🙂", "\r\n", " " * 50, "null", "true",
]  # fmt: skip


def corpus_texts() -> list[str]:
    texts = [p.read_text(errors="replace") for p in sorted(CORPUS.glob("*.txt"))]
    return texts or ["<answer> (A) x </answer>"]


def mutate(rng: random.Random, text: str, others: list[str]) -> str:
    """One to four random edits of a model output."""
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(text))
        if op == 0:
            text = text[:pos]  # cut off (token limit)
        elif op == 1:
            text = text[:pos] + rng.choice(FRAGMENTS) * rng.randint(1, 20) + text[pos:]
        elif op == 2:
            end = min(len(text), pos + rng.randint(1, 200))
            text = text[:pos] + text[end:]
        elif op == 3:
            other = rng.choice(others)
            start = rng.randint(0, len(other))
            text = text[:pos] + other[start : start + rng.randint(1, 500)] + text[pos:]
        elif op == 4:
            text = text[:pos] + "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(20)) + text[pos:]
        elif op == 5:
            text = text + text[: rng.randint(0, len(text))]
        else:
            text = text.replace(rng.choice(FRAGMENTS), rng.choice(FRAGMENTS))
    return text


def fuzz_parser(rng: random.Random, count: int) -> tuple[int, list[str]]:
    from spatialthinker_ros.core.parsing import parse_output

    texts = corpus_texts()
    failures: list[str] = []
    for i in range(count):
        text = mutate(rng, rng.choice(texts), texts)
        size = rng.choice([None, (644, 476), (1, 1), (10_000, 10)])
        options = rng.choice([None, [], ["left", "right"], ["a", "b", "c", "d"]])
        try:
            result = parse_output(text, image_size=size, options=options)
            json.dumps(result.to_dict())
            ids = [o.id for o in result.objects]
            assert len(ids) == len(set(ids)), "duplicate ids"
            if size is not None:
                for obj in result.objects:
                    x1, y1, x2, y2 = obj.bbox
                    assert 0 <= x1 <= x2 <= size[0] and 0 <= y1 <= y2 <= size[1], obj.bbox
        except Exception:
            failures.append(f"parse_output input #{i}: {traceback.format_exc(limit=3)}")
    return count, failures


def fuzz_decoders(rng: random.Random, count: int) -> tuple[int, list[str]]:
    from sensor_msgs.msg import CompressedImage, Image

    from spatialthinker_ros.core.camera import depth_to_metres
    from spatialthinker_ros.core.images import (
        ENCODINGS,
        decode_compressed_depth,
        decode_compressed_image,
        encode_compressed_image,
        image_to_numpy,
        to_rgb,
    )

    encodings = [*sorted(ENCODINGS), "bayer_rggb8", "", "16SC1", "rgb16"]
    jpeg = bytes(encode_compressed_image(np.zeros((24, 32, 3), np.uint8), "jpeg").data)
    png = bytes(encode_compressed_image(np.zeros((24, 32, 3), np.uint8), "png").data)
    failures: list[str] = []
    for i in range(count):
        kind = i % 3
        try:
            if kind == 0:
                msg = Image(
                    encoding=rng.choice(encodings),
                    height=rng.randint(0, 48),
                    width=rng.randint(0, 48),
                    step=rng.randint(0, 300),
                    is_bigendian=rng.randint(0, 1),
                )
                msg.data = rng.randbytes(rng.randint(0, 9000))
                try:
                    array = image_to_numpy(msg)
                    if msg.encoding in ("16UC1", "32FC1", "mono16"):
                        depth_to_metres(array, msg.encoding)
                    else:
                        to_rgb(array, msg.encoding)
                except ValueError:
                    pass
            else:
                base = rng.choice([jpeg, png, b""])
                pos = rng.randint(0, len(base))
                data = base[:pos] + rng.randbytes(rng.randint(0, 64)) + base[pos + 8 :]
                fmt = rng.choice(
                    ["jpeg", "png", "16UC1; compressedDepth png", "32FC1; compressedDepth"]
                )
                msg = CompressedImage(format=fmt, data=data)
                decoder = (
                    decode_compressed_depth if "compressedDepth" in fmt else decode_compressed_image
                )
                with contextlib.suppress(ValueError):
                    decoder(msg)
        except Exception:
            failures.append(f"decoder input #{i}: {traceback.format_exc(limit=3)}")
    return count, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    total_failures = 0
    print(f"fuzzing with seed {args.seed}, {args.inputs} inputs per target")
    for name, target in (("parse_output", fuzz_parser), ("image decoders", fuzz_decoders)):
        started = time.perf_counter()
        count, failures = target(rng, args.inputs)
        seconds = time.perf_counter() - started
        total_failures += len(failures)
        print(f"  {name:<15} {count:>8} inputs  {len(failures):>3} failures  {seconds:7.1f} s")
        for failure in failures[:5]:
            print(failure)
    print("result:", "PASS" if total_failures == 0 else f"FAIL ({total_failures})")
    return 0 if total_failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
