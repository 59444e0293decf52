"""The ROS-free parts of an answer's confidence: where the letter is, where each token is, the
option probabilities and their temperature; and how the message and the JSON carry them."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from spatialthinker_ros.core.confidence import (
    AnswerConfidence,
    answer_confidence,
    confidence_summary,
    low_confidence_warning,
    object_probabilities,
    with_temperature,
)
from spatialthinker_ros.core.parsing import parse_output
from spatialthinker_ros.core.token_scores import (
    TokenScoreBuilder,
    TokenScores,
    letter_slot,
    letter_variants,
)

OPTIONS = ["left", "behind", "right"]


@pytest.mark.parametrize(
    ("text", "options", "letter"),
    [
        ("<observe>A b</observe><answer>  (B) behind </answer>", OPTIONS, "B"),
        ("<answer>B</answer>", OPTIONS, "B"),
        ("<answer>B) behind</answer>", OPTIONS, "B"),
        ("<answer>B. behind</answer>", OPTIONS, "B"),
        ("<answer> (c) right", OPTIONS, "c"),  # cut off before </answer>
        ("(A) left </answer>", OPTIONS, "A"),  # no opening tag
        ("<think>A or B?</think>\nThe answer is (C) right.", OPTIONS, "C"),
        ("<think>A</think>\nI think so.\n\n (B) behind\n", OPTIONS, "B"),
        ("<answer>(A) x</answer> <answer>(C) right</answer>", OPTIONS, "C"),  # the last block
    ],
)
def test_the_parser_says_where_the_answers_letter_is(text: str, options, letter: str) -> None:
    parsed = parse_output(text, options=options)
    assert parsed.letter_offset is not None
    assert text[parsed.letter_offset] == letter
    start, end = parsed.answer_span
    assert text[start:end] == parsed.answer and start <= parsed.letter_offset < end
    assert "letter_offset" not in parsed.to_dict()


def test_an_answer_without_a_letter_has_no_letter_position() -> None:
    parsed = parse_output("<answer> behind </answer>", options=OPTIONS)
    assert parsed.choice == "B" and parsed.letter_offset is None
    assert parse_output("<think>x</think>").answer_span is None


@pytest.mark.parametrize(
    ("piece", "slot"),
    [
        *[("B", 0), (" B", 1), ("(B", 1), (" (b", 2), ("B)", 0), ("  (  B  ", 5)],
        *[("Bo", None), ("é", None), ("B2", None), ("", None), ("xxxxxxxxxB", None)],
    ],
)
def test_a_letter_token_holds_one_ascii_letter_and_nothing_alphanumeric(piece, slot) -> None:
    assert letter_slot(piece) == slot


def test_letter_variants_keep_the_tokens_shape_and_case() -> None:
    assert letter_variants(" (B", 2)[:3] == [" (A", " (B", " (C"]
    assert letter_variants("b", 0)[25] == "z"


def _scores(pieces: list[bytes], text: str, letters: dict[int, list[float]]) -> TokenScores:
    builder = TokenScoreBuilder()
    for index, piece in enumerate(pieces):
        builder.add(piece, -0.1 * (index + 1), letters.get(index))
    return builder.finish(text)


def test_tokens_are_located_by_their_bytes_even_across_a_split_character() -> None:
    text = "é (B) x"
    pieces = [b"\xc3", b"\xa9", b" (", b"B", b")", b" x"]
    scores = _scores(pieces, text, {})
    assert scores.token_at(text.index("B")) == 3
    assert scores.token_at(0) == 0  # the token with the first byte of "é"
    assert scores.tokens_in(2, 5) == [2, 3, 4]


def test_tokens_after_a_mismatch_are_located_from_the_end() -> None:
    # A server that writes a split character's parts as replacement characters: the start
    # does not match, the answer at the end still does.
    text = "é (B) x"
    pieces = ["\ufffd".encode(), "\ufffd".encode(), b" (", b"B", b")", b" x"]
    scores = _scores(pieces, text, {})
    assert scores.token_at(text.index("B")) == 3
    assert scores.token_at(0) is None


def test_removing_nul_shifts_the_positions_with_the_text() -> None:
    text = "a\x00\x00 (B)"
    scores = _scores([b"a", b"\x00\x00", b" (", b"B", b")"], text, {}).without(text, "\x00")
    clean = text.replace("\x00", "")
    assert scores.token_at(clean.index("B")) == 3


def test_too_many_tokens_make_the_scores_unavailable() -> None:
    builder = TokenScoreBuilder(max_tokens=2)
    for piece in (b"a", b"b", b"c"):
        builder.add(piece, -1.0)
    assert "longer than 2 tokens" in builder.finish("abc").reason


def _letters(**probabilities: float) -> list[float]:
    return [
        math.log(probabilities[c]) if c in probabilities else -math.inf for c in "ABCDEFGHIJKLM"
    ] + [-math.inf] * 13


def _answer(text: str, letters: list[float], options=OPTIONS) -> AnswerConfidence:
    pieces = [b"<answer>", b" (", text[10].encode(), text[11:].encode()]
    scores = _scores(pieces, text, {2: letters})
    return answer_confidence(parse_output(text, options=options), options, scores)


def test_option_probabilities_are_renormalised_over_the_options() -> None:
    confidence = _answer("<answer> (B) behind</answer>", _letters(A=0.1, B=0.6, C=0.1, D=0.2))
    assert confidence.measured and confidence.choice_index == 1
    assert confidence.option_probabilities == pytest.approx([0.125, 0.75, 0.125])
    assert confidence.confidence == pytest.approx(0.75)
    assert confidence.option_mass == pytest.approx(0.8)
    assert confidence.other_letters_mass == pytest.approx(0.2)


def test_a_letter_outside_the_options_has_probabilities_but_no_confidence() -> None:
    confidence = _answer("<answer> (D) under</answer>", _letters(A=0.1, B=0.3, C=0.1, D=0.5))
    assert confidence.measured and confidence.choice_index is None
    assert confidence.confidence == 0.0
    assert confidence.option_probabilities == pytest.approx([0.2, 0.6, 0.2])


@pytest.mark.parametrize(
    ("scores", "options", "text", "reason"),
    [
        (None, OPTIONS, "<answer>(A) left</answer>", "measures no token probabilities"),
        (TokenScores.unavailable("the server said no"), OPTIONS, "<answer>(A)</answer>", "said no"),
        (TokenScores.unavailable("x"), [], "<answer>(A) left</answer>", "open question"),
        (TokenScores.unavailable("x"), OPTIONS, "<answer>left</answer>", "by the option's text"),
        (TokenScores(), OPTIONS, "<answer>(A) left</answer>", "its token was not found"),
    ],
)
def test_why_a_confidence_is_unavailable_is_said(scores, options, text, reason) -> None:
    confidence = answer_confidence(parse_output(text, options=options), options, scores)
    assert not confidence.measured and reason in confidence.note
    assert confidence.confidence == 0.0 and confidence.option_probabilities == ()


def test_an_option_letter_that_is_no_token_there_makes_it_unavailable() -> None:
    letters = _letters(A=0.5, B=0.5)
    letters[2] = math.nan  # "C" cannot be written as one token in this place
    confidence = _answer("<answer> (B) behind</answer>", letters)
    assert not confidence.measured and "letter(s) C" in confidence.note


def test_temperature_flattens_or_sharpens_but_never_changes_the_choice() -> None:
    confidence = _answer("<answer> (B) behind</answer>", _letters(A=0.1, B=0.6, C=0.1, D=0.2))
    assert with_temperature(confidence, 1.0).option_probabilities == pytest.approx(
        confidence.option_probabilities
    )
    flat, sharp = with_temperature(confidence, 4.0), with_temperature(confidence, 0.25)
    assert flat.confidence < confidence.confidence < sharp.confidence
    for tempered in (flat, sharp):
        assert sum(tempered.option_probabilities) == pytest.approx(1.0)
        best = max(range(3), key=lambda i: tempered.option_probabilities[i])
        assert best == 1 and tempered.option_mass == confidence.option_mass
    # exp(log p / 2) is sqrt(p): 0.1, 0.6, 0.1 -> sqrt each, renormalised.
    roots = [math.sqrt(0.1), math.sqrt(0.6), math.sqrt(0.1)]
    assert with_temperature(confidence, 2.0).option_probabilities == pytest.approx(
        [r / sum(roots) for r in roots]
    )
    with pytest.raises(ValueError, match="positive"):
        with_temperature(confidence, 0.0)


def test_low_confidence_warning() -> None:
    confidence = AnswerConfidence(source="tokens", confidence=0.4, option_probabilities=(0.4,))
    assert low_confidence_warning(confidence, 0.0, True) == ""
    assert low_confidence_warning(confidence, 0.5, False) == ""  # an open question
    assert low_confidence_warning(confidence, 0.5, True).startswith("low confidence: 0.400")
    assert low_confidence_warning(confidence, 0.3, True) == ""
    unmeasured = AnswerConfidence(note="the server returned no log-probabilities")
    assert "not measured (the server" in low_confidence_warning(unmeasured, 0.5, True)


def test_the_recent_confidence_distribution() -> None:
    summary = confidence_summary([0.1, 0.5, None, 0.9, 1.0], 0.6)
    assert summary["confidence_answers"] == 5 and summary["confidence_measured"] == 4
    assert summary["confidence_p50"] == pytest.approx(0.7)
    assert (
        summary["confidence_histogram"] == "0-0.2: 1, 0.2-0.4: 0, 0.4-0.6: 1, 0.6-0.8: 0, 0.8-1: 2"
    )
    assert summary["confidence_low"] == 3  # 0.1, 0.5 and the unmeasured one
    empty = confidence_summary([], 0.0)
    assert math.isnan(empty["confidence_p10"]) and empty["confidence_low"] == 0


def test_the_message_and_the_json_carry_the_confidence() -> None:
    from std_msgs.msg import Header

    from spatialthinker_ros.answering.pipeline import Frames, SceneParams, build_answer
    from spatialthinker_ros.core.engine import EngineResult
    from spatialthinker_ros.ros.answer_json import answer_to_json
    from spatialthinker_ros.ros.ros_conversions import answer_message, confidence_line

    text = "<answer> (B) behind</answer>"
    parsed = parse_output(text, options=OPTIONS)
    result = EngineResult(
        1, parsed, text, (8, 8), (8, 8), 0.0, 0.1, 0.1, 10, 5, "m",
        confidence=_answer(text, _letters(A=0.1, B=0.6, C=0.1, D=0.2)),
    )  # fmt: skip
    params = SceneParams(confidence_temperature=2.0, min_confidence=0.9)
    answer = build_answer("r", "q", OPTIONS, result, Frames(np.zeros((8, 8, 3), np.uint8)), params)
    message = answer_message(Header(), answer)
    tempered = with_temperature(result.confidence, 2.0)
    assert list(message.option_probabilities) == pytest.approx(tempered.option_probabilities)
    assert message.confidence == pytest.approx(tempered.confidence)
    assert message.confidence_source == "tokens" and message.confidence_note == ""
    assert message.option_mass == pytest.approx(0.8) and message.other_letters_mass == 0.2
    assert any(w.startswith("low confidence") for w in message.warnings)
    data = answer_to_json(message)
    assert data["confidence"] == pytest.approx(tempered.confidence, abs=1e-6)
    assert data["option_probabilities"] == pytest.approx(tempered.option_probabilities, abs=1e-6)
    assert confidence_line(message).startswith(f"confidence {tempered.confidence:.2f} (B): A ")
    # Unavailable: empty, zero and null where nothing was measured; the reason said.
    bare = build_answer(
        "r", "q", OPTIONS, EngineResult(1, parsed, text, (8, 8), (8, 8), 0, 0, 0, 0, 0, "m"),
        Frames(np.zeros((8, 8, 3), np.uint8)), SceneParams(),
    )  # fmt: skip
    message = answer_message(Header(), bare)
    assert message.confidence_source == "unavailable" and message.confidence == 0.0
    assert message.confidence_note == "the backend measures no token probabilities"
    assert math.isnan(message.answer_mean_logprob)
    data = answer_to_json(message)
    assert data["confidence"] is None and data["answer_mean_logprob"] is None
    assert confidence_line(message) == (
        "confidence not measured (the backend measures no token probabilities)"
    )


def test_the_debug_image_shows_the_confidence_line() -> None:
    from spatialthinker_ros.core.annotate import confidence_text, draw_annotations

    line = confidence_text(3, [0.1, 0.8, 0.1], 0.8, "B")
    assert line == "confidence 0.80 (B): A 0.10, B 0.80, C 0.10"
    assert confidence_text(0, [], None, "") is None  # an open question has none
    assert confidence_text(2, [], None, "A", "no log-probabilities") == (
        "confidence not measured (no log-probabilities)"
    )
    rgb = np.full((240, 320, 3), 128, np.uint8)
    plain = draw_annotations(rgb, [], answer="(B) behind", question="Where?")
    shown = draw_annotations(rgb, [], answer="(B) behind", question="Where?", confidence=line)
    # One banner line more: the banner reaches higher up the image.
    banner_top = [int(np.argmax((image != 128).any(axis=(1, 2)))) for image in (plain, shown)]
    assert banner_top[1] < banner_top[0]


def test_an_objects_score_is_the_probability_of_writing_its_id_in_the_scene_graph() -> None:
    # "cup.1" is named in <observe> first: its score is read where the scene graph writes it.
    text = (
        '<observe> cup.1 </observe>\n<scene>\n{"objects": [{"id": "cup.1", "bbox": [1, 2, 3, 4]},'
        ' {"id": "mug.2", "bbox": [5, 6, 7, 8]}], "relationships": []}\n</scene>\n'
        "<think> x </think>\n<answer> cup </answer>"
    )
    scene = text.index("<scene>")
    cup = text.index('"cup.1"', scene) + 1
    mug = text.index('"mug.2"', scene) + 1
    # Tokens cut so that "cup.1" is spread over three ("cu", "p.", "1\"") and "mug.2" over one.
    cuts = sorted({0, cup, cup + 2, cup + 4, cup + 6, mug - 1, mug, mug + 5, len(text)})
    pieces = [text[a:b].encode() for a, b in itertools.pairwise(cuts)]
    scores = _scores(pieces, text, {})  # token k has log-probability -0.1 (k + 1)
    parsed = parse_output(text)
    assert [o.id for o in parsed.objects] == ["cup.1", "mug.2"]
    first = cuts.index(cup)
    expected_cup = math.exp(-0.1 * ((first + 1) + (first + 2) + (first + 3)))
    second = cuts.index(mug)
    expected_mug = math.exp(-0.1 * (second + 1))
    cup_score, mug_score = object_probabilities(text, parsed, scores)
    assert cup_score == pytest.approx(expected_cup)
    assert mug_score == pytest.approx(expected_mug)
    # Not measured: NaN, never a stand-in number.
    unmeasured = object_probabilities(text, parsed, TokenScores.unavailable("no logprobs"))
    assert all(math.isnan(v) for v in unmeasured)
    assert all(math.isnan(v) for v in object_probabilities(text, parsed, None))
