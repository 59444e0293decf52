"""``spatialthinker parse``: parse model output from stdin and print it as JSON.

No model and no ROS: the parser alone, for checking what the node would make of a model's text.
"""

from __future__ import annotations

import argparse
import json
import sys

from spatialthinker_ros.cli.args import CommandError, options_list, positive_int

__all__ = ["add_parse_command", "run_parse"]


def add_parse_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spatialthinker parse``."""
    parser = subparsers.add_parser(
        "parse",
        help="parse model output from stdin and print it as JSON",
        description=(
            "Read SpatialThinker output text on stdin and print the parsed result (objects, "
            "relations, answer, choice, strict_format flag, warnings) as JSON."
        ),
    )
    parser.add_argument("--width", type=positive_int, help="stated image width (clips boxes)")
    parser.add_argument("--height", type=positive_int, help="stated image height")
    parser.add_argument(
        "--options",
        type=options_list,
        help="comma-separated multiple-choice options in order, e.g. 'behind,in front of'",
    )
    parser.add_argument("--compact", action="store_true", help="print one line of JSON")
    parser.set_defaults(func=run_parse)


def run_parse(args: argparse.Namespace) -> int:
    """``spatialthinker parse``: see :func:`add_parse_command`."""
    from spatialthinker_ros.core.parsing import parse_output

    if (args.width is None) != (args.height is None):
        raise CommandError("--width and --height must be given together")
    size = (args.width, args.height) if args.width is not None else None
    # Bytes, decoded leniently: model text with a broken byte must still parse.
    text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    result = parse_output(text, image_size=size, options=args.options)
    # The same key as `ask` and `replay` print: one name for one flag in every tool's output.
    data = {
        ("strict_format" if key == "strict" else key): value
        for key, value in result.to_dict().items()
    }
    indent = None if args.compact else 2
    sys.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
    return 0
