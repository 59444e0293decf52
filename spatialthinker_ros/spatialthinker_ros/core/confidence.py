"""How sure the model was of its answer, read from its own tokens (ROS-free).

A multiple-choice answer starts with the option letter (``(B) behind``). Where the model wrote
that letter, it had a probability for every letter it could have written instead; the backend
measured those (:class:`~spatialthinker_ros.core.token_scores.TokenScores`) and the parser found
where the letter is (``SpatialResult.letter_offset``). :func:`answer_confidence` puts the two
together:

* ``option_probabilities``: the probability of each option's letter at that place, renormalised
  over the options (they sum to 1): ``p_i = exp(l_i) / sum_j exp(l_j)``, ``l_i`` the natural-log
  probability of writing option ``i``'s letter there. A letter a server did not list among its
  top alternatives counts as 0 (a lower bound; see ``token_scores``);
* ``confidence``: the chosen option's probability (0 when no option was chosen);
* ``option_mass`` / ``other_letters_mass``: the raw probability (before renormalising) on the
  options' letters together, and on the letters A-Z outside the options;
* ``answer_mean_logprob``: for every answer, open questions included, the mean log-probability
  per token of the answer text: a likelihood under the model, not a probability of being right.

These are probabilities under the model, not of being right: they are calibrated only after a
temperature is fitted on labelled data (``spatialthinker eval --fit-temperature``) and applied
(:func:`with_temperature`, the ``confidence_temperature`` parameter).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spatialthinker_ros.core.parsing import SpatialResult
from spatialthinker_ros.core.token_scores import LETTERS, TokenScores, logsumexp

__all__ = [
    "SOURCE_TOKENS",
    "SOURCE_UNAVAILABLE",
    "AnswerConfidence",
    "answer_confidence",
    "confidence_summary",
    "low_confidence_warning",
    "object_probabilities",
    "unavailable",
    "with_temperature",
]

#: ``AnswerConfidence.source`` when the probabilities were read from the model's tokens.
SOURCE_TOKENS = "tokens"
#: ``AnswerConfidence.source`` when they could not be (``note`` says why).
SOURCE_UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class AnswerConfidence:
    """The model's probabilities of an answer (see the module doc).

    Attributes:
        source: :data:`SOURCE_TOKENS` or :data:`SOURCE_UNAVAILABLE`.
        note: Why it is unavailable ("" when it is not).
        option_logprobs: Natural-log probability of writing each option's letter at the place
            the model wrote its letter, untempered (``-inf``: not listed by the server).
        option_probabilities: Per option, renormalised over the options, with ``temperature``
            applied; empty when unavailable.
        confidence: ``option_probabilities[choice_index]``; 0 when unavailable or no option
            was chosen.
        choice_index: The chosen option (None: none).
        option_mass: Raw probability of the options' letters together (0 when unavailable).
        other_letters_mass: Raw probability of the letters A-Z outside the options (0 when
            unavailable; a lower bound when the server listed only its top alternatives).
        answer_mean_logprob: Mean natural-log probability per token of the answer's text
            (NaN when not measured).
        answer_tokens: Tokens that mean is over.
        temperature: The temperature applied to ``option_probabilities``.
    """

    source: str = SOURCE_UNAVAILABLE
    note: str = ""
    option_logprobs: tuple[float, ...] = ()
    option_probabilities: tuple[float, ...] = ()
    confidence: float = 0.0
    choice_index: int | None = None
    option_mass: float = 0.0
    other_letters_mass: float = 0.0
    answer_mean_logprob: float = math.nan
    answer_tokens: int = 0
    temperature: float = 1.0

    @property
    def measured(self) -> bool:
        """Whether the option probabilities come from the model's tokens."""
        return self.source == SOURCE_TOKENS


def unavailable(note: str, mean_logprob: tuple[float, int] = (math.nan, 0)) -> AnswerConfidence:
    """An answer's confidence that could not be read, and why (with the answer's mean token
    log-probability and its token count, when measured)."""
    return AnswerConfidence(
        source=SOURCE_UNAVAILABLE,
        note=note,
        answer_mean_logprob=mean_logprob[0],
        answer_tokens=mean_logprob[1],
    )


