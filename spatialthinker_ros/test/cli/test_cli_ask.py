"""Tests of ``spatialthinker ask`` and ``spatialthinker tiny-model`` (in-process, real engine)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from node_harness import scripted_reply
from scipy.spatial.transform import Rotation
from scripted_openai_server import ScriptedOpenAIServer

from spatialthinker_ros.cli import main as cli
from spatialthinker_ros.cli.sample_data import SAMPLE_DIR, load_sample
from spatialthinker_ros.core.synthetic_scene import demo_scene

IMAGE = SAMPLE_DIR / "color_000.png"
DEPTH = SAMPLE_DIR / "depth_000.png"
INFO = SAMPLE_DIR / "camera_info.yaml"
TINY = ["--max-new-tokens", "16"]


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    """The one error line (progress lines of a model load may precede it)."""
    lines = [line for line in err.splitlines() if line.startswith("spatialthinker: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_ask_with_the_tiny_model_writes_json_and_png(
    capsys: pytest.CaptureFixture, tiny_model_dir: Path, tmp_path: Path
) -> None:
    argv = ["ask", str(IMAGE), "-q", "Is the red box in front?", "--options", "in front,behind"]
    argv += ["--depth", str(DEPTH), "--camera-info", str(INFO), "--output", str(tmp_path)]
    code, out, _ = _run(capsys, [*argv, "--model", str(tiny_model_dir), *TINY])
    assert code == 0
    data = json.loads(out)
    assert data["model"] == str(tiny_model_dir)
    assert data["options"] == ["in front", "behind"]
    assert 0 < data["output_tokens"] <= 16
    # The default "resize" policy: the model saw the processor's size and stated it.
    assert data["model_image_size"] == data["stated_size"]
    assert json.loads((tmp_path / "color_000.json").read_text()) == data
    png = cv2.imread(str(tmp_path / "color_000.annotated.png"))
    assert png is not None and png.shape == (480, 640, 3)


def test_ask_lifts_the_scripted_boxes_to_the_true_3d_positions(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    sample = load_sample()
    scene = demo_scene()
    with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
        argv = ["ask", str(IMAGE), "-q", sample.question, "--options", ",".join(sample.options)]
        argv += ["--depth", str(DEPTH), "--camera-info", str(INFO), "--output", str(tmp_path)]
        argv += ["--backend", "openai", "--openai-base-url", server.base_url, "--compact"]
        code, out, _ = _run(capsys, argv)
    assert code == 0
    data = json.loads(out)
    assert (data["choice"], data["choice_index"]) == ("A", 0)
    by_id = {o["id"]: o for o in data["objects"]}
    assert set(by_id) == {"red_box.1", "green_box.1", "white_pillar.1"}
    for object_id, index in (("red_box.1", 0), ("green_box.1", 1)):
        item = by_id[object_id]
        assert item["has_3d"], item
        # The visible front face is what depth sees: within half the box depth of the centre.
        truth = np.array(scene.objects[index].center)
        assert np.linalg.norm(np.array(item["center"]) - truth) < 0.6 * max(
            scene.objects[index].size
        )
        assert item["distance"] == pytest.approx(np.linalg.norm(item["center"]), abs=1e-3)
    assert by_id["red_box.1"]["center"][2] < by_id["green_box.1"]["center"][2]
    # Relations carry the depth check's verdict and evidence, as the node publishes them.
    front, left = data["relations"]
    assert (front["subject"], front["predicate"], front["object"]) == (
        "red_box.1",
        "in front of",
        "green_box.1",
    )
    assert (front["verdict"], left["verdict"]) == ("consistent", "consistent")
    assert front["evidence"].startswith("red_box.1's front is 0.")
    assert "m nearer the camera than green_box.1's" in front["evidence"]
    assert data["relations_contradicted"] == 0


def test_ask_without_depth_is_2d_only(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    with ScriptedOpenAIServer(default_reply=scripted_reply(demo_scene())) as server:
        argv = ["ask", str(IMAGE), "-q", "Where is the red box?", "--output", str(tmp_path)]
        argv += ["--backend", "openai", "--openai-base-url", server.base_url, "--no-annotate"]
        code, out, _ = _run(capsys, argv)
    assert code == 0
    data = json.loads(out)
    assert data["objects"] and not any(o["has_3d"] for o in data["objects"])
    assert not (tmp_path / "color_000.annotated.png").exists()


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda d: ["ask", str(d / "missing.png"), "-q", "q"], "image not found"),
        (lambda d: ["ask", str(d / "corrupt.png"), "-q", "q"], "not a valid image file"),
        (
            lambda d: ["ask", str(IMAGE), "-q", "q", "--depth", str(DEPTH)],
            "--depth and --camera-info must be given together",
        ),
        (
            lambda d: [
                "ask",
                str(IMAGE),
                "-q",
                "q",
                "--depth",
                str(DEPTH),
                "--camera-info",
                str(d / "bad.yaml"),
            ],
            "lacks image_width",
        ),
        (
            lambda d: [
                "ask",
                str(IMAGE),
                "-q",
                "q",
                "--depth",
                str(d / "corrupt.png"),
                "--camera-info",
                str(INFO),
            ],
            "cannot read depth",
        ),
        (lambda d: ["ask", str(IMAGE), "-q", "q", "--model", str(d / "nope")], "does not exist"),
        # The node's admission rules for the question and options, with its reasons.
        (lambda d: ["ask", str(IMAGE), "-q", "  "], "--question refused: question is empty"),
        (
            lambda d: ["ask", str(IMAGE), "-q", "x" * 2001],
            "question is 2001 characters long (max_question_chars 2000)",
        ),
        (
            lambda d: ["ask", str(IMAGE), "-q", "q", "--options", ",".join("o" * 27)],
            "27 options given; at most 26 (A-Z)",
        ),
        # Flags take the node's parameters' rules, and the error names the flag.
        (
            lambda d: ["ask", str(IMAGE), "-q", "q", "--max-new-tokens", "8"],
            "--max-new-tokens: max_new_tokens must be between 16 and 32768 (got 8)",
        ),
        (
            lambda d: ["ask", str(IMAGE), "-q", "q", "--depth-min", "5", "--depth-max", "1"],
            "depth.min_depth (5) must be below depth.max_depth (1)",
        ),
    ],
)
def test_ask_bad_input_is_one_line_and_non_zero(
    capsys: pytest.CaptureFixture, tmp_path: Path, make_args, expected: str
) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (tmp_path / "bad.yaml").write_text("camera_name: x\n")
    code, out, err = _run(capsys, [*make_args(tmp_path), "--output", str(tmp_path / "o")])
    assert code != 0
    assert out == ""
    assert expected in _error_line(err)


def test_tiny_model_command_writes_a_loadable_model(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code, out, _ = _run(capsys, ["tiny-model", str(tmp_path / "tiny")])
    assert code == 0 and "tiny model written" in out
    assert (tmp_path / "tiny" / "config.json").is_file()
    code, out, _ = _run(
        capsys,
        [
            "ask",
            str(IMAGE),
            "-q",
            "q",
            "--model",
            str(tmp_path / "tiny"),
            *TINY,
            "--output",
            str(tmp_path / "o"),
            "--no-annotate",
        ],
    )
    assert code == 0 and json.loads(out)["model"] == str(tmp_path / "tiny")


def test_ask_reads_16_bit_depth_in_the_units_given_by_depth_scale(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """The same frame stored TUM-style (1/5000 m per unit): read as millimetres it is 5x too far
    and the answer says the scale looks wrong; with --depth-scale 0.0002 the 3D matches."""
    sample = load_sample()
    mm = cv2.imread(str(DEPTH), cv2.IMREAD_UNCHANGED)
    tum_units = tmp_path / "depth_tum.png"
    cv2.imwrite(str(tum_units), (mm.astype(np.uint32) * 5).clip(0, 65535).astype(np.uint16))
    outputs = {}
    with ScriptedOpenAIServer(default_reply=scripted_reply(demo_scene())) as server:
        for name, depth, extra in (
            ("mm", DEPTH, []),
            ("tum_as_mm", tum_units, []),
            ("tum", tum_units, ["--depth-scale", "0.0002"]),
        ):
            argv = ["ask", str(IMAGE), "-q", sample.question, "--options", ",".join(sample.options)]
            argv += ["--depth", str(depth), "--camera-info", str(INFO)]
            argv += ["--output", str(tmp_path / name), "--compact", *extra]
            argv += ["--backend", "openai", "--openai-base-url", server.base_url]
            code, out, _ = _run(capsys, argv)
            assert code == 0
            outputs[name] = json.loads(out)
    assert not any("depth.scale" in w for w in outputs["mm"]["warnings"])
    assert any("implausible" in w and "depth.scale" in w for w in outputs["tum_as_mm"]["warnings"])
    assert not any("depth.scale" in w for w in outputs["tum"]["warnings"])
    for right, tum in zip(outputs["mm"]["objects"], outputs["tum"]["objects"], strict=True):
        assert right["has_3d"] and tum["has_3d"]
        np.testing.assert_allclose(tum["center"], right["center"], atol=0.01)


def test_relations_up_flag_chooses_where_up_comes_from(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # The sample is a level synthetic camera: measured, up stays the camera's -y (nothing added
    # to the evidence); --relations-up down takes the camera's -z, and the evidence says so.
    sample = load_sample()
    relation = ("green_box.1", "above", "red_box.1")
    evidence = {}
    with ScriptedOpenAIServer(
        default_reply=scripted_reply(demo_scene(), relations=(relation,))
    ) as server:
        for policy in ("measured", "down"):
            argv = ["ask", str(IMAGE), "-q", sample.question, "--options", ",".join(sample.options)]
            argv += ["--depth", str(DEPTH), "--camera-info", str(INFO), "--no-annotate"]
            argv += ["--output", str(tmp_path / policy), "--compact", "--relations-up", policy]
            argv += ["--backend", "openai", "--openai-base-url", server.base_url]
            code, out, err = _run(capsys, argv)
            assert code == 0, err
            (checked,) = json.loads(out)["relations"]
            evidence[policy] = checked["evidence"]
    assert "up measured" not in evidence["measured"] and "-z" not in evidence["measured"]
    assert "relations.up 'down'" in evidence["down"] or "up measured" in evidence["down"]
    assert evidence["down"] != evidence["measured"]
    code, _, err = _run(capsys, ["ask", str(IMAGE), "-q", "q?", "--relations-up", "sideways"])
    assert code != 0 and "sideways" in err


def test_ask_with_a_camera_pose_reports_3d_in_the_pose_frame(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # The sample's level camera, 0.8 m up at (2, 1) in "world", looking along world's -y.
    sample = load_sample()
    looking = Rotation.from_euler("z", -90, degrees=True) * Rotation.from_matrix(
        [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # optical axes in a body looking along +x
    )
    xyz = np.array([2.0, 1.0, 0.8])
    # As a user types it (argparse reads "-6e-17" as an option, "-0.000000" as a number).
    pose = [f"{value:.9f}" for value in (*xyz, *looking.as_quat())]
    answers = {}
    with ScriptedOpenAIServer(default_reply=scripted_reply(demo_scene())) as server:
        for name, extra in {"camera": [], "world": ["--camera-pose", *pose]}.items():
            argv = ["ask", str(IMAGE), "-q", sample.question, "--options", ",".join(sample.options)]
            argv += ["--depth", str(DEPTH), "--camera-info", str(INFO), "--no-annotate", *extra]
            argv += ["--output", str(tmp_path / name), "--compact", "--frame-id", "head_optical"]
            argv += ["--backend", "openai", "--openai-base-url", server.base_url]
            code, out, err = _run(capsys, argv)
            assert code == 0, err
            answers[name] = json.loads(out)
    camera, world = answers["camera"], answers["world"]
    assert (world["frame_id"], world["image_frame_id"]) == ("world", "head_optical")
    assert camera["frame_id"] == ""  # no pose: the camera frame (a file names none)
    for seen, reference in zip(world["objects"], camera["objects"], strict=True):
        assert seen["has_3d"], seen
        for key in ("center", "surface"):
            np.testing.assert_allclose(seen[key], looking.apply(reference[key]) + xyz, atol=1e-3)
        assert (Rotation.from_quat(seen["orientation"]).inv() * looking).magnitude() < 1e-3
        assert seen["distance"] == pytest.approx(reference["distance"], abs=1e-3)
    # Up is the pose frame's z (REP 103), and says so.
    assert world["up_source"] == "tf:world"
    np.testing.assert_allclose(world["up"], [0.0, 0.0, 1.0], atol=1e-4)
    assert [r["verdict"] for r in world["relations"]] == [r["verdict"] for r in camera["relations"]]
    # A pose that is not one: the flag and the problem named, nothing asked.
    bad = ["ask", str(IMAGE), "-q", "q?", "--camera-pose", "0", "0", "0", "0", "0", "0", "0"]
    code, out, err = _run(capsys, [*bad, "--output", str(tmp_path / "bad")])
    assert code != 0 and out == ""
    assert "--camera-pose:" in _error_line(err) and "quaternion" in _error_line(err)


def test_ask_writes_the_nodes_detections(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    # --detections: ~/detections_3d and ~/detections_2d as the node would publish them, as JSON
    # with the vision_msgs field names, for offline pipelines.
    sample = load_sample()
    with ScriptedOpenAIServer(default_reply=scripted_reply(demo_scene())) as server:
        argv = ["ask", str(IMAGE), "-q", sample.question, "--options", ",".join(sample.options)]
        argv += ["--depth", str(DEPTH), "--camera-info", str(INFO), "--no-annotate"]
        argv += ["--output", str(tmp_path), "--compact", "--detections"]
        argv += ["--backend", "openai", "--openai-base-url", server.base_url]
        code, out, err = _run(capsys, argv)
    assert code == 0, err
    answer = json.loads(out)
    written = json.loads((tmp_path / "color_000.detections.json").read_text())
    objects = {o["id"]: o for o in answer["objects"]}
    detections = {d["id"]: d for d in written["detections_3d"]["detections"]}
    assert set(detections) == {i for i, o in objects.items() if o["has_3d"]} == set(objects)
    for object_id, detection in detections.items():
        (result,) = detection["results"]
        assert result["hypothesis"]["class_id"] == objects[object_id]["label"]
        assert result["hypothesis"]["score"] is None  # no log-probabilities: not measured
        centre = detection["bbox"]["center"]["position"]
        np.testing.assert_allclose(
            [centre["x"], centre["y"], centre["z"]], objects[object_id]["center"], atol=1e-3
        )
    boxes = {d["id"]: d["bbox"] for d in written["detections_2d"]["detections"]}
    assert set(boxes) == set(objects)
    for object_id, box in boxes.items():
        x1, y1, x2, y2 = objects[object_id]["bbox"]
        assert box["size_x"] == pytest.approx(x2 - x1, abs=0.01)
        assert box["center"]["position"]["y"] == pytest.approx((y1 + y2) / 2, abs=0.01)
