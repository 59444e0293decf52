"""``spatialthinker tiny-model``: write a tiny random-weight model for smoke tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from spatialthinker_ros.cli.args import CommandError

__all__ = ["add_tiny_model_command", "run_tiny_model"]


def add_tiny_model_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spatialthinker tiny-model``."""
    parser = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random-weight model for smoke tests (no download)",
        description=(
            "Write a tiny random-weight Qwen2.5-VL with an offline tokenizer to DIR. It answers "
            "nonsense, fast, on a CPU: use it to check an installation end to end without "
            "downloading the 16 GB model (e.g. make demo MODEL=DIR)."
        ),
    )
    parser.add_argument("directory", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    parser.set_defaults(func=run_tiny_model)


def run_tiny_model(args: argparse.Namespace) -> int:
    """``spatialthinker tiny-model``: see :func:`add_tiny_model_command`."""
    from spatialthinker_ros.core.tiny_model import build_tiny_model

    folder = Path(args.directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"{args.directory} exists and is not a folder")
    try:
        path = build_tiny_model(folder, seed=args.seed)
    except OSError as error:
        raise CommandError(f"cannot write {args.directory}: {error.strerror or error}") from None
    print(f"tiny model written to {path}; try: make demo MODEL={path}")
    return 0
