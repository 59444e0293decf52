"""The answer: the option the model chose, and the answer recovered when its tags are missing.

:func:`_read_choice` maps ``(B) behind``, ``B``, ``B) behind`` or the option's text to a letter
and index, and gives no choice when the letter and the text name different options;
:func:`_recover_answer` finds an answer written without ``<answer>`` tags; :func:`_letter_at`
says where in the answer its option letter is written (for reading the model's probabilities of
the letters at that place).
"""

from __future__ import annotations

from collections.abc import Sequence

from spatialthinker_ros.core.parsing.notes import _excerpt, _Notes
from spatialthinker_ros.core.parsing.sections import _ASCII_LOWER


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .")


def _leading_letter(answer: str, with_options: bool) -> tuple[str | None, str]:
    """Split ``(B) text`` / ``B) text`` / ``B`` (and ``B. text`` with options) into letter, rest."""
    s = answer.strip()
    if len(s) >= 3 and s[0] == "(" and s[2] == ")" and s[1].isascii() and s[1].isalpha():
        return s[1].upper(), s[3:].strip()
    if len(s) == 1 and s.isascii() and s.isalpha():
        return s.upper(), ""
    if len(s) >= 2 and s[0].isascii() and s[0].isalpha() and s[1] == ")":
        return s[0].upper(), s[2:].strip()
    if (
        with_options
        and len(s) >= 2
        and s[0].isascii()
        and s[0].isupper()
        and s[1] in ".:"
        and (len(s) == 2 or s[2] == " ")
    ):
        return s[0], s[2:].strip()
    return None, s


def _letter_at(answer: str, with_options: bool) -> int | None:
    """Index in ``answer`` (stripped) of the option letter it starts with, as
    :func:`_leading_letter` reads it (``(B) behind``: 1; ``B) behind``: 0); None when it starts
    with none."""
    letter, _rest = _leading_letter(answer, with_options)
    if letter is None:
        return None
    return 1 if answer[:1] == "(" else 0


def _read_choice(
    answer: str, options: Sequence[str] | None, notes: _Notes
) -> tuple[str | None, int | None]:
    letter, rest = _leading_letter(answer, bool(options))
    if letter is not None and not rest and answer.strip() and answer.strip()[0] != "(":
        notes.add(f"answer is a bare letter {_excerpt(answer.strip())}")
    if not options:
        if letter is None:
            return None, None
        return letter, ord(letter) - ord("A")
    if letter is not None:
        index = ord(letter) - ord("A")
        if index >= len(options):
            notes.add(f"answer letter {letter} is outside the {len(options)} options; no choice")
            return None, None
        if rest and _norm(rest) != _norm(str(options[index])):
            matches = [i for i, o in enumerate(options) if _norm(str(o)) == _norm(rest)]
            if matches:
                # The letter says one option and the text names another: either reading may
                # be the model's intent, and a robot must not act on a coin toss.
                other = chr(65 + matches[0])
                notes.add(
                    f"answer {_excerpt(answer.strip())} contradicts itself: letter {letter} is "
                    f"{_excerpt(str(options[index]))} but the text matches option {other} "
                    f"{_excerpt(str(options[matches[0]]))}; no choice",
                    breaks_format=True,
                )
                return None, None
            notes.add(
                f"answer text {_excerpt(rest)} does not match option {letter}; trusting the letter"
            )
        return letter, index
    target = _norm(answer)
    matches = [i for i, o in enumerate(options) if _norm(str(o)) == target]
    if len(matches) == 1:
        notes.add("answer names an option by its text only")
        return chr(65 + matches[0]), matches[0]
    notes.add(f"answer {_excerpt(answer)} matches none of the options; no choice")
    return None, None


#: Phrases that introduce an answer written without tags ("The answer is (B) behind",
#: "Final answer: B", "Answer: (B)"); matched in ASCII lower case.
_ANSWER_LEADS = ("answer is", "answer:")


def _recover_answer(tail: str, notes: _Notes) -> tuple[str, int]:
    """The answer when ``<answer>`` is missing, from the text after the last section.

    The text after the last ``answer is`` / ``answer:`` when there is one (on its line, or the
    next non-empty line when that is empty), else the last non-empty line.

    Returns:
        The answer and its position in ``tail`` (``("", -1)`` when there is none).
    """
    low = tail.translate(_ASCII_LOWER)
    lead_at, lead = max((low.rfind(lead), lead) for lead in _ANSWER_LEADS)
    if lead_at >= 0:
        lines = tail[lead_at + len(lead) :].splitlines()
        # Markdown emphasis or a colon around the lead ("**Answer:** B", "answer is: B").
        first = lines[0].strip(" \t*:") if lines else ""
        answer = first or next((ln.strip() for ln in lines[1:] if ln.strip()), "")
    else:
        answer = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
    answer = answer.rstrip(" .").strip()
    if not answer:
        notes.add("no answer found", breaks_format=True)
        return "", -1
    notes.add(f"answer without <answer> tags recovered: {_excerpt(answer)}", breaks_format=True)
    # The answer is a stripped piece of its line: after the lead, the first place it occurs;
    # else the last (it is the last non-empty line).
    at = tail.find(answer, lead_at + len(lead)) if lead_at >= 0 else tail.rfind(answer)
    return answer, at