def _mean_logprob(parsed: SpatialResult, scores: TokenScores | None) -> tuple[float, int]:
    """Mean log-probability of the answer's tokens and their count (NaN, 0: not measured)."""
    if scores is None or scores.reason or parsed.answer_span is None:
        return math.nan, 0
    tokens = scores.tokens_in(*parsed.answer_span)
    if not tokens:
        return math.nan, 0
    return sum(scores.logprobs[t] for t in tokens) / len(tokens), len(tokens)


def _why_unavailable(
    parsed: SpatialResult, options: Sequence[str], scores: TokenScores | None
) -> str:
    """Why no option probabilities can be read ("" when they can be tried)."""
    if not options:
        return "open question: no options to give probabilities to (see answer_mean_logprob)"
    if parsed.letter_offset is None:
        if parsed.choice_index is not None:
            return "answer without a letter: it names its option by the option's text"
        return "answer without a letter"
    if scores is None:
        return "the backend measures no token probabilities"
    return scores.reason


def answer_confidence(
    parsed: SpatialResult, options: Sequence[str], scores: TokenScores | None
) -> AnswerConfidence:
    """The option probabilities of one parsed answer from its backend's token scores.

    Args:
        parsed: The parsed output (its ``letter_offset`` and ``answer_span`` refer to the text
            the scores were measured on).
        options: The options asked (empty for an open question).
        scores: What the backend measured (None: nothing).

    Returns:
        The confidence, or why it is unavailable; never raises.
    """
    try:
        return _read_confidence(parsed, options, scores)
    except Exception as exc:  # last-resort guard: the answer must not be lost to its confidence
        return unavailable(f"internal error reading the probabilities ({type(exc).__name__})")


def _read_confidence(
    parsed: SpatialResult, options: Sequence[str], scores: TokenScores | None
) -> AnswerConfidence:
    measured = _mean_logprob(parsed, scores)
    reason = _why_unavailable(parsed, options, scores)
    if reason or scores is None or parsed.letter_offset is None:
        return unavailable(reason, measured)
    token = scores.token_at(parsed.letter_offset)
    letters = scores.letters.get(token) if token is not None else None
    if letters is None:
        why = "its token was not found" if token is None else "its token holds more than a letter"
        return unavailable(f"the answer's letter cannot be scored: {why}", measured)
    logprobs = tuple(letters[: len(options)])
    missing = [LETTERS[i] for i, value in enumerate(logprobs) if math.isnan(value)]
    if missing:
        return unavailable(
            f"option letter(s) {', '.join(missing)} cannot be written as one token where the"
            " model wrote its letter",
            measured,
        )
    total = logsumexp(logprobs)
    if total == -math.inf:
        return unavailable("no option's letter has a probability where the letter is", measured)
    probabilities = tuple(math.exp(value - total) for value in logprobs)
    choice = parsed.choice_index
    chosen = choice is not None and 0 <= choice < len(options)
    outside = [v for v in letters[len(options) :] if not math.isnan(v)]
    return AnswerConfidence(
        source=SOURCE_TOKENS,
        option_logprobs=logprobs,
        option_probabilities=probabilities,
        confidence=probabilities[choice] if chosen else 0.0,
        choice_index=choice if chosen else None,
        option_mass=math.exp(total),
        other_letters_mass=math.exp(logsumexp(outside)),
        answer_mean_logprob=measured[0],
        answer_tokens=measured[1],
    )


