"""Tests of ``spatialthinker replay`` on bags written here with ``rosbags`` (sqlite3 and mcap)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from node_harness import scripted_reply
from recorded_camera import (
    COMPRESSED_T,
    IMAGE_T,
    INFO_T,
    TF_T,
    TYPESTORE,
    camera_info_message,
    compressed_depth_message,
    image_message,
    tf_message,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from scipy.spatial.transform import Rotation
from scripted_openai_server import ScriptedOpenAIServer

from spatialthinker_ros.cli import main as cli
from spatialthinker_ros.core.synthetic_scene import demo_scene

COLOUR, DEPTH, INFO = "/cam/color/image_raw", "/cam/depth/image_raw", "/cam/color/camera_info"
# Where image_transport's compressed_depth plugin publishes (and a bag records) DEPTH.
COMPRESSED_DEPTH = DEPTH + "/compressedDepth"
STORAGE = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def write_bag(
    path: Path,
    storage: str = "sqlite3",
    frames: int = 5,
    broken: tuple[int, ...] = (),
    topics: tuple[str, ...] = (COLOUR, DEPTH, INFO),
    garbage: tuple[int, ...] = (),
    depth_frames: int | None = None,
    compressed_depth: bool = False,
    robot_tf: bool = False,
) -> Path:
    """A 10 Hz RGB-D recording of the demo scene; colour frames in ``broken`` are truncated,
    those in ``garbage`` are not CDR at all; depth stops after ``depth_frames`` frames; with
    ``compressed_depth`` depth is recorded only as its compressedDepth topic; with ``robot_tf``
    the robot's /tf_static and 50 Hz /tf (:func:`robot_links`) are recorded too."""
    scene = demo_scene()
    with Writer(path, version=9, storage_plugin=STORAGE[storage]) as writer:
        types = {INFO: INFO_T, DEPTH: COMPRESSED_T if compressed_depth else IMAGE_T}
        conns = {
            topic: writer.add_connection(
                COMPRESSED_DEPTH if topic == DEPTH and compressed_depth else topic,
                types.get(topic, IMAGE_T),
                typestore=TYPESTORE,
            )
            for topic in topics
        }
        if robot_tf:
            static = writer.add_connection("/tf_static", TF_T, typestore=TYPESTORE)
            dynamic = writer.add_connection("/tf", TF_T, typestore=TYPESTORE)
            static_links, odom_link = robot_links()
            raw = TYPESTORE.serialize_cdr(tf_message(99.0, static_links), TF_T)
            writer.write(static, int(99.0 * 1e9), raw)
            for k in range(int((0.1 * frames + 0.2) * 50)):
                t = 99.9 + 0.02 * k
                raw = TYPESTORE.serialize_cdr(tf_message(t, [odom_link(t)]), TF_T)
                writer.write(dynamic, int(t * 1e9) - 1, raw)
        for i in range(frames):
            t = 100.0 + 0.1 * i
            messages = {
                COLOUR: image_message(t, scene.rgb, "rgb8", broken=i in broken),
                DEPTH: (
                    compressed_depth_message(t + 0.002, scene.depth_mm)
                    if compressed_depth
                    else image_message(t + 0.002, scene.depth_mm, "16UC1")
                ),
                INFO: camera_info_message(t, scene),
            }
            # Depth recorded before colour on odd frames: matching must not depend on order.
            order = [INFO, DEPTH, COLOUR] if i % 2 else [INFO, COLOUR, DEPTH]
            if depth_frames is not None and i >= depth_frames:
                order.remove(DEPTH)
            for topic in order:
                if topic in conns:
                    raw = TYPESTORE.serialize_cdr(messages[topic], conns[topic].msgtype)
                    if topic == COLOUR and i in garbage:
                        raw = b"\x00\x01\x00\x00 not an image"
                    writer.write(conns[topic], int(t * 1e9) + order.index(topic), raw)
    return path


