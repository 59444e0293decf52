"""``spatialthinker eval``: multiple-choice accuracy on a JSONL data set.

Each line of ``DATA.jsonl`` is one item::

    {"image": "imgs/0001.jpg", "question": "...", "options": ["left", "right"],
     "answer": "B", "category": "relation", "id": "0001"}

``image`` is relative to the JSONL file's folder (or absolute); ``answer`` is the correct
option's letter ("B" or "(B)"); ``category`` and ``id`` are optional. Items are answered with
the same engine and parameters as the node, so the accuracy checks a deployment (model, dtype,
pixel bounds, coordinate policy, served model) against the paper's numbers.

A bad line (malformed JSON, missing field, unreadable image) or a failed request does not stop
the run: it is reported, written to ``results.jsonl`` with its reason and counted as wrong
(accuracy is over all items). ``summary.json`` holds overall and per-category accuracy.

It also holds how well the answers' confidences (the option probabilities read from the model's
tokens) match their accuracy (``calibration``: the expected calibration error, AURC and
selective accuracy, :mod:`spatialthinker_ros.cli.calibration_report`), drawn in
``reliability.png``; ``--fit-temperature`` fits the ``confidence_temperature`` that calibrates
them, to apply to other data.

Each item is checked by the node's own admission rules
(:func:`spatialthinker_ros.answering.pipeline.check_question`: an empty or too long question,
too many or too long options), so what the node would refuse is refused here with the same
reason, never sent to the model; a line longer than :data:`MAX_LINE_BYTES` is refused unread.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spatialthinker_ros.answering.parameters import PARAMETERS_BY_NAME
from spatialthinker_ros.answering.pipeline import RequestRejected, check_question
from spatialthinker_ros.cli.args import (
    CommandError,
    add_engine_arguments,
    parameter_values,
    positive_int,
)
from spatialthinker_ros.cli.calibration_report import (
    calibration_lines,
    calibration_summary,
    draw_reliability_diagram,
)
from spatialthinker_ros.cli.files import (
    InputFileError,
    Progress,
    json_line,
    load_rgb,
    output_path,
    write_annotated,
    write_json,
)
from spatialthinker_ros.cli.offline_pipeline import (
    answer_in_order,
    frames_for,
    render,
    start_pipeline,
)

__all__ = ["MAX_LINE_BYTES", "EvalItem", "add_eval_command", "load_items", "run_eval", "summarise"]

# Characters of an item's id used in its annotated image's file name.
MAX_ID_IN_NAME = 64
#: Longest line of a data set read, bytes: room for the longest question the node accepts
#: (max_question_chars at most 100,000 characters, up to 6 bytes each as JSON escapes) and 26
#: options; a longer line is refused with its number without being held in memory.
MAX_LINE_BYTES = 1 << 20
# Bytes read at a time while skipping the rest of a line that is too long.
_SKIP_CHUNK = 1 << 16

_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?$")


@dataclass
class EvalItem:
    """One line of the data set.

    Attributes:
        line: 1-based line number.
        id: The item's id (its line number when the file gives none).
        image: Resolved image path.
        question: The question.
        options: Options without letters.
        answer: Correct letter, upper case.
        category: Category ("" when none).
        error: Why the line cannot be evaluated ("" when it can).
    """

    line: int
    id: str = ""
    image: Path | None = None
    question: str = ""
    options: list[str] = field(default_factory=list)
    answer: str = ""
    category: str = ""
    error: str = ""


def _json_type(value: Any) -> str:
    """A value's type as JSON names it (``null``, ``number`` ...), for the reasons users see."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _parse_item(line_number: int, text: str, base: Path, max_question_chars: int) -> EvalItem:
    item = EvalItem(line=line_number, id=str(line_number))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        item.error = f"malformed JSON ({error.msg} at column {error.colno})"
        return item
    if not isinstance(data, dict):
        item.error = "a line must be a JSON object"
        return item
    if data.get("id") is not None:
        item.id = str(data["id"])
    item.category = str(data.get("category") or "")
    missing = [key for key in ("image", "question", "options", "answer") if key not in data]
    if missing:
        item.error = f"missing field(s): {', '.join(missing)}"
        return item
    # A null or a number is not a question (str() would make one, "None", and score it).
    for key in ("image", "question"):
        if not isinstance(data[key], str):
            item.error = f"{key} must be a string, not {_json_type(data[key])}"
            return item
    options = data["options"]
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        item.error = "options must be a non-empty list of strings"
        return item
    try:
        # The node's admission rules, so an item the node would refuse is refused here too.
        question, options = check_question(data["question"], options, max_question_chars)
    except RequestRejected as error:
        item.error = str(error)
        return item
    match = _LETTER.match(str(data["answer"]).strip())
    letter = match[1].upper() if match else ""
    if not letter or string.ascii_uppercase.index(letter) >= len(options):
        answer = str(data["answer"])
        shown = repr(answer if len(answer) <= 40 else answer[:40] + "...")
        item.error = (
            f"answer {shown} is not one of the letters A-{string.ascii_uppercase[len(options) - 1]}"
        )
        return item
    image = Path(data["image"]).expanduser()
    item.image = image if image.is_absolute() else base / image
    item.question = question
    item.options = options
    item.answer = letter
    return item


