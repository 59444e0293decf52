"""Tests of ``spatialthinker eval``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from scripted_openai_server import ScriptedOpenAIServer

from spatialthinker_ros.tools import cli
from spatialthinker_ros.tools.sample_data import SAMPLE_DIR

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
