"""``spatialthinker replay``: answer a question on the frames of a rosbag2 recording.

The bag (sqlite3 or mcap storage) is read with the ``rosbags`` library, so no ROS graph and no
running node are needed. Colour frames are ``sensor_msgs/Image`` or ``CompressedImage``; each
selected frame is paired with the depth frame (``sensor_msgs/Image`` 16UC1 / 32FC1) whose
header stamp is nearest within ``--sync-slop`` (the node's pairing function,
:func:`spatialthinker_ros.core.frame_buffer.pair_frames`, given the one frame: a bag holds every
frame's depth, so the selected frame is answered, not an older one) and with the latest
CameraInfo, then
answered through the node's answering pipeline and rendered by its one JSON renderer. Results
go to ``results.jsonl`` (one line per frame, failures included with their reason) and annotated
PNGs to the output folder.

With ``--target-frame`` (and ``--gravity-frame``) the bag's own ``/tf`` and ``/tf_static`` are
read first into a transform buffer, and each frame's 3D is reported in the target frame as the
node would: the transform looked up at the frame's stamp, through the same ROS-free functions
(:mod:`spatialthinker_ros.answering.robot_frames`).

Frames are picked with ``--every N`` (every Nth colour frame) or ``--rate HZ`` (by header
stamp), and up to ``--max-batch-size`` frames are queued so the engine can batch them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from spatialthinker_ros.cli.args import (
    CommandError,
    add_engine_arguments,
    add_frame_arguments,
    options_list,
    parameter_values,
    positive_float,
    positive_int,
)
from spatialthinker_ros.cli.files import Progress, json_line, output_path, write_annotated
from spatialthinker_ros.cli.offline_pipeline import (
    answer_in_order,
    frames_for,
    render,
    render_detections,
    start_pipeline,
)
from spatialthinker_ros.core.frame_buffer import pair_frames

__all__ = ["BagFrame", "add_replay_command", "read_frames", "read_transforms", "run_replay"]

# How long (bag time) a selected colour frame waits for a depth frame recorded after it, and how
# many may wait: when depth stops partway through a bag, later frames go on without it instead
# of being kept, decoded, until the bag ends.
DEPTH_WAIT_S = 1.0
MAX_WAITING_FRAMES = 64

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
# A bag's whole TF history is kept (the buffer drops nothing older than this behind its newest).
BAG_TF_CACHE_S = 1e9


@dataclass
class BagFrame:
    """One selected colour frame, decoded, with its matched depth and intrinsics.

    Attributes:
        index: Position among the colour topic's messages (0-based).
        stamp: Header stamp in seconds.
        rgb: ``HxWx3`` uint8 RGB, or None when decoding failed (see ``error``).
        depth_m: Matched depth in metres, or None.
        depth_scale: Metres per unit of the 16-bit depth it was read from (None: metres).
        intrinsics: From the latest CameraInfo, or None.
        no_3d_reason: Why there is no depth/intrinsics ("" when both are present).
        error: Why the frame cannot be answered ("" when it can).
        header_stamp: The colour header's ``(sec, nanosec)``.
        frame_id: The colour header's ``frame_id``.
    """

    index: int
    stamp: float
    rgb: np.ndarray | None = None
    depth_m: np.ndarray | None = None
    depth_scale: float | None = None
    intrinsics: Any = None
    no_3d_reason: str = ""
    error: str = ""
    header_stamp: tuple[int, int] = (0, 0)
    frame_id: str = ""
    _raw: Any = field(default=None, repr=False)


class _DepthRecord(NamedTuple):
    """A recorded depth frame, still serialised (deserialised only when it is matched)."""

    stamp: float
    raw: bytes
    msgtype: str


def _stamp(msg: Any) -> float:
    return float(msg.header.stamp.sec) + float(msg.header.stamp.nanosec) * 1e-9


def _pick_topic(
    connections: list[Any], wanted: str | None, types: tuple[str, ...], what: str, hint: str
) -> str | None:
    """The topic to read: the one asked for (checked), else the only candidate, else None."""
    available = sorted({f"{c.topic} ({c.msgtype})" for c in connections})
    if wanted is not None:
        matching = [c for c in connections if c.topic == wanted]
        if not matching:
            raise CommandError(f"topic {wanted} not in the bag; it has: {', '.join(available)}")
        if matching[0].msgtype not in types:
            raise CommandError(
                f"{what} topic {wanted} is {matching[0].msgtype}, expected {' or '.join(types)}"
            )
        return wanted
    candidates = sorted({c.topic for c in connections if c.msgtype in types})
    candidates = [t for t in candidates if _topic_filter(t, what)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return None
    raise CommandError(f"several {what} topics ({', '.join(candidates)}); choose one with {hint}")


def _topic_filter(topic: str, what: str) -> bool:
    is_depth = "depth" in topic.lower()
    if what == "colour":
        return not is_depth
    if what == "depth":
        return is_depth and "compresseddepth" not in topic.lower()
    if what == "compressedDepth":
        # image_transport records a depth stream's PNG form as <depth topic>/compressedDepth.
        return topic.lower().endswith("compresseddepth")
    return True


def _pick_depth_topic(connections: list[Any], wanted: str | None) -> str | None:
    """The depth topic: the one asked for (a depth Image or a compressedDepth CompressedImage),
    else the only raw depth Image, else the only ``.../compressedDepth`` topic (what a robot
    records over Wi-Fi; lossless PNG, so the raw one is preferred only for speed)."""
    if wanted is not None:
        return _pick_topic(connections, wanted, (IMAGE, COMPRESSED), "depth", "--depth-topic")
    raw = _pick_topic(connections, None, (IMAGE,), "depth", "--depth-topic")
    if raw is not None:
        return raw
    return _pick_topic(connections, None, (COMPRESSED,), "compressedDepth", "--depth-topic")


def read_frames(
    bag: str | Path,
    image_topic: str | None = None,
    depth_topic: str | None = None,
    info_topic: str | None = None,
    use_depth: bool = True,
    every: int = 1,
    rate_hz: float | None = None,
    limit: int | None = None,
    sync_slop: float = 0.05,
    depth_scale: float | None = None,
    rectified: bool = False,
) -> tuple[dict[str, Any], Iterator[BagFrame]]:
    """Open a bag and return its chosen topics and an iterator over the selected frames.

    Decoding errors do not stop the iteration: the frame carries ``error`` instead.

    Returns:
        ``(info, frames)``: ``info`` names the topics and the colour message count.

    Raises:
        CommandError: Missing or unreadable bag, no colour topic, a named topic missing.
    """
    from rosbags.rosbag2 import Reader

    path = Path(bag).expanduser()
    if not path.exists():
        raise CommandError(f"bag not found: {bag}")
    reader = Reader(path)
    try:
        reader.open()
    except Exception as error:
        message = " ".join(str(error).split()) or type(error).__name__
        raise CommandError(f"cannot read bag {bag}: {message}") from None
    try:
        connections = list(reader.connections)
        colour = _pick_topic(
            connections, image_topic, (IMAGE, COMPRESSED), "colour", "--image-topic"
        )
        if colour is None:
            found = ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in connections})) or "none"
            raise CommandError(
                f"no colour image topic in the bag (topics: {found}); name one with --image-topic"
            )
        depth = _pick_depth_topic(connections, depth_topic) if use_depth else None
        info = _pick_camera_info(connections, info_topic, colour) if use_depth else None
    except BaseException:
        reader.close()
        raise
    count = sum(c.msgcount for c in connections if c.topic == colour)
    selected = (count + every - 1) // every if rate_hz is None else None
    if selected is not None and limit is not None:
        selected = min(selected, limit)
    summary = {
        "image_topic": colour,
        "depth_topic": depth,
        "camera_info_topic": info,
        "colour_messages": count,
        "selected": selected,
    }
    frames = _iterate(
        reader, colour, depth, info, every, rate_hz, limit, sync_slop, depth_scale, rectified
    )
    return summary, frames


def read_transforms(
    bag: str | Path, tf_topic: str = "/tf", tf_static_topic: str = "/tf_static"
) -> tuple[Any, dict[str, int]]:
    """Every transform a bag recorded on ``tf_topic`` and ``tf_static_topic``, in one buffer.

    Returns:
        ``(buffer, counts)``: a :class:`~spatialthinker_ros.core.transforms.TransformBuffer`;
        counts of ``messages``, ``transforms`` kept and ``refused`` (a
        broken publisher's).

    Raises:
        CommandError: The bag cannot be read, or has neither topic as a ``TFMessage``.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from spatialthinker_ros.answering.robot_frames import keep_tf_message
    from spatialthinker_ros.core.transforms import TransformBuffer

    path = Path(bag).expanduser()
    if not path.exists():
        raise CommandError(f"bag not found: {bag}")
    typestore = get_typestore(Stores.ROS2_JAZZY)
    buffer = TransformBuffer(cache_time=BAG_TF_CACHE_S)
    counts = {"messages": 0, "transforms": 0, "refused": 0}
    try:
        with Reader(path) as reader:
            static = {tf_static_topic}
            wanted = [
                c
                for c in reader.connections
                if c.topic in {tf_topic, tf_static_topic} and c.msgtype == TF_MESSAGE
            ]
            if not wanted:
                raise CommandError(
                    f"the bag has no {tf_topic} or {tf_static_topic} ({TF_MESSAGE}) to look"
                    " --target-frame/--gravity-frame up in"
                )
            for connection, _time, raw in reader.messages(connections=wanted):
                message = typestore.deserialize_cdr(raw, connection.msgtype)
                refused = keep_tf_message(buffer, message, connection.topic in static)
                counts["messages"] += 1
                counts["transforms"] += len(message.transforms) - len(refused)
                counts["refused"] += len(refused)
    except CommandError:
        raise
    except Exception as error:
        message = " ".join(str(error).split()) or type(error).__name__
        raise CommandError(f"cannot read the transforms of bag {bag}: {message}") from None
    return buffer, counts


def _pick_camera_info(connections: list[Any], wanted: str | None, colour: str) -> str | None:
    if wanted is not None:
        return _pick_topic(connections, wanted, (CAMERA_INFO,), "camera info", "")
    infos = sorted({c.topic for c in connections if c.msgtype == CAMERA_INFO})
    if len(infos) <= 1:
        return infos[0] if infos else None
    # Several cameras: the colour camera's own (same namespace), as image_transport names them.
    namespace = colour.rsplit("/", 1)[0]
    if colour.endswith("/compressed"):
        namespace = namespace.rsplit("/", 1)[0]
    own = [t for t in infos if t.rsplit("/", 1)[0] == namespace]
    if len(own) == 1:
        return own[0]
    raise CommandError(
        f"several camera_info topics ({', '.join(infos)}); choose one with --camera-info-topic"
    )


def _iterate(
    reader: Any,
    colour: str,
    depth: str | None,
    info: str | None,
    every: int,
    rate_hz: float | None,
    limit: int | None,
    sync_slop: float,
    depth_scale: float | None = None,
    rectified: bool = False,
) -> Iterator[BagFrame]:
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    wanted = [c for c in reader.connections if c.topic in {colour, depth, info}]
    # Recent depth frames, raw (deserialised only when matched); a depth frame can be recorded
    # before or after its colour frame, so selected colour frames wait in `pending` until a
    # depth frame newer than stamp + slop has been seen.
    depth_buffer: deque[_DepthRecord] = deque(maxlen=64)
    pending: deque[BagFrame] = deque()
    latest_info: list[Any] = [None]
    newest_depth = newest_colour = -np.inf
    colour_index = -1
    taken = 0
    last_taken_stamp: float | None = None

    def finish(frame: BagFrame) -> BagFrame:
        _decode_colour(frame)
        if frame.error:
            return frame
        if depth is None:
            frame.no_3d_reason = "no depth topic"
            return frame
        # The node's pairing rule, for the frame the user selected (its own stamp is "now").
        pairing = pair_frames(
            [frame], depth_buffer, frame.stamp, math.inf, sync_slop, future_tolerance=math.inf
        )
        best = pairing.depth
        if best is None:
            frame.no_3d_reason = pairing.reason
            return frame
        if latest_info[0] is None:
            frame.no_3d_reason = "no camera_info before this frame"
            return frame
        try:
            from spatialthinker_ros.core.camera import CameraIntrinsics
            from spatialthinker_ros.core.images import depth_message_to_metres

            msg = typestore.deserialize_cdr(best.raw, best.msgtype)
            frame.depth_m, frame.depth_scale = depth_message_to_metres(msg, depth_scale)
            frame.intrinsics = CameraIntrinsics.from_camera_info(
                latest_info[0], use_projection=rectified
            )
        except Exception as error:
            frame.depth_m = None
            frame.no_3d_reason = f"depth unusable: {error}"
        return frame

    try:
        for connection, _time, raw in reader.messages(connections=wanted):
            topic = connection.topic
            if topic == info:
                # A broken CameraInfo is skipped; the previous one stays.
                with contextlib.suppress(Exception):
                    latest_info[0] = typestore.deserialize_cdr(raw, connection.msgtype)
                continue
            if topic == depth:
                try:
                    msg_stamp = _stamp(typestore.deserialize_cdr(raw, connection.msgtype))
                except Exception:
                    continue
                depth_buffer.append(_DepthRecord(msg_stamp, raw, connection.msgtype))
                newest_depth = max(newest_depth, msg_stamp)
            elif topic == colour:
                colour_index += 1
                if limit is not None and taken >= limit:
                    continue
                frame = BagFrame(index=colour_index, stamp=float("nan"))
                try:
                    msg = typestore.deserialize_cdr(raw, connection.msgtype)
                    frame.stamp = _stamp(msg)
                    frame.header_stamp = (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))
                    frame.frame_id = str(msg.header.frame_id)
                    frame._raw = msg
                    newest_colour = max(newest_colour, frame.stamp)
                except Exception as error:
                    frame.error = f"cannot deserialise the message: {error}"
                if rate_hz is None:
                    keep = colour_index % every == 0
                else:
                    keep = not frame.error and (
                        last_taken_stamp is None
                        or frame.stamp >= last_taken_stamp + 1.0 / rate_hz - 1e-6
                    )
                    if keep:
                        last_taken_stamp = frame.stamp
                if keep:
                    taken += 1
                    pending.append(frame)
            while pending and (
                depth is None
                or pending[0].stamp + sync_slop < newest_depth
                or not pending[0].stamp + DEPTH_WAIT_S > newest_colour  # also a NaN stamp
                or len(pending) > MAX_WAITING_FRAMES
            ):
                yield finish(pending.popleft())
        while pending:
            yield finish(pending.popleft())
    finally:
        reader.close()