def _lines(file: Path, path: str | Path) -> Iterator[tuple[int, str | None]]:
    """``(number, text)`` of each line, ``text`` None for a line longer than
    :data:`MAX_LINE_BYTES` (skipped a chunk at a time, never held whole).

    Raises:
        CommandError: The file cannot be read, or a line is not UTF-8 (not a JSONL file).
    """
    try:
        with file.open("rb") as stream:
            for number in itertools.count(1):
                raw = stream.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    while (rest := stream.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                        pass
                    yield number, None
                    continue
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise CommandError(
                        f"cannot read data set {path}: line {number} is not UTF-8 ({error.reason}"
                        f" at byte {error.start})"
                    ) from None
    except OSError as error:
        raise CommandError(f"cannot read data set {path}: {error.strerror or error}") from None


def load_items(
    path: str | Path, max_question_chars: int = PARAMETERS_BY_NAME["max_question_chars"].default
) -> list[EvalItem]:
    """Read the data set; malformed lines become items with ``error`` set.

    Args:
        path: The JSONL file.
        max_question_chars: Longest question accepted (the node's parameter of that name).

    Raises:
        CommandError: Missing or unreadable file, a line that is not UTF-8, or no items.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CommandError(f"data set not found: {path}")
    items = []
    for number, text in _lines(file, path):
        if text is None:
            item = EvalItem(line=number, id=str(number))
            item.error = f"line is longer than {MAX_LINE_BYTES} bytes; not read"
            items.append(item)
        elif text.strip():
            items.append(_parse_item(number, text, file.parent, max_question_chars))
    if not items:
        raise CommandError(f"data set {path} has no items")
    return items


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-category accuracy; failed items count as wrong."""

    def block(rows: list[dict[str, Any]]) -> dict[str, Any]:
        correct = sum(1 for r in rows if r.get("correct"))
        failed = sum(1 for r in rows if "error" in r)
        return {
            "items": len(rows),
            "correct": correct,
            "failed": failed,
            "accuracy": correct / len(rows) if rows else 0.0,
        }

    categories: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("category"):
            categories.setdefault(record["category"], []).append(record)
    return {
        "overall": block(records),
        "categories": {name: block(rows) for name, rows in sorted(categories.items())},
    }


def add_eval_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spatialthinker eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="multiple-choice accuracy on a JSONL data set, overall and per category",
        description=(
            "Answer every item of DATA.jsonl (image, question, options, answer letter, optional "
            "category and id; image paths relative to the file) and report the accuracy, "
            "overall and per category. Writes results.jsonl and summary.json to --output. Bad "
            "items are reported, counted as wrong, and the run goes on; the exit status is 1 "
            "when any item failed."
        ),
    )
    parser.add_argument("data", help="JSONL file, one item per line")
    parser.add_argument("--output", default="out/eval", help="output folder")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N items")
    parser.add_argument("--annotate", action="store_true", help="also write annotated PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--fit-temperature",
        action="store_true",
        help="fit the confidence_temperature that calibrates the option probabilities on this"
        " set (minimum negative log-likelihood), to apply to other data",
    )
    parser.add_argument(
        "--bins",
        type=positive_int,
        default=10,
        help="equal-width confidence bins of the calibration error and the reliability diagram",
    )
    add_engine_arguments(parser)
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """``spatialthinker eval``: see :func:`add_eval_command`."""
    values = parameter_values(args)
    items = load_items(args.data, int(values["max_question_chars"]))
    if args.limit is not None:
        items = items[: args.limit]
    results_path = output_path(args.output, "results.jsonl")
    progress = Progress(total=len(items), quiet=args.quiet)
    records: list[dict[str, Any]] = []
    pipeline = start_pipeline(values)

    def with_image(item: EvalItem) -> tuple[EvalItem, np.ndarray | None]:
        if item.error:
            return item, None
        try:
            return item, load_rgb(item.image)
        except InputFileError as error:
            item.error = str(error)
            return item, None

    def submit(entry: tuple[EvalItem, np.ndarray | None]) -> Any:
        item, rgb = entry
        if item.error:
            return None
        return pipeline.submit(frames_for(rgb), item.question, item.options, request_id=item.id)

    def finish(entry: tuple[EvalItem, np.ndarray | None], handle: Any) -> None:
        item, rgb = entry
        record = _score(item, handle, rgb, args)
        records.append(record)
        if "error" in record:
            progress.step(f"line {item.line} ({item.id}): FAILED: {record['error']}")
        else:
            verdict = "correct" if record["correct"] else "wrong"
            progress.step(
                f"line {item.line} ({item.id}): {record['choice'] or '-'} vs "
                f"{item.answer}: {verdict}"
            )
        out.write(json_line(record))
        out.flush()

    with results_path.open("w", encoding="utf-8") as out:
        # Images are read as their items are queued: a batch's worth in memory, not the set's.
        answer_in_order(pipeline, (with_image(item) for item in items), submit, finish)
    summary = summarise(records)
    summary["model"] = pipeline.model_name
    summary["data"] = str(args.data)
    report = calibration_summary(
        records, args.bins, float(values["confidence_temperature"]), args.fit_temperature
    )
    if report["items"]:
        report["diagram"] = output_path(args.output, "reliability.png").name
        draw_reliability_diagram(output_path(args.output, "reliability.png"), report)
    summary["calibration"] = report
    write_json(args.output, "summary.json", summary)
    _print_summary(summary)
    fit_failed = "error" in report.get("temperature_fit", {})
    return 1 if summary["overall"]["failed"] or fit_failed else 0


