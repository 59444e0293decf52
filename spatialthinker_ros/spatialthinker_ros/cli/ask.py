"""``spatialthinker ask``: answer one question about one image file (JSON on stdout).

The image (with optional depth and camera_info files) goes through the same answering
pipeline as the node's frames; the answer is printed as JSON, and written with an annotated
PNG to the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spatialthinker_ros.cli.args import (
    CommandError,
    add_engine_arguments,
    options_list,
    parameter_values,
)
from spatialthinker_ros.cli.files import (
    finite,
    load_depth,
    load_rgb,
    read_camera_info_yaml,
    write_annotated,
    write_json,
)
from spatialthinker_ros.cli.offline_pipeline import frames_for, render, start_pipeline

__all__ = ["add_ask_command", "run_ask"]


def add_ask_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spatialthinker ask``."""
    parser = subparsers.add_parser(
        "ask",
        help="answer one question about one image file (JSON on stdout)",
        description=(
            "Answer a spatial question about IMAGE with the same engine and parameters as the "
            "node. Prints the answer as JSON and writes it with an annotated PNG to --output. "
            "With --depth and --camera-info the objects get 3D positions."
        ),
    )
    parser.add_argument("image", help="colour image (PNG, JPEG, ...)")
    parser.add_argument("--question", "-q", required=True, help="the question")
    parser.add_argument(
        "--options", type=options_list, default=[], help="comma-separated options, e.g. 'A,B'"
    )
    parser.add_argument("--depth", help="depth image: 16-bit PNG in mm, or .npy in metres")
    parser.add_argument("--camera-info", help="camera_info YAML of the colour camera")
    parser.add_argument(
        "--output", default="out/ask", help="folder for <image>.json and <image>.annotated.png"
    )
    parser.add_argument("--no-annotate", action="store_true", help="do not write the PNG")
    parser.add_argument("--compact", action="store_true", help="print one line of JSON")
    add_engine_arguments(parser)
    parser.set_defaults(func=run_ask)


def run_ask(args: argparse.Namespace) -> int:
    """``spatialthinker ask``: see :func:`add_ask_command`."""
    from spatialthinker_ros.answering.pipeline import RequestRejected, check_question
    from spatialthinker_ros.core.engine import RequestFailed

    if (args.depth is None) != (args.camera_info is None):
        raise CommandError("--depth and --camera-info must be given together")
    values = parameter_values(args)
    # The node's admission rules (empty or too long question, bad options), word for word.
    try:
        question, options = check_question(
            args.question, args.options or (), values["max_question_chars"]
        )
    except RequestRejected as rejected:
        raise CommandError(f"--question refused: {rejected}") from None
    # Read every input before loading the model: a typo should cost milliseconds, not minutes.
    rgb = load_rgb(args.image)
    depth, scale = load_depth(args.depth, values["depth.scale"]) if args.depth else (None, None)
    rectified = values["camera.rectified"]
    intrinsics = read_camera_info_yaml(args.camera_info, rectified) if args.camera_info else None
    frames = frames_for(rgb, depth, intrinsics, scale)
    stem = Path(args.image).stem
    pipeline = start_pipeline(values)
    try:
        answer = pipeline.answer(frames, question, options, request_id=stem)
    except RequestFailed as failed:
        raise CommandError(f"the model did not answer: {failed.reason}") from None
    finally:
        pipeline.shutdown("offline run finished")
    data = render(answer)
    data["image"] = str(args.image)
    write_json(args.output, f"{stem}.json", data)
    if not args.no_annotate:
        write_annotated(args.output, f"{stem}.annotated.png", rgb, data)
    indent = None if args.compact else 2
    sys.stdout.write(json.dumps(finite(data), indent=indent, ensure_ascii=False) + "\n")
    return 0
