"""Property-based tests of parse_output: it never raises, boxes stay in the image, ids unique."""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spatialthinker_ros.core.parsing import MAX_OBJECTS, MAX_RELATIONS, SpatialResult, parse_output

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces real outputs are made of, so random text reaches the interesting code paths.
FRAGMENTS = [
    "<observe>", "</observe>", "<scene>", "</scene>", "<think>", "</think>", "<answer>",
    "</answer>", "{", "}", "[", "]", "(", ")", ":", ",", '"', "'", "\\", "```json\n", "```",
    '"objects"', '"relationships"', '"id"', '"bbox"', '"subject"', '"predicate"', '"object"',
    '"man.1"', "'bike.1'", "traffic light.2", "-12.5", "1e3", "NaN", "True", "None", "null",
    "(A) behind", "B", " ", "\n",
]  # fmt: skip

ids = st.from_regex(r"[a-z_ -]{1,8}(\.[0-9]{1,2})?", fullmatch=True)
coords = st.one_of(
    st.integers(-2000, 4000),
    st.floats(-1e4, 1e4, allow_nan=False),
    st.integers(-2000, 4000).map(str),
)
boxes = st.one_of(st.lists(coords, min_size=4, max_size=4), st.lists(coords, max_size=6))
objects = st.fixed_dictionaries({"id": ids, "bbox": boxes})
relations = st.fixed_dictionaries(
    {"subject": ids, "predicate": st.text(max_size=12), "object": ids}
)
scenes = st.fixed_dictionaries(
    {"objects": st.lists(objects, max_size=12), "relationships": st.lists(relations, max_size=6)}
)
sizes = st.tuples(st.integers(1, 2000), st.integers(1, 2000))


def _render(scene: dict, style: int) -> str:
    text = json.dumps(scene, indent=None if style % 2 else 1)
    if style == 2:
        text = text.replace('"', "'")
    if style == 3:
        text = "```json\n" + text + "\n```"
    return text


@st.composite
def outputs(draw: st.DrawFn) -> str:
    scene = _render(draw(scenes), draw(st.integers(0, 3)))
    answer = draw(st.sampled_from(["(A) behind", "B", "(c) near", "in front of", "", "(Z)"]))
    return (
        f"<observe> {draw(st.text(max_size=30))} </observe>\n<scene>\n{scene}\n</scene>\n"
        f"<think> {draw(st.text(max_size=30))} </think>\n<answer> {answer} </answer>"
    )


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A plausible output with random cuts, deletions, duplications and insertions."""
    text = draw(outputs())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        if op == 0:
            text = text[:i]  # token limit
        elif op == 1:
            text = text[:i] + text[j:]
        elif op == 2:
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(st.sampled_from(FRAGMENTS)) + text[i:]
    return text


def _check_invariants(result: SpatialResult, size: tuple[int, int] | None) -> None:
    assert isinstance(result, SpatialResult)
    # parse_output's last-resort guard would hide a crash; a crash is still a bug.
    assert not any("internal parser error" in w for w in result.warnings), result.warnings
    object_ids = [o.id for o in result.objects]
    assert len(set(object_ids)) == len(object_ids)
    assert len(result.objects) <= MAX_OBJECTS
    assert len(result.relations) <= MAX_RELATIONS
    for obj in result.objects:
        x1, y1, x2, y2 = obj.bbox
        assert x1 <= x2 and y1 <= y2
        if size is not None:
            assert 0 <= x1 <= x2 <= size[0]
            assert 0 <= y1 <= y2 <= size[1]
    if result.choice_index is not None:
        assert result.choice == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[result.choice_index]
    json.dumps(result.to_dict())


@SETTINGS
@given(st.text(max_size=400), st.one_of(st.none(), sizes))
def test_arbitrary_text_never_raises(text: str, size: tuple[int, int] | None) -> None:
    _check_invariants(parse_output(text, size, ["behind", "in front of"]), size)


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join), st.one_of(st.none(), sizes))
def test_fragment_soup_never_raises(text: str, size: tuple[int, int] | None) -> None:
    _check_invariants(parse_output(text, size, ["behind", "in front of", "near"]), size)


@SETTINGS
@given(mutated(), st.one_of(st.none(), sizes))
def test_mutated_outputs_never_raise(text: str, size: tuple[int, int] | None) -> None:
    _check_invariants(parse_output(text, size, ["behind", "in front of"]), size)


@SETTINGS
@given(scenes, sizes)
def test_every_usable_object_is_kept_and_mapped_into_the_image(
    scene: dict, size: tuple[int, int]
) -> None:
    text = (
        f"<observe>o</observe><scene>{json.dumps(scene)}</scene><think>t</think><answer>A</answer>"
    )
    result = parse_output(text, size)
    _check_invariants(result, size)
    # Nothing is lost silently: an object that is missing from the result was warned about.
    if len(result.objects) < len(scene["objects"]):
        assert result.warnings


@SETTINGS
@given(st.lists(st.from_regex(r"[a-z]{1,6}\.[1-9]", fullmatch=True), unique=True, max_size=15))
def test_well_formed_scene_is_strict_and_exact(object_ids: list[str]) -> None:
    scene = {
        "objects": [
            {"id": oid, "bbox": [i, i, i + 10, i + 20]} for i, oid in enumerate(object_ids)
        ],
        "relationships": [
            {"subject": a, "predicate": "near", "object": b}
            for a, b in itertools.pairwise(object_ids)
        ],
    }
    text = (
        f"<observe>o</observe>\n<scene>{json.dumps(scene)}</scene>\n<think>t</think>\n"
        "<answer> (A) near </answer>"
    )
    result = parse_output(text, (1000, 1000), ["near", "far"])
    assert result.strict
    assert result.warnings == []
    assert [o.id for o in result.objects] == object_ids
    assert [o.bbox for o in result.objects] == [
        (float(i), float(i), float(i + 10), float(i + 20)) for i in range(len(object_ids))
    ]
    assert len(result.relations) == max(0, len(object_ids) - 1)
    assert result.choice_index == 0


# Reasoning that names other sections' tags, and stray brackets. Its own tags are left out: a
# second <think> starts the section over, and </think> ends it.
MENTIONS = [f for f in FRAGMENTS if f not in ("<think>", "</think>")] + [
    "I will answer in the",
    "section.",
]


@SETTINGS
@given(
    st.lists(st.sampled_from(MENTIONS), max_size=30).map("".join),
    st.sampled_from(["in front of", "behind", "near"]),
)
def test_tags_named_in_the_reasoning_never_change_the_answer(reasoning: str, option: str) -> None:
    options = ["in front of", "behind", "near"]
    letter = "ABC"[options.index(option)]
    text = (
        '<observe>o</observe>\n<scene>{"objects": [], "relationships": []}</scene>\n'
        f"<think>{reasoning}</think>\n<answer> ({letter}) {option} </answer>"
    )
    result = parse_output(text, (640, 480), options)
    _check_invariants(result, (640, 480))
    assert (result.choice, result.answer) == (letter, f"({letter}) {option}")
    assert result.reasoning == reasoning.strip()
    assert result.objects == []
    # Strict exactly when the reasoning names no opening tag (the training reward counts them).
    assert result.strict is not any(f"<{t}>" in reasoning for t in ("observe", "scene", "answer"))
