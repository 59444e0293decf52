"""One pipeline: ``ask``, ``replay``, the node and the demo answer a real frame identically.

The TUM fr3 office frame (``data/real_rgbd/tum_fr3_office``: colour, 16-bit depth in TUM's
1/5000 m, camera_info) goes to the same scripted model (the OpenAI-compatible test server
answering with the frame's hand-drawn boxes, ids and relations from its ``scene.json``) four
ways: as files (``spatialthinker ask``), as a rosbag2 recording (``spatialthinker replay``), over
DDS to the running node (``~/query``), and through ``scripts/demo.py --sample DIR`` (which starts a
node of its own). Every way renders its answer with the one renderer
(:func:`spatialthinker_ros.ros.answer_json.answer_to_json`), so the answer, the choice, every
object's 3D and the relations' verdicts must be equal exactly, not within a tolerance: the
colour, the depth values and the intrinsics are the same numbers whichever way they travel.
Two cheaper cases hold ``ask``'s files to the rules of the messages ``replay`` reads: a
camera_info with a region of interest, and float depth (metres whatever depth.scale says).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from demo_runner import run_demo
from node_harness import Rig, running_node, spatialthinker_reply
from real_rgbd import REAL_RGBD_DIR, load_real_frames
from recorded_camera import IMAGE_T, INFO_T, TYPESTORE, camera_info_message, image_message
from rosbags.rosbag2 import StoragePlugin, Writer
from scripted_openai_server import ScriptedOpenAIServer

from spatialthinker_ros.cli import main as cli
from spatialthinker_ros.cli.files import load_rgb
from spatialthinker_ros.core.synthetic_scene import SyntheticScene

FOLDER = REAL_RGBD_DIR / "tum_fr3_office"
SCENE = json.loads((FOLDER / "scene.json").read_text(encoding="utf-8"))
FRAME = next(f for f in load_real_frames() if f.name == "tum_fr3_office/1")
SCALE = SCENE["depth_scale_m"]  # 0.0002: TUM's 1/5000 m
INFO_YAML = SCENE["camera_info"]
MODEL = "spatialthinker-test"

# What differs by transport and is not the answer: ids, stamps, frame ids, timings, the file
# name; and the engine's figures only the tools have at hand (answer_to_json's `result`).
TRANSPORT_FIELDS = {
    "request_id",
    "stamp",
    "frame_id",
    "image_frame_id",
    "batch_size",
    "queue_wait_s",
    "inference_s",
    "total_s",
    "scene_s",
    "image",
    "expected_choice",
    "frame",
    "stated_size",
    "prompt_tokens",
    "output_tokens",
}


@pytest.fixture(scope="module")
def tum_server():
    """The scripted model: the scene's boxes (in the frame the prompt states), relations and
    answer, whoever asks."""
    reply = spatialthinker_reply(
        dict(zip(FRAME.ids, FRAME.boxes, strict=True)),
        (FRAME.intrinsics.width, FRAME.intrinsics.height),
        [(r["subject"], r["predicate"], r["object"]) for r in SCENE["relationships"]],
        think=SCENE["think"],
        observe=SCENE["observe"],
        answer=SCENE["answer"],
    )
    with ScriptedOpenAIServer(default_reply=reply, model=MODEL) as server:
        yield server


def _ask(
    capsys: pytest.CaptureFixture,
    server: ScriptedOpenAIServer,
    out: Path,
    depth: Path = FOLDER / "depth.png",
    info: Path = FOLDER / INFO_YAML,
) -> dict:
    argv = ["ask", str(FOLDER / "rgb.png"), "-q", SCENE["question"]]
    argv += ["--options", ",".join(SCENE["options"]), "--output", str(out), "--no-annotate"]
    argv += ["--depth", str(depth), "--camera-info", str(info)]
    argv += ["--depth-scale", str(SCALE), "--compact", *_backend(server)]
    code = cli.main(argv)
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    return json.loads(stdout)


def _backend(server: ScriptedOpenAIServer) -> list[str]:
    return ["--backend", "openai", "--openai-base-url", server.base_url, "--model", MODEL]


def _write_bag(
    path: Path,
    rgb: np.ndarray,
    depth: tuple[np.ndarray, str] = (FRAME.raw_depth, "16UC1"),
    info: Any = None,
) -> Path:
    """One frame as a camera driver records it: rgb8 colour, ``depth`` (16UC1 in TUM units
    unless given; 2 ms later), CameraInfo (the frame's unless given)."""
    t = 100.0
    messages = {
        "/cam/color/image_raw": (IMAGE_T, image_message(t, rgb, "rgb8")),
        "/cam/depth/image_raw": (IMAGE_T, image_message(t + 0.002, *depth)),
        "/cam/color/camera_info": (INFO_T, info or camera_info_message(t, _scene(rgb))),
    }
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for offset, (topic, (msgtype, msg)) in enumerate(messages.items()):
            connection = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(connection, int(t * 1e9) + offset, TYPESTORE.serialize_cdr(msg, msgtype))
    return path


def _replay(capsys: pytest.CaptureFixture, server: ScriptedOpenAIServer, bag: Path) -> dict:
    out = bag.parent / "replay"
    argv = ["replay", str(bag), "-q", SCENE["question"], "--options", ",".join(SCENE["options"])]
    argv += ["--output", str(out), "--no-annotate", "--quiet", "--depth-scale", str(SCALE)]
    code = cli.main([*argv, *_backend(server)])
    _, stderr = capsys.readouterr()
    assert code == 0, stderr
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return record


def _scene(rgb: np.ndarray) -> SyntheticScene:
    """The real frame in the shape the test camera plays (its "depth_mm" is the raw 16-bit
    depth in TUM units: the node reads it with depth.scale, as it would the real camera's)."""
    return SyntheticScene(
        rgb=rgb,
        depth_m=FRAME.depth_m,
        depth_mm=FRAME.raw_depth,
        intrinsics=FRAME.intrinsics,
        objects=[],
        depth_exact=FRAME.depth_m,
    )


def _node(server: ScriptedOpenAIServer, rgb: np.ndarray) -> dict:
    from spatialthinker_ros.ros.answer_json import answer_to_json

    rig = Rig(_scene(rgb))
    try:
        params = {
            "backend": "openai",
            "model": MODEL,
            "openai.base_url": server.base_url,
            "depth.scale": SCALE,
            # Generous: a loaded 2-core machine can stall the test camera for a moment.
            "max_frame_age": 3.0,
        }
        with running_node(rig, params):
            rig.settle()
            response = rig.query(SCENE["question"], SCENE["options"])
            assert response.success, response.message
            return answer_to_json(response.answer)
    finally:
        rig.close()


def _demo_answer(server: ScriptedOpenAIServer, folder: Path) -> dict:
    """The demo on a folder of "your own frames" (README) holding the TUM frame."""
    folder.mkdir()
    for name in ("rgb.png", "depth.png", INFO_YAML):
        shutil.copy(FOLDER / name, folder / name)
    manifest = {
        "question": SCENE["question"],
        "options": SCENE["options"],
        "camera_info": INFO_YAML,
        "frames": [{"color": "rgb.png", "depth": "depth.png"}],
    }
    (folder / "scene.json").write_text(json.dumps(manifest), encoding="utf-8")
    out = folder.parent / "demo_out"
    argv = ["--sample", str(folder), "--backend", "openai", "--model", MODEL, "--quiet"]
    argv += ["--param", f"openai.base_url:={server.base_url}", "--param", f"depth.scale:={SCALE}"]
    done = run_demo([*argv, "--timeout", "90", "--output", str(out)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "answer.json").read_text(encoding="utf-8"))


def _answer_part(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in TRANSPORT_FIELDS}


def test_ask_replay_node_and_demo_answer_the_real_frame_identically(
    capsys: pytest.CaptureFixture, tmp_path: Path, tum_server: ScriptedOpenAIServer
) -> None:
    rgb = load_rgb(FOLDER / "rgb.png")
    answers = {
        "ask": _ask(capsys, tum_server, tmp_path / "ask"),
        "replay": _replay(capsys, tum_server, _write_bag(tmp_path / "bag", rgb)),
        "node": _node(tum_server, rgb),
        "demo": _demo_answer(tum_server, tmp_path / "mine"),
    }
    reference = answers["ask"]
    # The answer is the scene's, and it is about the real frame in 3D.
    assert (reference["answer"], reference["choice"]) == (SCENE["answer"], "A")
    assert [o["id"] for o in reference["objects"]] == FRAME.ids
    assert all(o["has_3d"] for o in reference["objects"]), reference["objects"]
    # The boxes went through the model's frame (another size than the camera's) and back.
    assert reference["model_image_size"] != [FRAME.intrinsics.width, FRAME.intrinsics.height]
    by_id = {o["id"]: o for o in reference["objects"]}
    # Depth read in TUM units: the purple chair at ~1.5-2 m, in front of the globe.
    assert 1.0 < by_id["chair.1"]["center"][2] < by_id["globe.1"]["center"][2] < 4.0
    assert [r["verdict"] for r in reference["relations"]] == ["consistent"] * 3
    assert reference["relations_contradicted"] == 0
    # "dice.1 below globe.1" is about gravity: checked along the up measured from the frame
    # (the camera looks ~30 deg down, so up leans towards the camera's -z).
    up = reference["up"]
    assert up is not None and up[1] < -0.8 and up[2] < -0.3, up
    # depth.scale is right: no implausible-depth-units warning (nor any other, on this frame).
    assert not any("implausible" in w for w in reference["warnings"]), reference["warnings"]
    assert reference["warnings"] == []
    # Every way gives the same answer, field for field (3D rounded alike by the one renderer).
    for way, data in answers.items():
        assert _answer_part(data) == _answer_part(reference), way


def test_a_camera_info_with_a_region_of_interest_reads_alike_from_yaml_and_from_a_bag(
    capsys: pytest.CaptureFixture, tmp_path: Path, tum_server: ScriptedOpenAIServer
) -> None:
    """The frame as a 640x480 region of an 800x600 sensor, its camera_info dumped as YAML
    (``ros2 topic echo --once``) for ``ask`` and recorded for ``replay``: the same camera as the
    frame's own camera_info, so the same 3D. (``ask`` used to ignore the region and rescale the
    sensor's intrinsics to the image: 20% too short a focal length, no error.)"""
    rgb = load_rgb(FOLDER / "rgb.png")
    k = FRAME.intrinsics
    # Offsets that keep cx and cy exact in binary (same power of two): the same floats back.
    x0, y0, width, height = 64, 8, 800, 600
    fx, fy, cx, cy = k.fx, k.fy, k.cx + x0, k.cy + y0
    message = dataclasses.replace(
        camera_info_message(100.0, _scene(rgb)),
        width=width,
        height=height,
        k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1.0]),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0.0]),
        roi=TYPESTORE.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=x0, y_offset=y0, height=k.height, width=k.width, do_rectify=False
        ),
    )
    dump = {
        "height": height,
        "width": width,
        "distortion_model": "plumb_bob",
        "d": [0.0] * 5,
        "k": message.k.tolist(),
        "r": np.eye(3).reshape(-1).tolist(),
        "p": message.p.tolist(),
        "binning_x": 0,
        "binning_y": 0,
        "roi": {"x_offset": x0, "y_offset": y0, "height": k.height, "width": k.width},
    }
    info_yaml = tmp_path / "roi_camera_info.yaml"
    info_yaml.write_text(yaml.safe_dump(dump), encoding="utf-8")
    reference = _ask(capsys, tum_server, tmp_path / "plain")
    answers = {
        "ask": _ask(capsys, tum_server, tmp_path / "ask", info=info_yaml),
        "replay": _replay(capsys, tum_server, _write_bag(tmp_path / "bag", rgb, info=message)),
    }
    for way, data in answers.items():
        assert _answer_part(data) == _answer_part(reference), way


