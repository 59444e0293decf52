#!/usr/bin/env python3
"""`make demo`: run spatialthinker_node end to end on the bundled RGB-D sample (or your own).

Starts the node (``python -m spatialthinker_ros.ros.node`` with the package's parameter file and
the chosen model), plays the sample (samples/, or the folder ``--sample DIR`` names, laid out
as :func:`spatialthinker_ros.cli.sample_data.load_sample` says) as a camera would (colour, 16UC1
depth and CameraInfo, fresh stamps, sensor-data QoS), asks the sample's question through
``~/query`` as a planner would, prints the answer, the chosen option and the scene graph with
3D positions, and writes ``answer.json`` (the one JSON rendering of the node's answer,
:mod:`spatialthinker_ros.ros.answer_json`) and ``annotated.png`` to the output folder. The node's
log (model download progress included) streams through.

Exit status: 0 answered, 2 the model could not be loaded (with how to pass a local directory),
1 anything else (one line saying what).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from spatialthinker_ros.cli.node_process import NodeProcess
from spatialthinker_ros.core.backends import BACKEND_NAMES
from spatialthinker_ros.ros.fastdds import PROFILE_VARIABLES, set_default_profile

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spatialthinker_ros"
PARAMS_FILE = PACKAGE / "config" / "spatialthinker.yaml"
FASTDDS_PROFILE = PACKAGE / "config" / "fastdds_large_images.xml"
DEFAULT_MODEL = "OX-PIXL/SpatialThinker-7B"
NODE = "/spatialthinker"
TOPICS = {
    "image": "/demo_cam/color/image_raw",
    "depth": "/demo_cam/aligned_depth_to_color/image_raw",
    "camera_info": "/demo_cam/color/camera_info",
}
PROG = "demo"


class DemoError(Exception):
    """A failure to report as one line (``code`` is the exit status)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _local_dir_hint(model: str) -> str:
    # This venv's CLI (.venv-jazzy or .venv-kilted, whichever runs the demo).
    cli = os.path.relpath(Path(sys.prefix) / "bin" / "spatialthinker")
    if Path(model).expanduser().is_dir():
        return (
            f"{model!r} is not a usable model directory: it must hold config.json, the weights "
            "and the processor files of SpatialThinker-7B (or of a tiny model from "
            f"`{cli} tiny-model DIR`)."
        )
    return (
        f"The model {model!r} could not be fetched or found (no network, or not in the Hugging "
        "Face cache). Pass a local directory holding the model instead, e.g.\n"
        "    make demo MODEL=/path/to/SpatialThinker-7B\n"
        "or, for a no-download smoke run with a tiny random model:\n"
        f"    {cli} tiny-model models/tiny && make demo MODEL=models/tiny"
    )


def check_model(model: str) -> None:
    """Fail fast, before starting ROS, when the model can certainly not be loaded.

    A local directory must exist. A hub id must be in the cache, or the hub must answer
    (a short probe; ``HF_HUB_OFFLINE=1`` means it cannot).

    Raises:
        DemoError: With code 2 and the hint how to pass a local directory.
    """
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or model.startswith((".", "~")) or path.exists()
    if looks_local or model.count("/") != 1:
        if not path.is_dir():
            raise DemoError(
                f"model directory {model!r} does not exist.\n" + _local_dir_hint(model), 2
            )
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:
        cached = None
    if isinstance(cached, str):
        return  # in the cache: the node loads it without the network
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise DemoError(
            "HF_HUB_OFFLINE is set and the model is not cached.\n" + _local_dir_hint(model), 2
        )
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        get_hf_file_metadata(hf_hub_url(model, "config.json"), timeout=10)
    except Exception as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise DemoError(
            f"cannot reach the Hugging Face hub ({reason}).\n" + _local_dir_hint(model), 2
        ) from None


