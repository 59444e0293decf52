"""Tests of the inference prompt."""

from __future__ import annotations

import pytest

from spatialthinker_ros.parsing import parse_output
from spatialthinker_ros.prompt import INSTRUCTION, build_prompt, format_options


def test_prompt_layout_with_options() -> None:
    text = build_prompt(
        "Where is the man relative to the bike?", ["behind", "in front of"], (644, 476)
    )
    assert text == (
        f"{INSTRUCTION}\nImage size: 644 x 476\n\n"
        "Where is the man relative to the bike?\nOptions: (A) behind (B) in front of"
    )


def test_prompt_free_form_question() -> None:
    text = build_prompt("  How many chairs are there?\n", image_size=(640, 480))
    assert text.endswith("Image size: 640 x 480\n\nHow many chairs are there?")
    assert "Options:" not in text


def test_instruction_names_the_four_tags_and_answer_format() -> None:
    for tag in ("observe", "scene", "think", "answer"):
        assert f"<{tag}> </{tag}>" in INSTRUCTION
    assert "<answer> (A) cat </answer>" in INSTRUCTION
    # The size line is the last line before the question, as on the model card.
    lines = build_prompt("q", image_size=(3, 2)).split("\n")
    assert lines[-3:] == ["Image size: 3 x 2", "", "q"]


def test_image_size_is_required_and_positive() -> None:
    with pytest.raises(ValueError, match="required"):
        build_prompt("q")
    with pytest.raises(ValueError, match="positive"):
        build_prompt("q", image_size=(0, 480))


def test_options_stay_on_one_line_and_are_bounded() -> None:
    assert format_options(["a\nb", "  c  "]) == "(A) a b (B) c"
    assert format_options([f"o{i}" for i in range(26)]).endswith("(Z) o25")
    with pytest.raises(ValueError, match="at most 26"):
        format_options([str(i) for i in range(27)])


def test_rendered_options_round_trip_through_the_parser() -> None:
    options = ["left of", "right of", "above", "below"]
    rendered = format_options(options)
    for index, letter in enumerate("ABCD"):
        start = rendered.index(f"({letter})")
        end = rendered.find(" (", start + 1)
        answer = rendered[start:] if end < 0 else rendered[start:end]
        result = parse_output(f"<answer> {answer} </answer>", options=options)
        assert (result.choice, result.choice_index) == (letter, index)
        assert not any("does not match" in w for w in result.warnings)