def _decode_colour(frame: BagFrame) -> None:
    from spatialthinker_ros.core import images

    msg, frame._raw = frame._raw, None
    if frame.error or msg is None:
        return
    try:
        if hasattr(msg, "format"):  # CompressedImage
            frame.rgb = images.decode_compressed_image(msg)
        else:
            frame.rgb = np.ascontiguousarray(images.image_to_rgb(msg))
    except Exception as error:
        frame.error = f"cannot decode the colour image: {' '.join(str(error).split())}"


def add_replay_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spatialthinker replay``."""
    parser = subparsers.add_parser(
        "replay",
        help="answer a question on the frames of a rosbag2 recording (JSONL + PNGs)",
        description=(
            "Read a rosbag2 recording (sqlite3 or mcap) without a ROS graph, answer QUESTION on "
            "every Nth colour frame (or at a rate by stamp), lift to 3D with the matched depth "
            "and camera_info, and write results.jsonl and annotated PNGs to --output. Frames "
            "that fail are recorded with their reason and the run goes on; the exit status is "
            "1 when any frame failed."
        ),
    )
    parser.add_argument("bag", help="rosbag2 folder (metadata.yaml + .db3 or .mcap)")
    parser.add_argument("--question", "-q", required=True)
    parser.add_argument("--options", type=options_list, default=[], help="comma-separated")
    parser.add_argument("--image-topic", help="colour topic (default: the bag's only one)")
    parser.add_argument(
        "--depth-topic",
        help="depth topic: an Image (16UC1/32FC1) or a compressedDepth CompressedImage"
        " (default: the only *depth* Image, else the only .../compressedDepth topic)",
    )
    parser.add_argument("--camera-info-topic", help="CameraInfo topic (default: the colour's)")
    parser.add_argument("--no-depth", action="store_true", help="answer in 2D only")
    select = parser.add_mutually_exclusive_group()
    select.add_argument("--every", type=positive_int, default=1, help="every Nth colour frame")
    select.add_argument("--rate", type=positive_float, help="frames per second of bag time")
    parser.add_argument("--limit", type=positive_int, help="stop after this many frames")
    parser.add_argument(
        "--sync-slop", type=float, default=0.05, help="largest colour/depth stamp gap, seconds"
    )
    parser.add_argument("--tf-topic", default="/tf", help="the bag's TF topic")
    parser.add_argument("--tf-static-topic", default="/tf_static", help="its static TF topic")
    parser.add_argument("--output", default="out/replay", help="output folder")
    parser.add_argument("--no-annotate", action="store_true", help="do not write PNGs")
    parser.add_argument(
        "--detections",
        action="store_true",
        help="also write detections.jsonl: per frame, the node's ~/detections_3d and"
        " ~/detections_2d (vision_msgs fields)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_engine_arguments(parser)
    add_frame_arguments(parser)
    parser.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """``spatialthinker replay``: see :func:`add_replay_command`."""
    if not args.question.strip():
        raise CommandError("--question is empty")
    values = parameter_values(args)
    # Open the bag and check the topics before loading the model.
    summary, frames = read_frames(
        args.bag,
        image_topic=args.image_topic,
        depth_topic=args.depth_topic,
        info_topic=args.camera_info_topic,
        use_depth=not args.no_depth,
        every=args.every,
        rate_hz=args.rate,
        limit=args.limit,
        sync_slop=args.sync_slop,
        depth_scale=values["depth.scale"],
        rectified=values["camera.rectified"],
    )
    target_frame, gravity_frame = values["target_frame"], values["gravity_frame"]
    transforms = None
    if target_frame or gravity_frame:
        transforms, tf_counts = read_transforms(args.bag, args.tf_topic, args.tf_static_topic)
    results_path = output_path(args.output, "results.jsonl")
    progress = Progress(total=summary["selected"], quiet=args.quiet)
    if not args.quiet:
        depth_text = summary["depth_topic"] or "none"
        print(
            f"replay: {summary['image_topic']} ({summary['colour_messages']} frames), depth "
            f"{depth_text}, camera_info {summary['camera_info_topic'] or 'none'}",
            file=sys.stderr,
            flush=True,
        )
        if transforms is not None:
            frames_named = ", ".join(transforms.frames()[:12])
            print(
                f"replay: {tf_counts['transforms']} transforms from {tf_counts['messages']} TF"
                f" messages ({tf_counts['refused']} refused); frames: {frames_named}",
                file=sys.stderr,
                flush=True,
            )
    answered = failed = 0
    pipeline = start_pipeline(values)

    from spatialthinker_ros.answering.robot_frames import FrameRequest, look_up

    def submit(frame: BagFrame) -> Any:
        if frame.error:
            return None
        frames = _frames(frame, args.no_depth)
        if transforms is not None:
            # The node's lookup at the image's stamp; a missing transform: camera frame + warning.
            request = FrameRequest.of(frame.frame_id, target_frame, gravity_frame)
            frames = look_up(transforms, request, frame.stamp).applied_to(frames)
        return pipeline.submit(
            frames, args.question, args.options, request_id=f"frame-{frame.index}"
        )

    detections_out = None
    if args.detections:
        detections_out = output_path(args.output, "detections.jsonl").open("w", encoding="utf-8")

    def finish(frame: BagFrame, handle: Any) -> None:
        nonlocal answered, failed
        record, detections = _answer_frame(frame, handle, args)
        if detections_out is not None and detections is not None:
            detections_out.write(json_line(detections))
            detections_out.flush()
        if "error" in record:
            failed += 1
            progress.step(f"frame {frame.index}: FAILED: {record['error']}")
        else:
            answered += 1
            progress.step(f"frame {frame.index} (stamp {frame.stamp:.3f}): {record['answer']!r}")
        out.write(json_line(record))
        out.flush()

    try:
        with results_path.open("w", encoding="utf-8") as out:
            answer_in_order(pipeline, frames, submit, finish)
    finally:
        if detections_out is not None:
            detections_out.close()
    total = answered + failed
    print(
        f"replay: {total} frames, {answered} answered, {failed} failed; results in {results_path}",
        file=sys.stderr,
    )
    if total == 0:
        raise CommandError("no frames selected from the bag")
    return 1 if failed else 0


def _frames(frame: BagFrame, no_depth: bool) -> Any:
    """What the request sees of one bag frame (2D only, without a reason, under --no-depth)."""
    return frames_for(
        frame.rgb,
        frame.depth_m,
        frame.intrinsics,
        frame.depth_scale,
        "" if no_depth else frame.no_3d_reason,
    )


def _answer_frame(
    frame: BagFrame, handle: Any, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The frame's results line, and its detections line (None: failed, or not asked for)."""
    from spatialthinker_ros.core.engine import RequestFailed

    base: dict[str, Any] = {"frame": frame.index, "stamp": frame.stamp}
    if frame.error:
        return {**base, "error": frame.error}, None
    try:
        answer = handle.result()
    except RequestFailed as failed:
        return {**base, "error": f"the model did not answer: {failed.reason}"}, None
    record = {**base, **render(answer, frame.header_stamp, frame.frame_id)}
    if not args.no_annotate:
        path = write_annotated(args.output, f"frame_{frame.index:06d}.png", frame.rgb, record)
        record["annotated"] = path.name
    detections = None
    if args.detections:
        detections = {**base, **render_detections(answer, frame.header_stamp, frame.frame_id)}
    return record, detections