def demo_environment() -> dict[str, str]:
    """The environment of this process and the node: local discovery, own domain, big frames."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    # Without the large shared-memory profile most 640x480 frames are lost between processes;
    # Jazzy's Fast DDS reads it from FASTRTPS_..., Kilted's from FASTDDS_...: both are named.
    set_default_profile(env, FASTDDS_PROFILE)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not env.get("AMENT_PREFIX_PATH"):
        env["AMENT_PREFIX_PATH"] = str(Path(sys.prefix))
    return env


def start_node(args: argparse.Namespace, env: dict[str, str]) -> NodeProcess:
    """spatialthinker_node with the package's parameter file, the chosen model and backend and
    the ``--param`` overrides, listening to the sample camera; its log streams through."""
    overrides = [f"model:={args.model}", f"backend:={args.backend}"]
    if args.max_new_tokens:
        overrides.append(f"max_new_tokens:={args.max_new_tokens}")
    return NodeProcess(
        remaps=TOPICS,
        env=env,
        params_files=[PARAMS_FILE],
        overrides=[*overrides, *args.param],
        echo=None if args.quiet else sys.stdout.buffer,
    )


class Camera:
    """Publishes the sample frames in a loop with fresh stamps, as a driver would."""

    def __init__(self, node: Any, sample: Any, rate_hz: float = 10.0) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image

        from spatialthinker_ros.core.images import numpy_to_image

        self.node = node
        self.frame_id = "demo_cam_color_optical_frame"
        self._pubs = {
            name: node.create_publisher(kind, topic, qos_profile_sensor_data)
            for (name, topic), kind in zip(TOPICS.items(), (Image, Image, CameraInfo), strict=True)
        }
        self._frames = [
            (numpy_to_image(f.rgb, "rgb8"), numpy_to_image(f.depth_mm, "16UC1"))
            for f in sample.frames
        ]
        self.sample = sample
        k = sample.intrinsics
        # Frames of your own may come with their lens distortion; the node undoes it.
        model = k.distortion_model or "plumb_bob"
        info = CameraInfo(width=k.width, height=k.height, distortion_model=model)
        info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
        info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.d = [float(v) for v in k.distortion] or [0.0] * 5
        self._info = info
        self.sent: dict[tuple[int, int], int] = {}  # stamp -> frame index, to find the answer's
        self._count = 0
        node.create_timer(1.0 / rate_hz, self._publish)

    def _publish(self) -> None:
        index = self._count % len(self._frames)
        self._count += 1
        stamp = self.node.get_clock().now().to_msg()
        self.sent[(stamp.sec, stamp.nanosec)] = index
        colour, depth = self._frames[index]
        for msg, name in ((colour, "image"), (depth, "depth"), (self._info, "camera_info")):
            msg.header.stamp = stamp
            msg.header.frame_id = self.frame_id
            self._pubs[name].publish(msg)


def start_ros(context: Any) -> tuple[Any, Any, threading.Thread]:
    """The demo's node, spun by one executor thread: ``(node, executor, spinner)``.

    One thread runs every callback (the camera, the responses; the main thread only waits), so
    joining it at the end proves that none is running when the node is destroyed
    (:func:`stop_ros`); a thread pool's callbacks could still be running after its executor
    was shut down.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("spatialthinker_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    return node, executor, spinner


def stop_ros(
    executor: Any, spinner: threading.Thread, node: Any, context: Any, calls: list[tuple[Any, Any]]
) -> None:
    """Tear this process's ROS side down in the one safe order.

    Destroying the node while one of its callbacks still runs (the camera's timer publishing)
    makes that callback raise "cannot use Destroyable because destruction was requested", and
    rclpy prints it as "The following exception was never retrieved" after a successful run.
    So: stop the executor and wait for its thread (one thread: once it has returned, no callback
    runs), cancel the calls still waiting for a response, then destroy the node and shut down.

    Args:
        executor: The executor spinning ``node`` (:func:`start_ros`).
        spinner: The thread running ``executor.spin``.
        node: The demo's node.
        context: Its rclpy context.
        calls: ``(client, future)`` of every service call made.
    """
    import rclpy

    executor.shutdown()
    spinner.join(10.0)
    for client, future in calls:
        if not future.done():
            client.remove_pending_request(future)
            future.cancel()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def print_answer(data: dict[str, Any]) -> None:
    """The human-readable summary."""
    options = ", ".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(data["options"]))
    lines = [
        "",
        "=" * 72,
        f"Question: {data['question']}",
        f"Options:  {options}",
        f"Answer:   {data['answer'] or '(none)'}",
        f"Choice:   {data['choice'] or '(no option identified)'}",
        f"Scene graph ({len(data['objects'])} objects, camera optical frame, metres):",
    ]
    for o in data["objects"]:
        box = ", ".join(f"{v:.0f}" for v in o["bbox"])
        if o["has_3d"]:
            x, y, z = o["center"]
            where = f"at ({x:+.2f}, {y:+.2f}, {z:+.2f}), {o['distance']:.2f} m away"
        else:
            where = f"no 3D: {o.get('no_3d_reason') or 'unknown'}"
        lines.append(f"  {o['id']:<20} box [{box}]  {where}")
    for r in data["relations"]:
        lines.append(f"  {r['subject']} {r['predicate']} {r['object']}: {r['verdict']}")
        if r["evidence"]:
            lines.append(f"      {r['evidence']}")
    if data["warnings"]:
        lines.append(f"Warnings: {'; '.join(data['warnings'][:5])}")
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)


