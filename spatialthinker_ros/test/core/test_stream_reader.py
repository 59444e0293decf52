"""The incremental reader: stages in order and, at </scene>, the final parse's scene graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spatialthinker_ros.core.parsing import parse_output
from spatialthinker_ros.core.stream_reader import STAGES, StreamReader

CORPUS = Path(__file__).resolve().parents[1] / "data" / "outputs"
CASES = json.loads((CORPUS / "cases.json").read_text())

CANONICAL = (
    "<observe> A man stands behind a bike. </observe>\n"
    '<scene>\n{"objects": [{"id": "man.1", "bbox": [120, 40, 330, 460]}, '
    '{"id": "bike.1", "bbox": [0, 272, 310, 451]}], '
    '"relationships": [{"subject": "man.1", "predicate": "behind", "object": "bike.1"}]}\n'
    "</scene>\n<think> The man is farther away than the bike. </think>\n"
    "<answer> (A) behind </answer>"
)


def _feed(reader: StreamReader, text: str, size: int) -> list:
    events = []
    for start in range(0, len(text), size):
        for event in reader.feed(text[start : start + size]):
            events.append((start + size, event))
    return events


def _graph(result) -> tuple:
    return (
        [(o.id, o.label, tuple(o.bbox)) for o in result.objects],
        [(r.subject, r.predicate, r.object) for r in result.relations],
    )


@pytest.mark.parametrize("chunk", [1, 3, 17, 10_000])
def test_stages_in_order_and_scene_at_its_closing_tag(chunk: int) -> None:
    reader = StreamReader((640, 480), ["behind", "in front of"])
    events = _feed(reader, CANONICAL, chunk)
    stages = [e.stage for _, e in events if e.stage]
    scene_events = [(at, e.scene) for at, e in events if e.scene is not None]
    if chunk < 100:  # fed whole, the stages jump straight to the last one
        assert stages == ["scene", "thinking", "answering"]
    assert stages == sorted(stages, key=STAGES.index)
    assert reader.stage == "answering"
    assert len(scene_events) == 1
    at, scene = scene_events[0]
    # Reported with the chunk that completed </scene>, before the reasoning was written.
    closing = CANONICAL.index("</scene>") + len("</scene>")
    assert closing <= at < closing + chunk
    assert _graph(scene) == _graph(parse_output(CANONICAL, (640, 480)))
    assert reader.text == CANONICAL


def test_no_scene_before_its_closing_tag() -> None:
    reader = StreamReader()
    cut = CANONICAL.index("</scene>")
    _feed(reader, CANONICAL[:cut], 5)
    assert reader.scene is None and reader.stage == "scene"
    reader.feed("</sce")
    assert reader.scene is None
    events = reader.feed("ne>\n<think>")
    assert [e.stage for e in events] == ["thinking", ""]
    assert events[1].scene is not None and len(events[1].scene.objects) == 2


@pytest.mark.parametrize("case", CASES, ids=[c["file"][:-4] for c in CASES])
@pytest.mark.parametrize("chunk", [1, 7])
def test_incremental_scene_equals_the_final_parse_on_the_corpus(case: dict, chunk: int) -> None:
    text = (CORPUS / case["file"]).read_text()
    size = tuple(case["image_size"]) if case["image_size"] else None
    reader = StreamReader(size, case["options"])
    events = _feed(reader, text, chunk)
    final = parse_output(text, image_size=size, options=case["options"])
    scenes = [e.scene for _, e in events if e.scene is not None]
    assert len(scenes) <= 1
    if scenes:
        assert _graph(scenes[0]) == _graph(final), case["file"]
    elif final.objects:
        # A scene only the whole text yields: its </scene> never came (cut off, or missing).
        assert "</scene>" not in text.lower() or text.lower().count("<scene>") != 1, case["file"]
    stages = [e.stage for _, e in events if e.stage]
    assert stages == sorted(stages, key=STAGES.index)
    assert len(stages) == len(set(stages))
