"""Tests of the inference prompt against the model card's template and the training layout."""

from __future__ import annotations

import pytest

from spatialthinker_ros.core.parsing import parse_output
from spatialthinker_ros.core.prompt import INSTRUCTION, build_prompt, format_options

# The model card's inference template (OX-PIXL/SpatialThinker-7B, "Usage"), character for
# character: the instruction, a blank line, the size line. The card then sends
# ``template + "\n\n" + question`` with the image first.
CARD_TEMPLATE = (
    "You FIRST observe the image in <observe> </observe> tags, then visualise the relevant scene "
    "graph in <scene> </scene> tags, followed by thinking about the reasoning process as an "
    "internal monologue within <think> </think> tags and then provide the final answer. The final "
    "answer MUST BE put within <answer> </answer> tags, and only return the final choice "
    "including the correct option and answer within the answer tags, e.g., "
    "<answer> (A) cat </answer>.\n\nImage size: {width} x {height}"
)
# The card's own example question, options inline.
CARD_QUESTION = (
    "Where is the cat relative to the couch? (A) on top of (B) in front of (C) behind (D) beside"
)


def _card_prompt(question: str, width: int, height: int) -> str:
    return CARD_TEMPLATE.format(width=width, height=height) + "\n\n" + question


def test_card_example_is_reproduced_to_the_byte() -> None:
    # Inline options (the card's example) pass through untouched.
    assert build_prompt(CARD_QUESTION, image_size=(640, 480)) == _card_prompt(
        CARD_QUESTION, 640, 480
    )
    text = build_prompt(CARD_QUESTION, None, (1316, 728))
    assert text.encode() == _card_prompt(CARD_QUESTION, 1316, 728).encode()
    # The blank line before the size line (a single newline there was the old mismatch).
    assert "</answer>.\n\nImage size: 1316 x 728\n\nWhere is" in text


def test_options_follow_the_training_layout() -> None:
    # generate_data.py: question + "\nOptions:" + "\n(A) opt" per option.
    question = "Where is the man relative to the bike?"
    text = build_prompt(question, ["behind", "in front of"], (644, 476))
    assert text == _card_prompt(question, 644, 476) + "\nOptions:\n(A) behind\n(B) in front of"
    assert text.endswith("bike?\nOptions:\n(A) behind\n(B) in front of")


def test_prompt_free_form_question() -> None:
    text = build_prompt("  How many chairs are there?\n", image_size=(640, 480))
    assert text == _card_prompt("How many chairs are there?", 640, 480)
    assert "Options:" not in text


def test_instruction_is_the_cards_paragraph() -> None:
    assert CARD_TEMPLATE.startswith(INSTRUCTION + "\n\nImage size: ")
    for tag in ("observe", "scene", "think", "answer"):
        assert f"<{tag}> </{tag}>" in INSTRUCTION
    lines = build_prompt("q", image_size=(3, 2)).split("\n")
    assert lines[-5:] == [INSTRUCTION, "", "Image size: 3 x 2", "", "q"]


def test_image_size_is_required_and_positive() -> None:
    with pytest.raises(ValueError, match="required"):
        build_prompt("q")
    with pytest.raises(ValueError, match="positive"):
        build_prompt("q", image_size=(0, 480))


def test_options_one_per_line_and_bounded() -> None:
    # An option's own newlines or padding can never add or break a line.
    assert format_options(["a\nb", "  c  "]) == "Options:\n(A) a b\n(B) c"
    assert format_options([f"o{i}" for i in range(26)]).endswith("\n(Y) o24\n(Z) o25")
    assert format_options([f"o{i}" for i in range(26)]).count("\n") == 26
    with pytest.raises(ValueError, match="at most 26"):
        format_options([str(i) for i in range(27)])


def test_rendered_options_round_trip_through_the_parser() -> None:
    options = ["left of", "right of", "above", "below"]
    lines = format_options(options).split("\n")[1:]
    for index, (letter, line) in enumerate(zip("ABCD", lines, strict=True)):
        result = parse_output(f"<answer> {line} </answer>", options=options)
        assert (result.choice, result.choice_index) == (letter, index)
        assert not any("does not match" in w for w in result.warnings)
