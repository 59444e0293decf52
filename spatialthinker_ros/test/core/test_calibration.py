"""The calibration maths of ``core.calibration``, against arithmetic written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialthinker_ros.core import calibration

# Five answers: confidence and whether each was right.
CONFIDENCES = [0.9, 0.8, 0.6, 0.55, 0.95]
CORRECT = [True, False, True, False, True]


def test_bins_are_equal_width_half_open_with_the_last_closed() -> None:
    bins = calibration.reliability_bins([0.0, 0.1, 0.3, 0.29999, 0.7, 0.99, 1.0], [True] * 7, 10)
    counts = [b.count for b in bins]
    # 0.0 and 0.1 open bins 0 and 1; 0.3 is in [0.3, 0.4) (not [0.2, 0.3)), 0.29999 in
    # [0.2, 0.3); 1.0 joins 0.99 in the last bin [0.9, 1].
    assert counts == [1, 1, 1, 1, 0, 0, 0, 1, 0, 2]
    assert (bins[9].lower, bins[9].upper) == (0.9, 1.0)
    assert bins[9].confidence == pytest.approx(0.995) and bins[9].accuracy == 1.0
    assert math.isnan(bins[4].confidence) and math.isnan(bins[4].accuracy)


def test_ece_by_hand() -> None:
    # Bins of 0.1: [0.9, 1] holds 0.9 and 0.95, both right: |1 - 0.925| = 0.075, weight 2/5.
    # [0.8, 0.9): 0.8 wrong: |0 - 0.8| = 0.8, weight 1/5. [0.6, 0.7): 0.6 right: 0.4, 1/5.
    # [0.5, 0.6): 0.55 wrong: 0.55, 1/5.
    by_hand = 2 / 5 * 0.075 + 1 / 5 * 0.8 + 1 / 5 * 0.4 + 1 / 5 * 0.55  # = 0.38
    assert calibration.expected_calibration_error(CONFIDENCES, CORRECT) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.38)
    # Two bins, [0, 0.5) and [0.5, 1]: all five in the second; accuracy 3/5, mean 0.76.
    assert calibration.expected_calibration_error(CONFIDENCES, CORRECT, 2) == pytest.approx(0.16)
    assert math.isnan(calibration.expected_calibration_error([], []))


def test_risk_coverage_aurc_and_selective_accuracy_by_hand() -> None:
    # Most confident first: 0.95 right, 0.9 right, 0.8 wrong, 0.6 right, 0.55 wrong.
    # Risk of the k most confident: 0/1, 0/2, 1/3, 1/4, 2/5.
    coverage, risk = calibration.risk_coverage(CONFIDENCES, CORRECT)
    assert coverage.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert risk.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 4, 2 / 5])
    by_hand = (0 + 0 + 1 / 3 + 1 / 4 + 2 / 5) / 5  # = 0.19667
    assert calibration.aurc(CONFIDENCES, CORRECT) == pytest.approx(by_hand)
    # ceil(coverage * 5) answers: 0.25 -> 2 (both right), 0.5 -> 3, 0.6 -> 3, 1 -> all five.
    accuracy = [calibration.selective_accuracy(CONFIDENCES, CORRECT, c) for c in (0.25, 0.5, 0.6)]
    assert accuracy == pytest.approx([1.0, 2 / 3, 2 / 3])
    assert calibration.selective_accuracy(CONFIDENCES, CORRECT, 1.0) == pytest.approx(3 / 5)


def test_ties_count_as_the_expectation_over_their_orders() -> None:
    # Three tied at 0.7 with one error, then 0.5 wrong: whatever the file's order, the first k
    # of the tie hold k/3 of an error on average. Risks: (1/3)/1, (2/3)/2, 1/3, 2/4.
    for order in ([True, False, True], [False, True, True], [True, True, False]):
        _, risk = calibration.risk_coverage([0.7, 0.7, 0.7, 0.5], [*order, False])
        assert risk.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 2])
    # A constant confidence ranks nothing: AURC is the error rate.
    assert calibration.aurc([0.6] * 4, [True, False, True, True]) == pytest.approx(0.25)


def test_nll_and_a_temperature_fit_against_a_brute_force_search() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(400, 3)) * 3.0
    truth = np.exp(logits / 3) / np.exp(logits / 3).sum(axis=1, keepdims=True)
    answers = [int(rng.choice(3, p=row)) for row in truth]
    rows = logits.tolist()
    # One item by hand: probabilities 0.75 and 0.25, the second right: -log 0.25 at T = 1; at
    # T = 2 each becomes sqrt(p), renormalised.
    assert calibration.negative_log_likelihood([[math.log(0.75), math.log(0.25)]], [1]) == (
        pytest.approx(-math.log(0.25))
    )
    at_two = -math.log(math.sqrt(0.25) / (math.sqrt(0.75) + math.sqrt(0.25)))
    assert calibration.negative_log_likelihood(
        [[math.log(0.75), math.log(0.25)]], [1], 2.0
    ) == pytest.approx(at_two)
    fit = calibration.fit_temperature(rows, answers)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 4001))
    nlls = [calibration.negative_log_likelihood(rows, answers, t) for t in grid]
    best = grid[int(np.argmin(nlls))]
    assert fit.temperature == pytest.approx(best, rel=2e-3)
    assert fit.nll_after <= min(nlls) + 1e-9 and fit.nll_after < fit.nll_before
    assert fit.items == 400 and fit.skipped == 0 and not fit.at_bound


def test_the_fit_recovers_the_temperature_of_overconfident_probabilities() -> None:
    # Outcomes drawn from softmax(z), reported log-probabilities 2 z: overconfident by T = 2.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20_000, 4)) * 1.5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    answers = [int(rng.choice(4, p=row)) for row in p]
    fit = calibration.fit_temperature((2 * z).tolist(), answers)
    assert fit.temperature == pytest.approx(2.0, rel=0.05)


def test_items_whose_correct_option_has_no_probability_are_left_out_of_the_fit() -> None:
    rows = [[0.0, -math.inf], [math.log(0.6), math.log(0.4)], [math.log(0.9), math.log(0.1)]]
    fit = calibration.fit_temperature(rows, [1, 0, 0])
    assert fit.items == 2 and fit.skipped == 1
    with pytest.raises(ValueError, match="nothing to fit"):
        calibration.fit_temperature([[0.0, -math.inf]], [1])
    with pytest.raises(ValueError, match="correct option"):
        calibration.fit_temperature([[0.0, 0.0]], [2])


def test_bad_input_is_refused_with_the_problem_named() -> None:
    with pytest.raises(ValueError, match="one length"):
        calibration.expected_calibration_error([0.5, 0.6], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration.aurc([1.5], [True])
    with pytest.raises(ValueError, match="coverage"):
        calibration.selective_accuracy([0.5], [True], 0.0)
