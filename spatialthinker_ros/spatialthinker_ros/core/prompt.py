r"""The SpatialThinker inference prompt.

The text is the model card's inference template, to the byte: the instruction paragraph, a
blank line, ``Image size: {W} x {H}``, then ``"\n\n"`` and the question (the card's usage is
``template + "\n\n" + question``). The size is that of the image the model is actually given,
because the model writes its boxes in pixels of that stated frame (see ``model_frame``).

Layout of the returned prompt::

    <instruction>

    Image size: {W} x {H}

    {question}
    Options:
    (A) first
    (B) second

Options follow the question one per line after ``Options:``, as in the training data and the
authors' evaluation. The ``Options:`` block is present only when options are given; a question
that carries its options inline (the card's own example) is passed through as written.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["INSTRUCTION", "OPTION_LETTERS", "build_prompt", "format_options"]

INSTRUCTION = (
    "You FIRST observe the image in <observe> </observe> tags, then visualise the relevant scene "
    "graph in <scene> </scene> tags, followed by thinking about the reasoning process as an "
    "internal monologue within <think> </think> tags and then provide the final answer. The final "
    "answer MUST BE put within <answer> </answer> tags, and only return the final choice "
    "including the correct option and answer within the answer tags, e.g., "
    "<answer> (A) cat </answer>."
)

#: Letters used to label multiple-choice options, in order.
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_options(options: Sequence[str]) -> str:
    """Render options the way the model was trained to read them.

    Args:
        options: Option texts, at most 26.

    Returns:
        ``Options:`` followed by one ``(A) first`` line per option (joined by newlines, no
        leading or trailing newline).

    Raises:
        ValueError: More options than letters.
    """
    if len(options) > len(OPTION_LETTERS):
        raise ValueError(f"at most {len(OPTION_LETTERS)} options are supported, got {len(options)}")
    # Collapse inner whitespace so an option can never break the one-per-line layout.
    return "Options:" + "".join(
        f"\n({letter}) {' '.join(str(text).split())}"
        for letter, text in zip(OPTION_LETTERS, options, strict=False)
    )


def build_prompt(
    question: str,
    options: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
) -> str:
    """Build the user text for one question.

    Args:
        question: The question (surrounding whitespace is dropped, the rest is kept as
            written, inline options included); free-form questions without options are allowed.
        options: Optional multiple-choice option texts, rendered after the question as
            ``Options:`` and one ``(A) text`` line per option.
        image_size: ``(width, height)`` of the image the model is given (after any resize we do
            ourselves), so the stated frame is the frame the model sees. Required: there is no
            safe default, a wrong stated size silently skews every box.

    Returns:
        The prompt text (the image goes before it in the chat message).

    Raises:
        ValueError: A missing or non-positive image size, or more than 26 options.
    """
    if image_size is None:
        raise ValueError("image_size is required: the model writes boxes in the stated frame")
    width, height = (int(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    text = f"{INSTRUCTION}\n\nImage size: {width} x {height}\n\n{question.strip()}"
    if options:
        text += f"\n{format_options(options)}"
    return text
