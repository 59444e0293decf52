"""Accuracy against confidence: calibration error, risk-coverage, temperature (ROS-free, numpy).

What ``spatialthinker eval`` reports of the answers' confidences (``core.confidence``):

* **Reliability and expected calibration error (ECE).** The answers are put in ``bins``
  equal-width bins of confidence, ``[k/B, (k+1)/B)`` for ``k < B - 1`` and ``[(B-1)/B, 1]`` for
  the last; per bin the mean confidence and the accuracy. ECE is the bins' ``|accuracy - mean
  confidence|``, weighted by their share of the answers: ``sum_k n_k / N * |acc_k - conf_k|``.
* **Risk-coverage.** Answering only the ``k`` most confident of ``N`` answers (coverage
  ``k / N``) has the risk (error rate) ``errors among them / k``; the selective accuracy at a
  coverage is ``1 - risk``. Answers of equal confidence are taken in no particular order: a
  tied group of ``m`` answers with ``e`` errors adds ``e / m`` errors per answer taken from it
  (the expectation over the group's orders), so the figures do not depend on the file's order.
  The area under the risk-coverage curve, AURC, is the mean risk over ``k = 1 .. N``: lower is
  better, and the accuracy's error rate ``errors / N`` is what a confidence that ranks nothing
  gets on average.
* **Temperature.** :func:`fit_temperature` finds the ``T`` minimising the negative
  log-likelihood of the correct options under ``p_i = exp(l_i / T) / sum_j exp(l_j / T)``
  (``l`` the options' log-probabilities); the NLL is convex in ``1 / T``, which is searched by
  golden section over ``T`` in ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "Bin",
    "TemperatureFit",
    "aurc",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "reliability_bins",
    "risk_coverage",
    "selective_accuracy",
]

#: The temperatures :func:`fit_temperature` searches (the ``confidence_temperature`` range).
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


@dataclass(frozen=True)
class Bin:
    """One bin of the reliability diagram.

    Attributes:
        lower: Lowest confidence it holds.
        upper: Its upper edge (held only by the last bin, whose edge is 1).
        count: Answers in it.
        confidence: Their mean confidence (NaN when empty).
        accuracy: Their share answered right (NaN when empty).
    """

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def _arrays(confidences: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidences, dtype=float)
    right = np.asarray(correct, dtype=bool)
    if conf.shape != right.shape or conf.ndim != 1:
        raise ValueError("confidences and outcomes must be two lists of one length")
    if conf.size and not (np.all(conf >= 0) and np.all(conf <= 1)):
        raise ValueError("confidences must lie in [0, 1]")
    return conf, right


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> list[Bin]:
    """The answers in ``bins`` equal-width bins of confidence (see the module doc)."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    conf, right = _arrays(confidences, correct)
    # floor(c * B) puts 0.3 in [0.3, 0.4) whatever 0.3 * 10's last bit; 1.0 goes in the last bin.
    index = np.minimum(np.floor(conf * bins).astype(int), bins - 1)
    result = []
    for k in range(bins):
        members = index == k
        count = int(members.sum())
        result.append(
            Bin(
                k / bins,
                (k + 1) / bins,
                count,
                float(conf[members].mean()) if count else math.nan,
                float(right[members].mean()) if count else math.nan,
            )
        )
    return result


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """``sum_k n_k / N * |acc_k - conf_k|`` over :func:`reliability_bins` (NaN for none)."""
    table = reliability_bins(confidences, correct, bins)
    total = sum(b.count for b in table)
    if not total:
        return math.nan
    return float(sum(b.count / total * abs(b.accuracy - b.confidence) for b in table if b.count))


