"""Tests of ``spatialthinker eval``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scripted_openai_server import ScriptedOpenAIServer

from spatialthinker_ros.cli import main as cli
from spatialthinker_ros.cli.sample_data import SAMPLE_DIR

ANSWER_A = (
    "<observe> x </observe>\n<scene> {} </scene>\n<think> y </think>\n<answer> (A) left </answer>"
)


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _dataset(folder: Path, lines: list[str]) -> Path:
    shutil.copy(SAMPLE_DIR / "color_000.png", folder / "scene.png")
    path = folder / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _item(answer: str, category: str | None = None, image: str = "scene.png", **extra) -> str:
    data = {"image": image, "question": "Left or right?", "options": ["left", "right"]}
    data["answer"] = answer
    if category:
        data["category"] = category
    return json.dumps({**data, **extra})


def test_eval_accuracy_overall_and_per_category_past_bad_items(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    data = _dataset(
        tmp_path,
        [
            _item("A", "relation", id="r1"),
            _item("(B)", "relation", id="r2"),
            "{not json",
            _item("a", "depth", id="d1"),
            "",
            _item("A", "depth", image="missing.png", id="d2"),
            _item("C", "depth", id="d3"),
        ],
    )
    out_dir = tmp_path / "out"
    with ScriptedOpenAIServer(default_reply=ANSWER_A) as server:
        argv = ["eval", str(data), "--output", str(out_dir), "--backend", "openai"]
        code, out, err = _run(capsys, [*argv, "--openai-base-url", server.base_url])
        answered = len(server.completion_requests)
    assert code == 1  # items failed; the run still finished
    assert answered == 3  # bad items never reach the model
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["overall"] == {"items": 6, "correct": 2, "failed": 3, "accuracy": 2 / 6}
    assert summary["categories"]["relation"] == {
        "items": 2,
        "correct": 1,
        "failed": 0,
        "accuracy": 0.5,
    }
    assert summary["categories"]["depth"]["correct"] == 1
    assert summary["categories"]["depth"]["failed"] == 2
    assert out.splitlines()[0].startswith("overall") and "33.33 %" in out
    records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 6, 7]
    assert [r["correct"] for r in records] == [True, False, False, True, False, False]
    assert "malformed JSON" in records[2]["error"]
    assert "image not found" in records[4]["error"]
    assert "not one of the letters A-B" in records[5]["error"]
    assert records[0]["choice"] == "A" and records[1]["expected"] == "B"
    assert "[6/6]" in err and "line 3 (3): FAILED: malformed JSON" in err


def test_eval_with_the_tiny_model(
    capsys: pytest.CaptureFixture, tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = _dataset(tmp_path, [_item("A", "x"), _item("B", "x")])
    argv = ["eval", str(data), "--output", str(tmp_path / "o"), "--model", str(tiny_model_dir)]
    code, _, err = _run(capsys, [*argv, "--max-new-tokens", "16", "--annotate"])
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["overall"]["items"] == 2 and summary["overall"]["failed"] == 0
    assert summary["model"] == str(tiny_model_dir)
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "data set not found"), ("\n\n", "has no items"), (b"\xff\xfe\x00bad", "cannot read")],
)
def test_eval_bad_data_file_is_one_line_and_non_zero(
    capsys: pytest.CaptureFixture, tmp_path: Path, content, expected: str
) -> None:
    path = tmp_path / "data.jsonl"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    code, out, err = _run(capsys, ["eval", str(path), "--model", "/nope"])
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("spatialthinker: error:") and expected in err


def test_eval_annotate_with_a_very_long_item_id_goes_on(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # Issue 17, Medium 8: a 300-character id made the annotated file name too long for the
    # file system, and the error aborted the whole run without summary.json.
    long_id = "x" * 300
    data = _dataset(tmp_path, [_item("A", id=long_id), _item("A", id="short")])
    out_dir = tmp_path / "out"
    with ScriptedOpenAIServer(default_reply=ANSWER_A) as server:
        argv = ["eval", str(data), "--output", str(out_dir), "--backend", "openai", "--annotate"]
        code, _, _ = _run(capsys, [*argv, "--openai-base-url", server.base_url])
    assert code == 0
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["overall"]["items"] == 2 and summary["overall"]["correct"] == 2
    records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert records[0]["id"] == long_id  # the record keeps the whole id
    assert all((out_dir / record["annotated"]).is_file() for record in records)


def test_eval_applies_the_nodes_question_checks_and_bounds_each_line(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    # Issue 26, Low 8: "question": null was sent as the text "None" and scored, a 5 MB question
    # and a 60 MB line were sent whole. Each is refused with the node's reason (or, for a line
    # too long to read, its own), the run goes on past them, and none reaches the model.
    from spatialthinker_ros.cli.evaluate import MAX_LINE_BYTES

    data = _dataset(
        tmp_path,
        [
            _item("A", id="null", question=None),
            _item("A", id="number", question=42),
            _item("A", id="long", question="Left or right? " * 200),
            _item("A", id="blank option", options=["left", "  "]),
            _item("A", id="5 MB", question="Left or right? " * 350_000),
            _item("A", id="good"),
        ],
    )
    out_dir = tmp_path / "out"
    with ScriptedOpenAIServer(default_reply=ANSWER_A) as server:
        argv = ["eval", str(data), "--output", str(out_dir), "--backend", "openai"]
        code, _, err = _run(capsys, [*argv, "--openai-base-url", server.base_url])
        asked = [body["messages"] for body in server.completion_requests]
    assert code == 1
    assert len(asked) == 1 and "None" not in json.dumps(asked)  # only the good item was asked
    records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6]
    errors = [r.get("error") for r in records]
    assert errors[0] == "question must be a string, not null"
    assert errors[1] == "question must be a string, not a number"
    # The node's own words (pipeline.check_question), with the node's default limit.
    assert errors[2] == "question is 2999 characters long (max_question_chars 2000)"
    assert errors[3] == "option B is empty"
    assert errors[4] == f"line is longer than {MAX_LINE_BYTES} bytes; not read"
    assert errors[5] is None and records[5]["correct"] is True
    assert "line 5 (5): FAILED: line is longer than" in err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["overall"] == {"items": 6, "correct": 1, "failed": 5, "accuracy": 1 / 6}


def test_eval_reads_a_line_too_long_without_holding_it(tmp_path: Path) -> None:
    # A 60 MB line between two good ones: refused by its number, the lines after it still read,
    # and never held whole (the peak memory of reading stays far below the line's size).
    import tracemalloc

    from spatialthinker_ros.cli.evaluate import load_items

    path = tmp_path / "data.jsonl"
    with path.open("w") as out:
        out.write(_item("A", id="first") + "\n")
        out.write('{"question": "')
        for _ in range(60):
            out.write("x" * 1_000_000)
        out.write('"}\n')
        out.write(_item("B", id="last") + "\n")
    tracemalloc.start()
    try:
        items = load_items(path)
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert [(i.line, i.id) for i in items] == [(1, "first"), (2, "2"), (3, "last")]
    assert "longer than" in items[1].error and not items[0].error and not items[2].error
    assert peak_mib < 16, f"reading took {peak_mib:.0f} MiB at its peak"


# Five items with known confidences and outcomes (the model's answer, the probability the
# scripted server gives it, the correct letter): right, wrong, right, wrong, right.
CALIBRATION_SET = [
    ("A", 0.9, "A"),
    ("A", 0.8, "B"),
    ("B", 0.6, "B"),
    ("A", 0.55, "B"),
    ("B", 0.95, "B"),
]


def _scored_server(items: list[tuple[str, float, str]]) -> ScriptedOpenAIServer:
    """A server answering item i ("Left or right? #i") with its letter at its probability."""
    import math

    from scripted_openai_server import TokenReply, request_texts

    def reply(body: dict) -> TokenReply:
        number = int(request_texts(body)[0].rsplit("#", 1)[1].split()[0])
        letter, p, _ = items[number]
        other = "B" if letter == "A" else "A"
        option = "left" if letter == "A" else "right"
        text = f"<think> x </think>\n<answer> ({letter}) {option} </answer>"
        answer = TokenReply(text)
        answer.top = {answer.index_of(letter): {letter: math.log(p), other: math.log(1 - p)}}
        return answer

    return ScriptedOpenAIServer(default_reply=reply)


def _calibration_dataset(folder: Path, items: list[tuple[str, float, str]]) -> Path:
    return _dataset(
        folder,
        [
            _item(expected, id=f"c{i}", question=f"Left or right? #{i}")
            for i, (_, _, expected) in enumerate(items)
        ],
    )


def test_eval_reports_ece_and_aurc_as_computed_by_hand(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import cv2

    data = _calibration_dataset(tmp_path, CALIBRATION_SET)
    out_dir = tmp_path / "out"
    with _scored_server(CALIBRATION_SET) as server:
        argv = ["eval", str(data), "--output", str(out_dir), "--backend", "openai"]
        code, out, err = _run(capsys, [*argv, "--openai-base-url", server.base_url])
    assert code == 0, err
    records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [r["confidence"] for r in records] == [0.9, 0.8, 0.6, 0.55, 0.95]
    assert [r["correct"] for r in records] == [True, False, True, False, True]
    assert all(r["confidence_source"] == "tokens" for r in records)
    assert records[1]["option_probabilities"] == [0.8, 0.2]
    report = json.loads((out_dir / "summary.json").read_text())["calibration"]
    assert report["items"] == 5 and report["unmeasured"] == 0
    # ECE, 10 equal-width bins [k/10, (k+1)/10), the last closed:
    #   [0.9, 1]:   0.9, 0.95, both right:  |1 - 0.925| = 0.075, weight 2/5 -> 0.030
    #   [0.8, 0.9): 0.8 wrong:              |0 - 0.8|   = 0.8,   weight 1/5 -> 0.160
    #   [0.6, 0.7): 0.6 right:              |1 - 0.6|   = 0.4,   weight 1/5 -> 0.080
    #   [0.5, 0.6): 0.55 wrong:             |0 - 0.55|  = 0.55,  weight 1/5 -> 0.110
    #   ECE = 0.030 + 0.160 + 0.080 + 0.110 = 0.380
    assert report["ece"] == pytest.approx(0.38, abs=1e-9)
    assert "10 equal-width bins" in report["binning"]
    # AURC: most confident first 0.95 R, 0.9 R, 0.8 W, 0.6 R, 0.55 W; the risk of the k most
    # confident is 0/1, 0/2, 1/3, 1/4, 2/5; AURC = (0 + 0 + 1/3 + 1/4 + 2/5) / 5 = 0.196667.
    assert report["aurc"] == pytest.approx((1 / 3 + 1 / 4 + 2 / 5) / 5, abs=1e-9)
    assert report["error_rate"] == pytest.approx(0.4)
    # Selective accuracy of the ceil(c * 5) most confident: 2 -> 2/2, 3 -> 2/3, 4 -> 3/4, 5 -> 3/5.
    assert report["selective_accuracy"] == pytest.approx(
        {"0.25": 1.0, "0.5": 2 / 3, "0.75": 3 / 4, "1": 3 / 5}
    )
    assert [b["count"] for b in report["bins"]] == [0, 0, 0, 0, 0, 1, 1, 0, 1, 2]
    diagram = cv2.imread(str(out_dir / report["diagram"]))
    assert diagram is not None and diagram.shape[0] > 100 and diagram.std() > 0
    assert "ECE 0.3800" in out and "AURC 0.1967" in out


def test_eval_fits_a_temperature_on_one_set_and_applies_it_to_another(
    capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import math

    from spatialthinker_ros.core.calibration import fit_temperature

    fitting = tmp_path / "fit"
    fitting.mkdir()
    data = _calibration_dataset(fitting, CALIBRATION_SET)
    with _scored_server(CALIBRATION_SET) as server:
        argv = ["eval", str(data), "--output", str(fitting / "out"), "--backend", "openai"]
        code, out, err = _run(
            capsys, [*argv, "--openai-base-url", server.base_url, "--fit-temperature"]
        )
    assert code == 0, err
    fit = json.loads((fitting / "out" / "summary.json").read_text())["calibration"]
    fit = fit["temperature_fit"]
    # The same fit from the served probabilities directly.
    rows = [
        [math.log(p), math.log(1 - p)] if a == "A" else [math.log(1 - p), math.log(p)]
        for a, p, _ in CALIBRATION_SET
    ]
    expected = fit_temperature(rows, [ord(e) - 65 for _, _, e in CALIBRATION_SET])
    assert fit["confidence_temperature"] == pytest.approx(expected.temperature, rel=1e-3)
    assert fit["nll_after"] < fit["nll_before"] and fit["items"] == 5
    assert "fitted confidence_temperature" in out
    # Applied to another set: each answer's probabilities at that temperature.
    other = [("A", 0.7, "A"), ("B", 0.85, "A")]
    applying = tmp_path / "apply"
    applying.mkdir()
    data = _calibration_dataset(applying, other)
    temperature = f"{fit['confidence_temperature']:.6f}"
    with _scored_server(other) as server:
        argv = ["eval", str(data), "--output", str(applying / "out"), "--backend", "openai"]
        code, _, err = _run(
            capsys,
            [*argv, "--openai-base-url", server.base_url, "--confidence-temperature", temperature],
        )
    assert code == 0, err
    records = [
        json.loads(line) for line in (applying / "out" / "results.jsonl").read_text().splitlines()
    ]
    t = float(temperature)
    for record, (_, p, _) in zip(records, other, strict=True):
        tempered = p ** (1 / t) / (p ** (1 / t) + (1 - p) ** (1 / t))
        assert record["confidence"] == pytest.approx(tempered, abs=1e-6)
    summary = json.loads((applying / "out" / "summary.json").read_text())
    assert summary["calibration"]["confidence_temperature"] == pytest.approx(t)