def test_float_depth_ignores_depth_scale_alike_in_ask_and_replay(
    capsys: pytest.CaptureFixture, tmp_path: Path, tum_server: ScriptedOpenAIServer
) -> None:
    """Float depth is metres whatever depth.scale says (32FC1 in a bag, ``.npy`` for ``ask``).
    Here a driver's mistake, millimetres written as float metres: both warn alike that the depth
    looks implausible, and neither blames depth.scale, which float depth does not use. (``ask``
    used to name depth.scale in the warning.)"""
    rgb = load_rgb(FOLDER / "rgb.png")
    millimetres = (FRAME.depth_m * 1000.0).astype(np.float32)
    npy = tmp_path / "depth_mm_as_m.npy"
    np.save(npy, millimetres)
    answers = {
        "ask": _ask(capsys, tum_server, tmp_path / "ask", depth=npy),
        "replay": _replay(
            capsys, tum_server, _write_bag(tmp_path / "bag", rgb, depth=(millimetres, "32FC1"))
        ),
    }
    warnings = answers["ask"]["warnings"]
    assert any("implausible" in w for w in warnings), warnings
    assert not any("depth.scale" in w for w in warnings), warnings
    assert not any(o["has_3d"] for o in answers["ask"]["objects"])
    assert _answer_part(answers["replay"]) == _answer_part(answers["ask"])