def run(args: argparse.Namespace) -> int:
    """The demo; raises DemoError for the expected failures."""
    from spatialthinker_ros.cli.sample_data import SAMPLE_DIR, load_sample

    sample_dir = Path(args.sample) if args.sample else SAMPLE_DIR
    try:
        sample = load_sample(sample_dir)
    except (FileNotFoundError, ValueError) as error:
        if args.sample:
            raise DemoError(f"sample {args.sample} unusable: {error}") from None
        raise DemoError(
            f"bundled sample unusable: {error} (regenerate: scripts/make_sample.py)"
        ) from None
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if args.backend == "transformers":
        check_model(args.model)

    env = demo_environment()
    # This process talks to the node too: same discovery, domain and profile. (On Kilted only
    # the new profile variable is set: the old one would be logged as deprecated.)
    shared = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", *PROFILE_VARIABLES)
    os.environ.update({k: env[k] for k in (*shared, "AMENT_PREFIX_PATH") if k in env})
    print(
        f"{PROG}: starting spatialthinker_node with model {args.model} "
        f"(ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})",
        flush=True,
    )
    node_process = start_node(args, env)

    import rclpy
    from lifecycle_msgs.srv import GetState

    from spatialthinker_msgs.srv import Query
    from spatialthinker_ros.ros.answer_json import answer_to_json

    context = rclpy.Context()
    rclpy.init(context=context)
    node, executor, spinner = start_ros(context)
    calls: list[tuple[Any, Any]] = []  # every service call, cancelled if still waiting at the end
    try:
        camera = Camera(node, sample)
        get_state = node.create_client(GetState, f"{NODE}/get_state")
        query = node.create_client(Query, f"{NODE}/query")
        deadline = time.monotonic() + args.timeout

        def check_alive() -> None:
            reason = node_process.configure_failure()
            if reason is not None:
                not_found = any(
                    key in reason
                    for key in (
                        "not in the local Hugging Face cache",
                        "does not exist",
                        "could not load model",
                    )
                )
                if not_found:
                    raise DemoError(
                        f"the node could not load the model: {reason}\n"
                        + _local_dir_hint(args.model),
                        2,
                    )
                raise DemoError(f"the node could not start: {reason}")
            if node_process.process.poll() is not None:
                raise DemoError(
                    f"the node exited (status {node_process.process.returncode}); see its log above"
                )
            if time.monotonic() > deadline:
                raise DemoError(f"no answer within {args.timeout:.0f} s (--timeout)")

        # Wait for "active": configure loads (maybe downloads) the model first.
        while True:
            check_alive()
            if get_state.service_is_ready():
                future = get_state.call_async(GetState.Request())
                calls.append((get_state, future))
                waited = time.monotonic() + 2.0
                while not future.done() and time.monotonic() < waited:
                    time.sleep(0.05)
                if future.done() and future.result().current_state.label == "active":
                    break
            time.sleep(0.2)
        print(f"{PROG}: node active; playing the sample and asking", flush=True)
        time.sleep(0.5)  # let a few frames arrive

        request = Query.Request(question=sample.question, options=sample.options)
        request.timeout = float(max(1.0, deadline - time.monotonic()))
        response = None
        while response is None or (
            not response.success and "frame" in response.message and time.monotonic() < deadline
        ):
            check_alive()
            future = query.call_async(request)
            calls.append((query, future))
            while not future.done():
                check_alive()
                time.sleep(0.05)
            response = future.result()
            if not response.success:
                time.sleep(0.5)  # no frame yet: the camera needs another moment
        if not response.success:
            raise DemoError(f"the node did not answer: {response.message}")
        data = answer_to_json(response.answer)
        data["expected_choice"] = sample.answer or None
        stamp = (response.answer.header.stamp.sec, response.answer.header.stamp.nanosec)
        frame = sample.frames[camera.sent.get(stamp, 0)]
    finally:
        stop_ros(executor, spinner, node, context, calls)
        node_process.stop()

    from spatialthinker_ros.cli.files import write_annotated, write_json

    print_answer(data)
    json_path = write_json(output, "answer.json", data)
    png_path = write_annotated(output, "annotated.png", frame.rgb, data)
    print(f"{PROG}: wrote {json_path} and {png_path}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local directory")
    parser.add_argument("--backend", default=BACKEND_NAMES[0], choices=BACKEND_NAMES)
    parser.add_argument(
        "--output", default="out/demo", help="folder for answer.json, annotated.png"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds for loading (downloading) the model and answering",
    )
    parser.add_argument("--max-new-tokens", type=int, help="override the node's max_new_tokens")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="another node parameter, e.g. device:=cpu or openai.base_url:=http://host:8000/v1",
    )
    parser.add_argument(
        "--sample",
        metavar="DIR",
        help="folder of RGB-D frames with a scene.json (question, options, camera_info, frames;"
        " see README) to play instead of the bundled samples/",
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo the node's log")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DemoError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line, never a traceback
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{PROG}: error: {type(error).__name__}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
