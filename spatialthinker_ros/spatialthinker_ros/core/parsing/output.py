"""The entry point: :func:`parse_output` reads one whole model output into a SpatialResult.

It splits the sections (:mod:`.sections`), reads the scene (:mod:`.scene`) and the answer
(:mod:`.answer_choice`), caps the text fields, and turns any internal error into a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from spatialthinker_ros.core.parsing.answer_choice import (
    _letter_at,
    _read_choice,
    _recover_answer,
)
from spatialthinker_ros.core.parsing.notes import _cap, _excerpt, _Notes
from spatialthinker_ros.core.parsing.results import ParsedObject, ParsedRelation, SpatialResult
from spatialthinker_ros.core.parsing.scene import _read_scene
from spatialthinker_ros.core.parsing.sections import TAGS, _split_sections

#: Observation, reasoning, answer: 2,048 generated tokens are ~8k characters, so 16k is ample.
MAX_TEXT_CHARS = 16_384


def _valid_size(image_size: Any, notes: _Notes) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError):
        notes.add(f"image_size {_excerpt(image_size)} is not (width, height); boxes not clipped")
        return None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        notes.add(f"image_size {_excerpt(image_size)} is not positive; boxes not clipped")
        return None
    return int(w), int(h)


def parse_output(
    text: str,
    image_size: tuple[int, int] | None = None,
    options: Sequence[str] | None = None,
) -> SpatialResult:
    """Parse one model output.

    Args:
        text: The generated text.
        image_size: ``(width, height)`` stated in the prompt; when given, boxes are clipped to it
            and boxes entirely outside it are dropped.
        options: The multiple-choice options asked, to map the answer to a letter and index.

    Returns:
        The result; never raises for a ``str`` input.
    """
    notes = _Notes()
    try:
        return _parse(text, image_size, options, notes)
    except Exception as exc:  # last-resort guard: a parser bug must not take down the node
        notes.add(
            f"internal parser error ({type(exc).__name__}); result incomplete", breaks_format=True
        )
        return SpatialResult(strict=False, warnings=notes.finish())


def _parse(
    text: str,
    image_size: tuple[int, int] | None,
    options: Sequence[str] | None,
    notes: _Notes,
) -> SpatialResult:
    if not isinstance(text, str):
        notes.add(f"input is {type(text).__name__}, not str", breaks_format=True)
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else ""
    size = _valid_size(image_size, notes)
    split = _split_sections(text, notes)
    sections = split.used
    for tag in TAGS:
        if sections[tag].content is None and tag != "answer":
            notes.add(f"missing <{tag}> section", breaks_format=True)

    observation = _cap(
        (sections["observe"].content or "").strip(), MAX_TEXT_CHARS, "observation", notes
    )
    reasoning = _cap((sections["think"].content or "").strip(), MAX_TEXT_CHARS, "reasoning", notes)

    objects: list[ParsedObject] = []
    relations: list[ParsedRelation] = []
    if sections["scene"].content is not None:
        objects, relations = _read_scene(sections["scene"].content, size, notes)

    section = sections["answer"]
    if section.content is not None:
        answer = section.content.strip()
        answer_at = section.body + len(section.content) - len(section.content.lstrip())
        if not answer:
            notes.add("empty <answer>")
        trailing = text[split.tail :].strip()
        if trailing:
            notes.add(f"text after the last tag ignored: {_excerpt(trailing)}")
    else:
        answer, answer_at = _recover_answer(text[split.tail :], notes)
        answer_at += split.tail
    answer = _cap(answer, MAX_TEXT_CHARS, "answer", notes)
    # An empty answer was already reported (missing section or empty tags need no second note).
    choice, choice_index = _read_choice(answer, options, notes) if answer else (None, None)
    letter_at = _letter_at(answer, bool(options)) if answer else None
    letter_offset = None if letter_at is None else answer_at + letter_at
    if letter_offset is not None and text[letter_offset : letter_offset + 1].upper() != (
        answer[letter_at].upper()
    ):
        letter_offset = None  # a position that does not hold the letter is no position
    return SpatialResult(
        observation=observation,
        reasoning=reasoning,
        objects=objects,
        relations=relations,
        answer=answer,
        choice=choice,
        choice_index=choice_index,
        strict=notes.strict,
        warnings=notes.finish(),
        answer_span=(answer_at, answer_at + len(answer)) if answer else None,
        letter_offset=letter_offset,
    )