def risk_coverage(
    confidences: Sequence[float], correct: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage ``k / N`` and risk of the ``k`` most confident answers, ``k = 1 .. N``
    (ties as in the module doc)."""
    conf, right = _arrays(confidences, correct)
    n = conf.size
    if not n:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-conf, kind="stable")
    conf, wrong = conf[order], ~right[order]
    errors = np.zeros(n)
    taken = 0
    before = 0.0
    while taken < n:
        end = taken + int(np.sum(conf[taken:] == conf[taken]))  # the tied group
        rate = wrong[taken:end].mean()
        errors[taken:end] = before + rate * np.arange(1, end - taken + 1)
        before = errors[end - 1]
        taken = end
    k = np.arange(1, n + 1)
    return k / n, errors / k


def aurc(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Area under the risk-coverage curve: the mean risk over ``k = 1 .. N`` (NaN for none)."""
    _, risk = risk_coverage(confidences, correct)
    return float(risk.mean()) if risk.size else math.nan


def selective_accuracy(
    confidences: Sequence[float], correct: Sequence[bool], coverage: float
) -> float:
    """Accuracy of the ``ceil(coverage * N)`` most confident answers (at least one)."""
    if not 0 < coverage <= 1:
        raise ValueError("coverage must be in (0, 1]")
    _, risk = risk_coverage(confidences, correct)
    if not risk.size:
        return math.nan
    # 0.3 * 10 is 3.0000000000000004: a hair off before rounding up.
    k = max(1, math.ceil(coverage * risk.size - 1e-9))
    return float(1.0 - risk[k - 1])


def _matrix(
    option_logprobs: Sequence[Sequence[float]], answers: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows padded with ``-inf``, and the correct options' indices; rows whose correct option
    has no probability (``-inf``: the NLL is infinite at every temperature) left out."""
    width = max((len(row) for row in option_logprobs), default=0)
    table = np.full((len(option_logprobs), width), -np.inf)
    for i, row in enumerate(option_logprobs):
        table[i, : len(row)] = row
    index = np.asarray(answers, dtype=int)
    if index.shape != (len(option_logprobs),) or np.any(index < 0) or np.any(index >= width):
        raise ValueError("every item needs the index of its correct option among its options")
    usable = np.isfinite(table[np.arange(len(index)), index])
    return table[usable], index[usable]


def _nll(table: np.ndarray, index: np.ndarray, temperature: float) -> float:
    scaled = table / temperature
    top = scaled.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    return float(np.mean(lse - scaled[np.arange(len(index)), index]))


def negative_log_likelihood(
    option_logprobs: Sequence[Sequence[float]], answers: Sequence[int], temperature: float = 1.0
) -> float:
    """Mean negative log-likelihood of the correct options at ``temperature`` (NaN for none).

    Args:
        option_logprobs: Per item, the options' log-probabilities (any constant offset; a
            renormalised probability's log is as good; ``-inf`` for an option without any).
        answers: Per item, the index of its correct option.
        temperature: ``T`` of ``p_i = exp(l_i / T) / sum_j exp(l_j / T)``.
    """
    table, index = _matrix(option_logprobs, answers)
    return _nll(table, index, temperature) if len(index) else math.nan


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature.

    Attributes:
        temperature: The ``T`` of least NLL.
        items: Items fitted on.
        skipped: Items left out: their correct option had no probability at all.
        nll_before: Mean NLL at ``T = 1``.
        nll_after: Mean NLL at ``temperature``.
        at_bound: The best ``T`` lies at the end of the searched range.
    """

    temperature: float
    items: int
    skipped: int
    nll_before: float
    nll_after: float
    at_bound: bool


def fit_temperature(
    option_logprobs: Sequence[Sequence[float]], answers: Sequence[int]
) -> TemperatureFit:
    """The temperature that minimises the NLL of the correct options (see the module doc).

    Raises:
        ValueError: No item to fit on, or an item without its correct option.
    """
    table, index = _matrix(option_logprobs, answers)
    if not len(index):
        raise ValueError("no item whose correct option has a probability: nothing to fit")
    # Golden section on beta = 1 / T, where the NLL is convex.
    low, high = 1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(table, index, 1 / a), _nll(table, index, 1 / b)
    for _ in range(200):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(table, index, 1 / a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(table, index, 1 / b)
        if high - low < 1e-10:
            break
    temperature = 2 / (low + high)
    edge = 1e-6
    return TemperatureFit(
        temperature=temperature,
        items=len(index),
        skipped=len(option_logprobs) - len(index),
        nll_before=_nll(table, index, 1.0),
        nll_after=_nll(table, index, temperature),
        at_bound=temperature < MIN_TEMPERATURE * (1 + edge)
        or temperature > MAX_TEMPERATURE * (1 - edge),
    )
