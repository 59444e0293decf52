"""``spatialthinker ask``: answer one question about one image file (JSON on stdout).

The image (with optional depth and camera_info files) goes through the same answering
pipeline as the node's frames; the answer is printed as JSON, and written with an annotated
PNG to the output folder.

With ``--camera-pose`` (the camera's optical frame in ``--pose-frame``, e.g. from a robot's
odometry or a motion-capture system) the 3D is reported in that frame, and above/below/on are
judged along its z (REP 103: z up), through the same ROS-free functions as the node's TF.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
from spatialthinker_ros.cli.offline_pipeline import (
    frames_for,
    render,
    render_detections,
    start_pipeline,
)

if TYPE_CHECKING:
    from spatialthinker_ros.answering.pipeline import Frames

__all__ = ["add_ask_command", "placed", "run_ask"]


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
    parser.add_argument(
        "--camera-pose",
        nargs=7,
        type=float,
        metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"),
        help="the camera's optical frame (x right, y down, z forward) in --pose-frame: its"
        " position in metres and orientation quaternion; the 3D is reported in --pose-frame"
        " and up is its z",
    )
    parser.add_argument(
        "--pose-frame", default="world", help="the z-up frame --camera-pose is given in"
    )
    parser.add_argument(
        "--frame-id", default="camera_optical_frame", help="the camera's frame name"
    )
    parser.add_argument("--no-annotate", action="store_true", help="do not write the PNG")
    parser.add_argument(
        "--detections",
        action="store_true",
        help="also write <image>.detections.json: the node's ~/detections_3d and ~/detections_2d"
        " (vision_msgs fields)",
    )
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
    if args.camera_pose is not None:
        frames = placed(frames, args.camera_pose, args.pose_frame, args.frame_id)
    stem = Path(args.image).stem
    pipeline = start_pipeline(values)
    try:
        answer = pipeline.answer(frames, question, options, request_id=stem)
    except RequestFailed as failed:
        raise CommandError(f"the model did not answer: {failed.reason}") from None
    finally:
        pipeline.shutdown("offline run finished")
    frame_id = args.frame_id if args.camera_pose is not None else ""
    data = render(answer, frame_id=frame_id)
    data["image"] = str(args.image)
    write_json(args.output, f"{stem}.json", data)
    if args.detections:
        write_json(
            args.output, f"{stem}.detections.json", render_detections(answer, (0, 0), frame_id)
        )
    if not args.no_annotate:
        write_annotated(args.output, f"{stem}.annotated.png", rgb, data)
    indent = None if args.compact else 2
    sys.stdout.write(json.dumps(finite(data), indent=indent, ensure_ascii=False) + "\n")
    return 0


def placed(frames: Frames, pose: Sequence[float], pose_frame: str, camera_frame: str) -> Frames:
    """``frames`` with the camera at ``pose`` (x y z qx qy qz qw of the optical frame) in
    ``pose_frame``: the answer's 3D is reported there and up is its z, as the node does with a
    TF target frame and gravity frame.

    Raises:
        CommandError: A pose that is not a rigid transform, or an empty frame name (named).
    """
    # Imported here, as the pipeline is: `--help` and argument errors stay instant.
    from spatialthinker_ros.answering.robot_frames import FrameRequest, look_up
    from spatialthinker_ros.core.transforms import TransformBuffer

    if not pose_frame.strip("/") or not camera_frame.strip("/"):
        raise CommandError("--pose-frame and --frame-id must name frames")
    if pose_frame.strip("/") == camera_frame.strip("/"):
        raise CommandError(f"--pose-frame and --frame-id are both '{camera_frame}'")
    buffer = TransformBuffer()
    try:
        buffer.set_transform(pose_frame, camera_frame, 0.0, pose[:3], pose[3:], static=True)
    except ValueError as error:
        raise CommandError(f"--camera-pose: {error}") from None
    request = FrameRequest.of(camera_frame, pose_frame, pose_frame)
    return look_up(buffer, request, 0.0).applied_to(frames)