# The recorded robot: its camera ("cam", the images' frame) 1.2 m above base_link, pitched 30 deg
# down; base_link driving along odom's x at 1 m/s while turning at 0.5 rad/s.
CAMERA_IN_BASE = Rotation.from_euler("y", 30, degrees=True) * Rotation.from_matrix(
    [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # optical axes (x right, y down, z ahead) in the body's
)
CAMERA_XYZ = (0.1, 0.0, 1.2)


def _base_in_odom(t: float) -> tuple[Rotation, np.ndarray]:
    return Rotation.from_euler("z", 0.5 * (t - 100.0)), np.array([t - 100.0, 0.0, 0.0])


def robot_links() -> tuple[list, object]:
    """The static links (base_link -> cam) and odom -> base_link at a time, as tf_message takes
    them."""
    static = [("base_link", "cam", CAMERA_XYZ, tuple(CAMERA_IN_BASE.as_quat()))]

    def odom_link(t: float) -> tuple:
        rotation, xyz = _base_in_odom(t)
        return ("odom", "base_link", tuple(xyz), tuple(rotation.as_quat()))

    return static, odom_link


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replay_every_nth_frame_with_the_tiny_model(
    capsys: pytest.CaptureFixture, tiny_model_dir: Path, tmp_path: Path, storage: str
) -> None:
    bag = write_bag(tmp_path / "bag", storage)
    out_dir = tmp_path / "out"
    argv = ["replay", str(bag), "-q", "Is the red box in front?", "--options", "front,behind"]
    argv += ["--every", "2", "--output", str(out_dir), "--model", str(tiny_model_dir)]
    code, _, err = _run(capsys, [*argv, "--max-new-tokens", "16"])
    assert code == 0, err
    records = _records(out_dir)
    assert [r["frame"] for r in records] == [0, 2, 4]
    assert [r["stamp"] for r in records] == pytest.approx([100.0, 100.2, 100.4])
    assert all(r["model"] == str(tiny_model_dir) and "error" not in r for r in records)
    assert sorted(p.name for p in out_dir.glob("*.png")) == [
        "frame_000000.png",
        "frame_000002.png",
        "frame_000004.png",
    ]
    # Progress: one line per frame with a count, then a summary.
    assert "[3/3] frame 4" in err
    assert "3 frames, 3 answered, 0 failed" in err


def test_replay_lifts_to_3d_keeps_going_past_a_bad_frame(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    scene = demo_scene()
    bag = write_bag(tmp_path / "bag", "mcap", frames=6, broken=(2,))
    with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
        argv = ["replay", str(bag), "-q", "Is the red box in front?", "--rate", "10"]
        argv += ["--output", str(tmp_path / "out"), "--backend", "openai"]
        argv += ["--openai-base-url", server.base_url, "--no-annotate", "--max-batch-size", "2"]
        code, _, err = _run(capsys, argv)
    assert code == 1  # one frame failed; the others were answered
    records = _records(tmp_path / "out")
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert "shorter than step * height" in records[2]["error"]
    assert "frame 2: FAILED" in err and "6 frames, 5 answered, 1 failed" in err
    for record in records[:2] + records[3:]:
        red = next(o for o in record["objects"] if o["id"] == "red_box.1")
        assert red["has_3d"]
        assert red["center"][2] == pytest.approx(scene.objects[0].center[2], abs=0.06)
        # The scripted claims are true of the scene: the depth check confirms them.
        assert [r["verdict"] for r in record["relations"]] == ["consistent", "consistent"]
        assert record["relations_contradicted"] == 0
    assert not list((tmp_path / "out").glob("*.png"))


def test_replay_lifts_from_a_compressed_depth_topic(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # A robot recording over Wi-Fi keeps only <depth>/compressedDepth: replay finds it on its
    # own and lifts to the same 3D as from raw depth (the PNG is lossless).
    scene = demo_scene()
    centres = []
    for compressed in (False, True):
        bag = write_bag(tmp_path / f"bag{compressed}", frames=2, compressed_depth=compressed)
        out = tmp_path / f"out{compressed}"
        with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
            argv = ["replay", str(bag), "-q", "Is the red box in front?", "--output", str(out)]
            argv += ["--backend", "openai", "--openai-base-url", server.base_url, "--no-annotate"]
            code, _, err = _run(capsys, argv)
        assert code == 0, err
        assert (COMPRESSED_DEPTH if compressed else DEPTH) in err
        red = [next(o for o in r["objects"] if o["id"] == "red_box.1") for r in _records(out)]
        assert all(o["has_3d"] for o in red), red
        centres.append([o["center"] for o in red])
    assert centres[1] == centres[0]
    assert centres[1][0][2] == pytest.approx(scene.objects[0].center[2], abs=0.06)


def test_replay_rate_selects_by_stamp(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "bag", "sqlite3", frames=6, topics=(COLOUR,))
    with ScriptedOpenAIServer() as server:
        argv = ["replay", str(bag), "-q", "q", "--rate", "4", "--output", str(tmp_path / "o")]
        argv += ["--backend", "openai", "--openai-base-url", server.base_url, "--quiet"]
        code, _, err = _run(capsys, argv)
    assert code == 0, err
    records = _records(tmp_path / "o")
    # 10 Hz recording at 4 Hz: stamps 100.0, 100.3 (>= 0.25 s apart), then 100.6 ... none left.
    assert [r["frame"] for r in records] == [0, 3]
    assert all(o["no_3d_reason"] == "no depth topic" for r in records for o in r["objects"])


@pytest.mark.parametrize(
    ("make_bag", "extra", "expected"),
    [
        (lambda d: d / "missing", [], "bag not found"),
        (lambda d: write_bag(d / "b", topics=(INFO,)), [], "no colour image topic"),
        (lambda d: write_bag(d / "b", "mcap"), ["--image-topic", "/nope"], "topic /nope not in"),
        (lambda d: write_bag(d / "b"), ["--depth-topic", INFO], "is sensor_msgs/msg/CameraInfo"),
        (lambda d: (d / "x.db3").write_bytes(b"garbage") and d / "x.db3", [], "cannot read bag"),
    ],
)
def test_replay_bad_input_is_one_line_and_non_zero(
    capsys: pytest.CaptureFixture, tmp_path: Path, make_bag, extra: list[str], expected: str
) -> None:
    bag = make_bag(tmp_path)
    code, out, err = _run(capsys, ["replay", str(bag), "-q", "q", *extra, "--model", "/nope"])
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("spatialthinker: error:"), err
    assert expected in err


def _strict_records(folder: Path) -> list[dict]:
    def refuse(constant: str) -> None:
        raise ValueError(f"bare {constant} is not JSON")

    lines = (folder / "results.jsonl").read_text().splitlines()
    return [json.loads(line, parse_constant=refuse) for line in lines]


def test_replay_results_are_strict_json(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    # Issue 17, Medium 8: a colour message that cannot be deserialised has no stamp; it was
    # written as a bare NaN, which strict JSON readers reject.
    bag = write_bag(tmp_path / "bag", "sqlite3", frames=3, topics=(COLOUR,), garbage=(1,))
    with ScriptedOpenAIServer(default_reply=scripted_reply(demo_scene())) as server:
        argv = ["replay", str(bag), "-q", "Is the red box in front?", "--no-annotate"]
        argv += ["--output", str(tmp_path / "out"), "--backend", "openai"]
        code, _, _ = _run(capsys, [*argv, "--openai-base-url", server.base_url])
    assert code == 1
    records = _strict_records(tmp_path / "out")
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert records[1]["stamp"] is None and "cannot deserialise" in records[1]["error"]


def test_replay_does_not_keep_frames_when_depth_stops(tmp_path: Path, monkeypatch) -> None:
    # Issue 17, Medium 8: depth stops after 5 of 60 frames; every later colour frame was kept
    # (decoded) until the bag ended. Frames must go on without depth as the bag is read.
    from rosbags.rosbag2 import Reader

    from spatialthinker_ros.cli.replay import read_frames

    bag = write_bag(tmp_path / "bag", "sqlite3", frames=60, depth_frames=5)
    read = [0]
    messages = Reader.messages

    def counting(self, *args, **kwargs):
        for item in messages(self, *args, **kwargs):
            read[0] += 1
            yield item

    monkeypatch.setattr(Reader, "messages", counting)
    _, frames = read_frames(bag)
    total = 60 + 60 + 5  # colour and camera_info every frame, depth for the first 5
    read_when_yielded = {}
    for frame in frames:
        read_when_yielded[frame.index] = read[0]
        assert frame.depth_m is None or frame.index < 5
    assert len(read_when_yielded) == 60
    # Frame 30 leaves about a second of bag time (10 frames) after it was read, not at the end.
    assert read_when_yielded[30] <= 2 * 42 + 5 < total
    assert read_when_yielded[59] == total


def test_replay_reports_3d_in_a_target_frame_from_the_bags_own_tf(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # A moving robot's bag: each frame's objects land in odom where the robot was at that
    # frame's stamp (the transform interpolated between /tf samples), not where it was last.
    scene = demo_scene()
    bag = write_bag(tmp_path / "bag", "mcap", frames=4, robot_tf=True)
    records = {}
    with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
        for name, frames in {
            "camera": [],
            "odom": ["--target-frame", "odom", "--gravity-frame", "base_link"],
            "missing": ["--target-frame", "map"],
        }.items():
            argv = ["replay", str(bag), "-q", "Is the red box in front?", *frames]
            argv += ["--output", str(tmp_path / name), "--backend", "openai", "--no-annotate"]
            code, _, err = _run(capsys, [*argv, "--openai-base-url", server.base_url])
            assert code == 0, err
            records[name] = _records(tmp_path / name)
    assert "transforms from" in err
    for camera, odom, missing in zip(*records.values(), strict=True):
        assert camera["frame_id"] == "cam" and odom["frame_id"] == "odom"
        stamp = odom["stamp"]
        base_rotation, base_xyz = _base_in_odom(stamp)
        rotation = base_rotation * CAMERA_IN_BASE
        xyz = base_rotation.apply(CAMERA_XYZ) + base_xyz
        for seen, reference in zip(odom["objects"], camera["objects"], strict=True):
            assert seen["has_3d"], seen
            for key in ("center", "surface"):
                truth = rotation.apply(reference[key]) + xyz
                np.testing.assert_allclose(seen[key], truth, atol=1e-3)
            assert seen["size"] == reference["size"]
            turned = Rotation.from_quat(seen["orientation"])
            assert (turned.inv() * rotation).magnitude() < 1e-3  # 4 decimals in JSON
        # Up from TF: base_link's z seen from the camera (as published, in the camera frame's
        # rotation to odom: odom's z, base_link being level).
        assert odom["up_source"] == "tf:base_link"
        np.testing.assert_allclose(odom["up"], [0.0, 0.0, 1.0], atol=1e-4)
        # A frame the bag's TF does not have: the camera frame, and a warning naming the link.
        assert missing["frame_id"] == "cam"
        assert [o["center"] for o in missing["objects"]] == [o["center"] for o in camera["objects"]]
        assert any(w.startswith("no transform from 'cam' to 'map'") for w in missing["warnings"])


def test_replay_target_frame_needs_tf_in_the_bag(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    bag = write_bag(tmp_path / "bag", frames=1)
    argv = ["replay", str(bag), "-q", "Where?", "--target-frame", "odom"]
    code, _, err = _run(capsys, [*argv, "--output", str(tmp_path / "out")])
    assert code == 2
    assert "the bag has no /tf or /tf_static" in err


def test_replay_writes_the_nodes_detections_per_frame(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    bag = write_bag(tmp_path / "bag", frames=3)
    with ScriptedOpenAIServer(default_reply=scripted_reply(demo_scene())) as server:
        argv = ["replay", str(bag), "-q", "Is the red box in front?", "--detections"]
        argv += ["--output", str(tmp_path / "out"), "--backend", "openai", "--no-annotate"]
        code, _, err = _run(capsys, [*argv, "--openai-base-url", server.base_url])
    assert code == 0, err
    records = _records(tmp_path / "out")
    lines = (tmp_path / "out" / "detections.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 3
    for record, line in zip(records, lines, strict=True):
        detections = json.loads(line)
        assert detections["frame"] == record["frame"]
        array = detections["detections_3d"]
        assert array["header"]["frame_id"] == "cam" == record["frame_id"]
        stamp = array["header"]["stamp"]
        assert stamp["sec"] + stamp["nanosec"] * 1e-9 == pytest.approx(record["stamp"])
        ids = [d["id"] for d in array["detections"]]
        assert ids == [o["id"] for o in record["objects"] if o["has_3d"]] and ids
