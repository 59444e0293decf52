"""The confidence part of ``spatialthinker eval``: calibration figures, a reliability diagram, a
fitted temperature.

It reads the records ``eval`` writes (one per item: ``correct``, ``expected``, and the answer's
``confidence``, ``confidence_source`` and ``option_probabilities``, as the node publishes them)
and reports with :mod:`spatialthinker_ros.core.calibration`: the expected calibration error (its
binning stated), the risk-coverage figures (AURC, selective accuracy at fixed coverages), and,
on request, the temperature that calibrates the option probabilities, to be set as the
``confidence_temperature`` parameter (or ``--confidence-temperature``) for other data.

Only answers whose ``confidence_source`` is ``tokens`` count (an answer with no option chosen
has confidence 0 there, as a planner sees it); failed items and answers whose confidence could
not be measured are counted apart, with the most common reason.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from spatialthinker_ros.core import calibration

__all__ = ["COVERAGES", "calibration_lines", "calibration_summary", "draw_reliability_diagram"]

#: Coverages the selective accuracy is reported at.
COVERAGES = (0.25, 0.5, 0.75, 1.0)


def _option_logprobs(record: dict[str, Any]) -> list[float]:
    """The logs of an answer's option probabilities (0 becomes ``-inf``)."""
    return [math.log(p) if p and p > 0 else -math.inf for p in record["option_probabilities"]]


def _fit(scored: list[dict[str, Any]], temperature: float) -> dict[str, Any]:
    """The temperature fit on ``scored``, as applied on top of ``temperature``."""
    rows = [
        (_option_logprobs(r), ord(r["expected"]) - ord("A"))
        for r in scored
        if 0 <= ord(r["expected"]) - ord("A") < len(r["option_probabilities"])
    ]
    try:
        fit = calibration.fit_temperature([lp for lp, _ in rows], [i for _, i in rows])
    except ValueError as error:
        return {"error": str(error)}
    # The probabilities were published at ``temperature``: the one to set multiplies.
    return {
        "confidence_temperature": temperature * fit.temperature,
        "relative_to_the_run": fit.temperature,
        "items": fit.items,
        "skipped": fit.skipped,
        "nll_before": fit.nll_before,
        "nll_after": fit.nll_after,
        "at_bound": fit.at_bound,
    }


def calibration_summary(
    records: list[dict[str, Any]], bins: int = 10, temperature: float = 1.0, fit: bool = False
) -> dict[str, Any]:
    """Calibration figures of ``eval``'s records (see the module doc).

    Args:
        records: ``eval``'s records.
        bins: Equal-width confidence bins of the reliability diagram and the ECE.
        temperature: The ``confidence_temperature`` the answers were given at.
        fit: Also fit a temperature (``temperature_fit``).
    """
    answered = [r for r in records if "error" not in r]
    scored = [r for r in answered if r.get("confidence_source") == "tokens"]
    confidences = [float(r["confidence"]) for r in scored]
    correct = [bool(r["correct"]) for r in scored]
    reasons = Counter(r.get("confidence_note", "") for r in answered if r not in scored)
    summary: dict[str, Any] = {
        "items": len(scored),
        "unmeasured": len(answered) - len(scored),
        "unmeasured_reason": reasons.most_common(1)[0][0] if reasons else "",
        "confidence_temperature": temperature,
        "binning": f"{bins} equal-width bins of confidence, [k/{bins}, (k+1)/{bins}), the last"
        " closed at 1",
        "ece": calibration.expected_calibration_error(confidences, correct, bins),
        "aurc": calibration.aurc(confidences, correct),
        "error_rate": 1 - float(np.mean(correct)) if correct else math.nan,
        "selective_accuracy": {
            f"{c:g}": calibration.selective_accuracy(confidences, correct, c) for c in COVERAGES
        },
        "nll": calibration.negative_log_likelihood(
            [_option_logprobs(r) for r in scored], [ord(r["expected"]) - ord("A") for r in scored]
        ),
        "bins": [
            {
                "lower": b.lower,
                "upper": b.upper,
                "count": b.count,
                "confidence": b.confidence,
                "accuracy": b.accuracy,
            }
            for b in calibration.reliability_bins(confidences, correct, bins)
        ],
    }
    if fit:
        summary["temperature_fit"] = _fit(scored, temperature)
    return summary


