"""Tests of parse_output: the committed corpus of outputs, and targeted cases."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spatialthinker_ros.core.parsing import (
    MAX_FIELD_CHARS,
    MAX_OBJECTS,
    MAX_RELATIONS,
    MAX_TEXT_CHARS,
    MAX_WARNINGS,
    ParsedObject,
    ParsedRelation,
    SpatialResult,
    label_from_id,
    parse_output,
)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "outputs"
CASES = json.loads((CORPUS / "cases.json").read_text())


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c["file"] for c in CASES}) == len(CASES)
    assert any(len(c["objects"]) >= 20 for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["file"][:-4] for c in CASES])
def test_corpus_case(case: dict, data_dir: Path) -> None:
    text = (data_dir / "outputs" / case["file"]).read_text()
    size = tuple(case["image_size"]) if case["image_size"] else None
    result = parse_output(text, image_size=size, options=case["options"])

    assert [(o.id, list(o.bbox)) for o in result.objects] == [
        (i, [float(v) for v in b]) for i, b in case["objects"]
    ]
    assert [(r.subject, r.predicate, r.object) for r in result.relations] == [
        tuple(r) for r in case["relations"]
    ]
    assert result.answer == case["answer"]
    assert result.choice == case["choice"]
    assert result.choice_index == case["choice_index"]
    assert result.strict is case["strict"]
    for fragment in case["warnings"]:
        assert any(fragment in w for w in result.warnings), (fragment, result.warnings)
    if case["no_warnings"]:
        assert result.warnings == []
    # A repair is never silent: every non-strict result says why.
    if not result.strict:
        assert result.warnings


def test_canonical_fields_exact(data_dir: Path) -> None:
    text = (data_dir / "outputs" / "canonical_pretty.txt").read_text()
    result = parse_output(text, (640, 480), ["behind", "in front of"])
    assert result.observation.startswith("A man in a red jacket")
    assert result.reasoning.endswith("farther from the camera.")
    assert result.objects[0] == ParsedObject("bike.1", "bike", (0.0, 272.0, 310.0, 451.0))
    assert result.relations == [ParsedRelation("man.1", "behind", "bike.1")]
    assert all(isinstance(v, float) for o in result.objects for v in o.bbox)


def test_to_dict_is_json_ready(data_dir: Path) -> None:
    text = (data_dir / "outputs" / "many_objects.txt").read_text()
    data = parse_output(text).to_dict()
    again = json.loads(json.dumps(data))
    assert again == data
    assert set(data) == {
        "observation",
        "reasoning",
        "objects",
        "relations",
        "answer",
        "choice",
        "choice_index",
        "strict",
        "warnings",
    }
    assert data["objects"][0] == {
        "id": "chair.1",
        "label": "chair",
        "bbox": [5.0, 5.0, 90.0, 100.0],
    }


@pytest.mark.parametrize(
    ("object_id", "label"),
    [
        ("traffic_light.2", "traffic light"),
        ("man.1", "man"),
        ("a_b_c.10", "a b c"),
        ("x", "x"),
        ("café.1", "café"),
        ("a.b.2", "a.b"),
    ],
)
def test_label_from_id(object_id: str, label: str) -> None:
    assert label_from_id(object_id) == label


def _wrap(scene: str, answer: str = "(A) left") -> str:
    return f"<observe>o</observe><scene>{scene}</scene><think>t</think><answer>{answer}</answer>"


@pytest.mark.parametrize(
    "answer",
    ["(B) in front of", "B", "(b)", "in front of", "B) in front of", "  b  ", "B. in front of"],
)
def test_choice_forms_map_to_index_1(answer: str) -> None:
    result = parse_output(_wrap("{}", answer), options=["behind", "in front of"])
    assert (result.choice, result.choice_index) == ("B", 1)


def test_letter_outside_options_gives_no_choice() -> None:
    result = parse_output(_wrap("{}", "(C) near"), options=["behind", "in front of"])
    assert result.choice is None and result.choice_index is None
    assert any("outside the 2 options" in w for w in result.warnings)


def test_answer_text_contradicting_letter_gives_no_choice() -> None:
    result = parse_output(_wrap(SCENE, "(A) behind"), options=["in front of", "behind"])
    assert (result.choice, result.choice_index) == (None, None)
    assert not result.strict
    # Both readings are named, so an operator sees what the model may have meant.
    (warning,) = [w for w in result.warnings if "contradicts" in w]
    assert "letter A is 'in front of'" in warning and "option B 'behind'" in warning


def test_answer_text_matching_no_option_trusts_the_letter() -> None:
    result = parse_output(_wrap(SCENE, "(A) in front"), options=["in front of", "behind"])
    assert (result.choice, result.choice_index) == ("A", 0)
    assert any("does not match option A; trusting the letter" in w for w in result.warnings)


# A minimal well-formed scene, so the tests below see only the deviation they are about.
SCENE = '{"objects": [{"id": "man.1", "bbox": [1, 2, 3, 4]}], "relationships": []}'


def test_tag_named_in_the_reasoning_does_not_break_the_answer() -> None:
    # The example, verbatim: the first "<answer>" is inside <think>.
    text = (
        f"<observe>o</observe><scene>{SCENE}</scene>"
        "<think>... I will put the letter in the\n<answer> section.</think>\n"
        "<answer> (B) behind </answer>"
    )
    result = parse_output(text, options=["in front of", "behind"])
    assert (result.answer, result.choice, result.choice_index) == ("(B) behind", "B", 1)
    assert result.reasoning.endswith("<answer> section.")
    assert [o.id for o in result.objects] == ["man.1"]
    # The training reward counts every "<answer>" written: two here.
    assert not result.strict
    assert any("<answer> inside <think>" in w for w in result.warnings)


def test_several_answer_blocks_say_which_was_used() -> None:
    text = _wrap(SCENE, "(A) in front of") + "\n<answer>\n(B) behind\n</answer>"
    result = parse_output(text, options=["in front of", "behind"])
    assert (result.answer, result.choice) == ("(B) behind", "B")
    assert any("using block 2 of 2: '(B) behind'" in w for w in result.warnings)
    assert not result.strict


@pytest.mark.parametrize(
    ("tail", "answer"),
    [
        ("The answer is (B) behind", "(B) behind"),
        ("the answer is: (B) behind.", "(B) behind"),
        ("Final answer: B", "B"),
        ("Answer: (B)", "(B)"),
        ("**Answer:** B", "B"),
        ("Final answer:\n\n(B) behind\n", "(B) behind"),
        ("So the man is further away.\nB", "B"),
    ],
)
def test_answer_without_tags_is_recovered(tail: str, answer: str) -> None:
    text = f"<observe>o</observe><scene>{SCENE}</scene><think>t</think>\n{tail}"
    result = parse_output(text, options=["in front of", "behind"])
    assert (result.answer, result.choice, result.choice_index) == (answer, "B", 1)
    assert not result.strict
    assert any("without <answer> tags recovered" in w for w in result.warnings)


def test_empty_scene_object_is_not_the_trained_format() -> None:
    result = parse_output(_wrap("{}"), options=["left"])
    assert not result.strict
    assert any("empty object {}" in w for w in result.warnings)
    # Empty lists are the trained format.
    assert parse_output(_wrap('{"objects": [], "relationships": []}'), options=["left"]).strict


@pytest.mark.parametrize(
    ("raw", "object_id", "label", "strict"),
    [
        ("bike.01", "bike.01", "bike", True),
        ("tv2.1", "tv2.1", "tv2", False),
        ("traffic light.1", "traffic light.1", "traffic light", False),
        ("traffic_light.1", "traffic_light.1", "traffic light", True),
        ("café.1", "café.1", "café", False),
        ("t-shirt.3", "t-shirt.3", "t-shirt", False),
        (" man.1 ", "man.1", "man", False),
        ("thing 3", "thing.3", "thing", False),
        ("café", "café.1", "café", False),
        ('a".1', "a.1", "a", False),
        ("12.5", "object.5", "object", False),
    ],
)
def test_object_ids_kept_when_name_n_like(
    raw: str, object_id: str, label: str, strict: bool
) -> None:
    scene = json.dumps({"objects": [{"id": raw, "bbox": [0, 0, 5, 5]}]}, ensure_ascii=False)
    result = parse_output(_wrap(scene))
    assert [(o.id, o.label) for o in result.objects] == [(object_id, label)]
    assert result.strict is strict
    if object_id != raw:
        assert any(f"read as {object_id}" in w or "no number" in w for w in result.warnings)


def test_relations_find_kept_ids_by_any_spelling_of_the_name() -> None:
    scene = json.dumps(
        {
            "objects": [
                {"id": "traffic light.1", "bbox": [0, 0, 5, 5]},
                {"id": "café.2", "bbox": [0, 0, 5, 5]},
            ],
            "relationships": [
                {"subject": "traffic_light", "predicate": "near", "object": "café"},
                {"subject": "traffic light.1", "predicate": "above", "object": "café.2"},
            ],
        },
        ensure_ascii=False,
    )
    result = parse_output(_wrap(scene))
    assert [(r.subject, r.object) for r in result.relations] == [
        ("traffic light.1", "café.2"),
        ("traffic light.1", "café.2"),
    ]
    assert not any("unknown id" in w for w in result.warnings)


def test_free_form_answer_has_no_choice() -> None:
    result = parse_output(_wrap("{}", "A small red cup"))
    assert result.choice is None and result.choice_index is None
    assert result.answer == "A small red cup"


def test_letter_without_options_is_reported() -> None:
    result = parse_output(_wrap("{}", "(C) near"))
    assert (result.choice, result.choice_index) == ("C", 2)


def test_objects_are_capped_with_warning() -> None:
    objs = ", ".join(f'{{"id": "cup.{i}", "bbox": [0, 0, 5, 5]}}' for i in range(MAX_OBJECTS + 30))
    rels = ", ".join(
        '{"subject": "cup.1", "predicate": "near", "object": "cup.2"}'
        for _ in range(MAX_RELATIONS + 5)
    )
    result = parse_output(_wrap(f'{{"objects": [{objs}], "relationships": [{rels}]}}'))
    assert len(result.objects) == MAX_OBJECTS
    assert len(result.relations) == MAX_RELATIONS
    assert any(f"only the first {MAX_OBJECTS}" in w for w in result.warnings)
    assert any(f"only the first {MAX_RELATIONS}" in w for w in result.warnings)
    # Capping is our limit, not a format violation.
    assert result.strict


def test_text_fields_are_capped() -> None:
    long = "x" * (MAX_TEXT_CHARS + 10)
    long_id = "a" * (MAX_FIELD_CHARS * 2) + ".1"
    scene = f'{{"objects": [{{"id": "{long_id}", "bbox": [0, 0, 1, 1]}}]}}'
    text = (
        f"<observe>{long}</observe><scene>{scene}</scene>"
        f"<think>{long}</think><answer>{long}</answer>"
    )
    result = parse_output(text)
    assert len(result.observation) == MAX_TEXT_CHARS
    assert len(result.reasoning) == MAX_TEXT_CHARS
    assert len(result.answer) == MAX_TEXT_CHARS
    assert all(len(o.id) <= MAX_FIELD_CHARS + 8 for o in result.objects)
    assert any("observation longer than" in w for w in result.warnings)
    assert any("object id longer than" in w for w in result.warnings)


def test_warnings_are_capped() -> None:
    objs = ", ".join(f'{{"id": "thing {i}", "bbox": [0, 0, 5, 5]}}' for i in range(MAX_OBJECTS))
    result = parse_output(_wrap(f'{{"objects": [{objs}]}}'))
    assert len(result.warnings) == MAX_WARNINGS + 1
    assert result.warnings[-1].endswith("further warnings suppressed")


def test_nan_and_huge_numbers_are_not_boxes() -> None:
    big = "9" * 5000
    scene = (
        '{"objects": [{"id": "a.1", "bbox": [NaN, 0, 1, 1]}, '
        f'{{"id": "b.1", "bbox": [{big}, 0, 1, 1]}}, {{"id": "c.1", "bbox": [0, 0, 1e999, 1]}}, '
        '{"id": "d.1", "bbox": [0, 0, 2, 2]}]}'
    )
    for text in (_wrap(scene), _wrap(scene + ",")):  # JSON path and tolerant path
        result = parse_output(text)
        assert [o.id for o in result.objects] == ["d.1"]
        assert not result.strict


def test_bbox_dict_form_is_read() -> None:
    scene = '{"objects": [{"id": "a.1", "bbox": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}}]}'
    result = parse_output(_wrap(scene))
    assert result.objects[0].bbox == (1.0, 2.0, 3.0, 4.0)
    assert not result.strict


def test_deep_nesting_is_harmless() -> None:
    for scene in ("[" * 100_000, "{" * 50_000 + '"a": 1', '{"objects": ' + "[" * 5000):
        result = parse_output(_wrap(scene))
        assert isinstance(result, SpatialResult)
        assert result.objects == []
        assert not result.strict


def test_unterminated_strings_and_escapes() -> None:
    scene = (
        '{"objects": [{"id": "a\\".1", "bbox": [0, 0, 1, 1]}, '
        '{"id": "b.1", "bbox": [0, 0, 1, 1], "n": "x\\\\"}, {"id": "c.1", "bbox": [0, 0, 1, 1]}, '
    )
    result = parse_output(_wrap(scene + "{'id': 'd.1'"))
    assert [o.id for o in result.objects] == ["a.1", "b.1", "c.1"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<answer>",
        "</answer>",
        "<scene></scene>",
        "<scene>{</scene>",
        "<scene>{'objects': [{'id': 1, 'bbox': [1,2,3,4]}]}</scene>",
        '<scene>{"objects": {"id": "a.1"}}</scene>',
        '<scene>{"objects": [1, "a", null, [1, 2]], "relationships": [1, {"subject": 2}]}</scene>',
        '<scene>{"relationships": [{"subject": 1, "predicate": 2, "object": 3}]}</scene>',
        "<scene>" + "\\" * 1000 + "</scene>",
        "<scene>'" + "\\'" * 1000 + "</scene>",
        "\x00\ud800<observe>\U0001f600</observe>",
        "İ" * 100 + "<answer>(A) x</answer>",
    ],
)
def test_odd_inputs_never_raise(text: str) -> None:
    result = parse_output(text, image_size=(100, 100), options=["x", "y"])
    assert isinstance(result, SpatialResult)
    assert not any("internal parser error" in w for w in result.warnings)
    json.dumps(result.to_dict())


def test_non_ascii_before_tags_keeps_positions() -> None:
    # str.lower() would change the length of 'İ' and shift every tag position.
    result = parse_output("İ" * 10 + "<answer>(A) x</answer>", options=["x"])
    assert result.answer == "(A) x"


def test_bad_image_size_is_reported_not_raised() -> None:
    result = parse_output(_wrap('{"objects": [{"id": "a.1", "bbox": [0, 0, 900, 9]}]}'), (0, -1))
    assert result.objects[0].bbox == (0.0, 0.0, 900.0, 9.0)
    assert any("image_size" in w for w in result.warnings)


ADVERSARIAL = [
    "<" * 1_000_000,
    "<scene>" + "[" * 1_000_000,
    "<scene>" + "," * 1_000_000,
    "<scene>" + '"' * 1_000_000,
    "<scene>{" + "'a':" * 250_000,
    "<scene>" + "\\" * 1_000_000,
    "<observe>" * 100_000,
    "<scene>" + '{"objects": [' + '{"id": "a.1", "bbox": [1, 2, 3, 4]},' * 28_000,
    "<scene>```" + "a " * 500_000,
    "(" * 1_000_000,
    "<answer>" + "(A" * 500_000,
    # Tags named inside one open section, and stray closing tags.
    "<think>" + "<answer>" * 100_000 + "</think>",
    "<think>" + "</answer>" * 100_000,
    "</think>" * 100_000,
    "Final answer:" * 70_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_megabyte_is_fast(text: str) -> None:
    # The point is linear time: backtracking would take minutes. This thread's CPU time, not the
    # wall clock, so a loaded CI machine (other processes on the cores) cannot fail it; ~0.4 s.
    start = time.thread_time()
    result = parse_output(text)
    elapsed = time.thread_time() - start
    assert elapsed < 2.0, elapsed
    assert len(result.objects) <= MAX_OBJECTS
    assert len(result.warnings) <= MAX_WARNINGS + 1
    assert not any("internal parser error" in w for w in result.warnings)