def object_probabilities(
    text: str, parsed: SpatialResult, scores: TokenScores | None
) -> tuple[float, ...]:
    """For each parsed object, the probability the model gave to writing its id where it wrote
    it in the scene graph: the product of the probabilities of the tokens that hold the id's
    characters (its first quoted occurrence after ``<scene>``, which is in the objects list).

    A likelihood under the model of naming that object there, not a calibrated probability that
    the object exists. NaN where it cannot be measured: no token scores, or the id not found as
    written (the parser repaired it).

    Args:
        text: The output the scores were measured on (``EngineResult.raw_text``).
        parsed: Its parsed form (the ids).
        scores: What the backend measured (None: nothing).
    """
    objects = parsed.objects
    if scores is None or scores.reason:
        return (math.nan,) * len(objects)
    scene = max(text.find("<scene>"), 0)
    found = []
    for obj in objects:
        at = text.find(f'"{obj.id}"', scene) if obj.id else -1
        tokens = scores.tokens_in(at + 1, at + 1 + len(obj.id)) if at >= 0 else []
        logprob = sum(scores.logprobs[t] for t in tokens) if tokens else math.nan
        found.append(math.exp(logprob) if math.isfinite(logprob) else math.nan)
    return tuple(found)


def with_temperature(confidence: AnswerConfidence, temperature: float) -> AnswerConfidence:
    """``confidence`` with its option probabilities at ``temperature``:
    ``p_i = exp(l_i / T) / sum_j exp(l_j / T)`` (T > 1 flattens, T < 1 sharpens; the chosen
    option stays the most probable one it was). The masses and the mean log-probability stay
    the model's own.

    Raises:
        ValueError: A temperature that is not a positive finite number.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"confidence temperature must be positive and finite, not {temperature}")
    if not confidence.measured:
        return dataclasses.replace(confidence, temperature=temperature)
    scaled = [v / temperature for v in confidence.option_logprobs]
    total = logsumexp(scaled)
    probabilities = tuple(math.exp(v - total) for v in scaled)
    index = confidence.choice_index
    return dataclasses.replace(
        confidence,
        option_probabilities=probabilities,
        confidence=probabilities[index] if index is not None else 0.0,
        temperature=temperature,
    )


def low_confidence_warning(
    confidence: AnswerConfidence, min_confidence: float, has_options: bool
) -> str:
    """The ``low confidence`` warning of a multiple-choice answer below ``min_confidence``
    (or whose confidence could not be measured); "" when none is due (0 turns it off)."""
    if min_confidence <= 0 or not has_options:
        return ""
    if not confidence.measured:
        return (
            f"low confidence: not measured ({confidence.note}); min_confidence {min_confidence:g}"
        )
    if confidence.confidence < min_confidence:
        return (
            f"low confidence: {confidence.confidence:.3f} is below min_confidence"
            f" {min_confidence:g}"
        )
    return ""


#: Bins of the confidence histogram :func:`confidence_summary` reports (upper edges; the last
#: bin includes 1).
HISTOGRAM_EDGES = (0.2, 0.4, 0.6, 0.8, 1.0)


def confidence_summary(recent: Sequence[float | None], min_confidence: float) -> dict[str, object]:
    """The distribution of recent multiple-choice answers' confidences, for /diagnostics.

    Args:
        recent: One entry per recent multiple-choice answer: its confidence, or None when it
            was not measured.
        min_confidence: The ``low confidence`` threshold (0: off).

    Returns:
        ``confidence_answers`` (answers), ``confidence_measured``, ``confidence_p10`` /
        ``p50`` / ``p90`` (NaN without any), ``confidence_histogram`` (counts per fifth of
        0..1) and ``confidence_low`` (below ``min_confidence`` or not measured, while it is on).
    """
    measured = sorted(value for value in recent if value is not None)
    summary: dict[str, object] = {
        "confidence_answers": len(recent),
        "confidence_measured": len(measured),
    }
    for name, q in (("p10", 10), ("p50", 50), ("p90", 90)):
        summary[f"confidence_{name}"] = float(np.percentile(measured, q)) if measured else math.nan
    counts = [0] * len(HISTOGRAM_EDGES)
    for value in measured:
        counts[min(int(value * len(HISTOGRAM_EDGES)), len(HISTOGRAM_EDGES) - 1)] += 1
    low = 0.0
    parts = []
    for high, count in zip(HISTOGRAM_EDGES, counts, strict=True):
        parts.append(f"{low:g}-{high:g}: {count}")
        low = high
    summary["confidence_histogram"] = ", ".join(parts)
    summary["confidence_low"] = (
        sum(1 for value in recent if value is None or value < min_confidence)
        if min_confidence > 0
        else 0
    )
    return summary