def _score(
    item: EvalItem, handle: Any, rgb: np.ndarray | None, args: argparse.Namespace
) -> dict[str, Any]:
    from spatialthinker_ros.core.engine import RequestFailed

    record: dict[str, Any] = {
        "line": item.line,
        "id": item.id,
        "category": item.category,
        "expected": item.answer,
    }
    if item.error:
        return {**record, "correct": False, "error": item.error}
    try:
        answer = render(handle.result())
    except RequestFailed as failed:
        return {**record, "correct": False, "error": f"the model did not answer: {failed.reason}"}
    record.update(
        image=str(item.image),
        question=item.question,
        options=item.options,
        answer=answer["answer"],
        choice=answer["choice"],
        correct=answer["choice"] == item.answer,
        strict_format=answer["strict_format"],
        warnings=answer["warnings"],
        raw_output=answer["raw_output"],
        total_s=answer["total_s"],
        confidence=answer["confidence"],
        confidence_source=answer["confidence_source"],
        confidence_note=answer["confidence_note"],
        option_probabilities=answer["option_probabilities"],
    )
    if args.annotate and rgb is not None:
        # The id is the data set's: keep the file name within file-system limits (the line
        # number keeps it unique), and let a failed image cost only the image, not the run.
        name = f"item_{item.line:06d}_{item.id[:MAX_ID_IN_NAME]}.png"
        try:
            record["annotated"] = write_annotated(args.output, name, rgb, answer).name
        except (OSError, ValueError) as error:  # OutputFileError is a ValueError
            record["warnings"] = [*record["warnings"], f"annotated image not written: {error}"]
    return record


def _print_summary(summary: dict[str, Any]) -> None:
    def row(name: str, block: dict[str, Any]) -> str:
        failed = f", {block['failed']} failed" if block["failed"] else ""
        return (
            f"{name:<24} {100 * block['accuracy']:6.2f} %  "
            f"({block['correct']}/{block['items']}{failed})"
        )

    lines = [row("overall", summary["overall"])]
    lines += [row(f"  {name}", block) for name, block in summary["categories"].items()]
    lines += calibration_lines(summary["calibration"])
    sys.stdout.write("\n".join(lines) + "\n")