def calibration_lines(summary: dict[str, Any]) -> list[str]:
    """What ``eval`` prints of the summary."""
    if not summary["items"]:
        why = summary["unmeasured_reason"] or "no answer"
        lines = [f"confidence: not measured for any answer ({why})"]
    else:
        selective = ", ".join(
            f"{100 * value:.1f} % at {100 * float(c):g} %"
            for c, value in summary["selective_accuracy"].items()
        )
        lines = [
            f"confidence: {summary['items']} answers measured"
            + (
                f" ({summary['unmeasured']} not: {summary['unmeasured_reason']})"
                if summary["unmeasured"]
                else ""
            ),
            f"  ECE {summary['ece']:.4f} ({summary['binning']})",
            f"  AURC {summary['aurc']:.4f} (error rate {summary['error_rate']:.4f});"
            f" selective accuracy {selective}",
        ]
    fit = summary.get("temperature_fit")
    if fit is not None and "error" in fit:
        lines.append(f"  temperature not fitted: {fit['error']}")
    elif fit is not None:
        bound = " (at the end of the searched range)" if fit["at_bound"] else ""
        lines.append(
            f"  fitted confidence_temperature {fit['confidence_temperature']:.4g}{bound}: NLL"
            f" {fit['nll_before']:.4f} -> {fit['nll_after']:.4f} on {fit['items']} items; apply"
            " it with --confidence-temperature or the node's confidence_temperature parameter"
        )
    return lines


def draw_reliability_diagram(path: Path, summary: dict[str, Any], size: int = 520) -> None:
    """Write the reliability diagram of ``summary`` as a PNG: per bin a bar of its accuracy,
    the outline of its mean confidence, its count; the diagonal is perfect calibration.

    Raises:
        OSError: The file cannot be written.
    """
    import cv2

    image = np.full((size, size, 3), 255, np.uint8)
    left, top, side = 84, 50, size - 124
    bottom = top + side

    def x(value: float) -> int:
        return round(left + value * side)

    def y(value: float) -> int:
        return round(bottom - value * side)

    cv2.rectangle(image, (left, top), (left + side, bottom), (0, 0, 0), 1)
    cv2.line(image, (x(0), y(0)), (x(1), y(1)), (160, 160, 160), 1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for bin_ in summary["bins"]:
        if not bin_["count"]:
            continue
        x0, x1 = x(bin_["lower"]) + 2, x(bin_["upper"]) - 2
        cv2.rectangle(image, (x0, y(bin_["accuracy"])), (x1, bottom), (200, 120, 40), cv2.FILLED)
        cv2.rectangle(image, (x0, y(bin_["confidence"])), (x1, bottom), (40, 40, 220), 1)
        cv2.putText(image, str(bin_["count"]), (x0, top - 6), font, 0.35, (0, 0, 0), 1)
    for tick in (0.0, 0.5, 1.0):
        cv2.putText(image, f"{tick:g}", (x(tick) - 8, bottom + 18), font, 0.45, (0, 0, 0), 1)
        cv2.putText(image, f"{tick:g}", (left - 30, y(tick) + 5), font, 0.45, (0, 0, 0), 1)
    cv2.putText(image, "confidence", (x(0.4), bottom + 40), font, 0.5, (0, 0, 0), 1)
    cv2.putText(image, "accuracy", (4, y(0.75)), font, 0.5, (0, 0, 0), 1)
    title = f"ECE {summary['ece']:.3f}, {summary['items']} answers (red: mean confidence)"
    cv2.putText(image, title, (left, 24), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    # OpenCV draws BGR: the colours above are BGR already.
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")
