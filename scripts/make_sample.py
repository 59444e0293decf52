#!/usr/bin/env python3
"""Regenerate the bundled RGB-D sample (samples/) from synthetic_scene.demo_scene().

Usage: python scripts/make_sample.py [--output samples] [--frames 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Write the sample; print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "samples"), help="output folder")
    parser.add_argument("--frames", type=int, default=1, help="frames (~0.85 MB each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first frame")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    from spatialthinker_ros.cli.sample_data import write_sample

    for path in write_sample(args.output, frames=args.frames, seed=args.seed):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
