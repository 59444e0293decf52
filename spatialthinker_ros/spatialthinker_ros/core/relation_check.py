"""Check the model's spatial relations against the measured 3D (ROS-free).

SpatialThinker writes relations such as ``cup.1 left of laptop.1`` from one 2D image; the node
has what the model lacks, a metric 3D estimate per object from the depth camera
(:mod:`spatialthinker_ros.core.lifting`). :func:`verify_relations` gives every relation a
:class:`Verdict` with an ``evidence`` text holding the numbers a person would check:

* ``CONSISTENT``: the measured geometry supports the predicate beyond its uncertainty;
* ``CONTRADICTED``: it supports the opposite beyond its uncertainty;
* ``UNKNOWN``: the geometry is ambiguous (extents overlapping along the predicate's axis, no 3D
  for either object, a difference within the uncertainty) or the predicate is not a spatial one
  this module understands.

It reports; it never changes the model's answer.

**Frame.** Viewer-centric, in the camera's optical frame (x right, y down, z forward):
left/right compare the objects' lateral centres along x; in front of/behind compare the
measured front surfaces along z; closer/farther compare the distances of the front-surface
points to the camera. above/below and on are about gravity: they compare heights along the
scene's up direction when one is given (:mod:`spatialthinker_ros.core.gravity` measures it from
the depth's horizontal surfaces: each object's 3D box is turned into the levelled frame, whose
footprints are horizontal), else along the camera's -y, which is "up" only for a level camera (a
camera pitched by ``a`` makes a surface ``d`` metres deep look ``d sin a`` taller). Depth extents
beyond the front surface are the lifting's prior, so no rule leans on an object's back alone.

**Uncertainty.** Each object's position along an axis is uncertain by
``sigma = sigma_z(z) + SIZE_FRACTION * extent``: ``sigma_z(z) = 1.5e-3 z^2 + 3 mm`` is a
Kinect-like structured-light depth noise (a few millimetres at 1 m, 4 cm at 5 m), and the size
term stands for where the box edges fall (a box a few pixels off moves a large object's estimate
more than a small one's). A difference between two objects counts when it exceeds the margin
``MARGIN_FLOOR + K_SIGMA * hypot(sigma_a, sigma_b)``: about 3 cm for two cups at 1 m, 17 cm
for two armchairs at 2.5 m.

**Known limit.** ``on`` compares the subject's footprint with the object's depth extent, which
beyond the front surface is the lifting's prior: without a measured up, a small object standing
behind the top edge of a nearer, equally high one (a dice on a desk behind a chair's backrest)
can be called ``on`` it.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from spatialthinker_ros.core.gravity import UpEstimate, levelling_rotation
from spatialthinker_ros.core.parsing import label_from_id

__all__ = [
    "FAMILIES",
    "VERTICAL_FAMILIES",
    "ContradictionCounter",
    "RelationCheck",
    "RelationReport",
    "Verdict",
    "check_relation",
    "depth_sigma",
    "normalise_predicate",
    "verdict_name",
    "verify_relations",
]

#: Kinect-like structured-light depth noise: sigma(z) = SENSOR_QUADRATIC * z^2 + SENSOR_FLOOR
#: (Khoshelham and Elberink 2012 measure ~1.4e-3 z^2 for the Kinect v1).
SENSOR_QUADRATIC = 1.5e-3
SENSOR_FLOOR = 0.003
#: How far an object's estimate moves with its box, as a fraction of its extent (the lifting
#: benchmarks on real frames see centres move by a few per cent of the object's size).
SIZE_FRACTION = 0.05
#: Margins are this many combined sigmas, plus a floor for what no model captures.
K_SIGMA = 2.0
MARGIN_FLOOR = 0.01
#: "near": the gap between the objects' 3D boxes is at most NEAR_FRACTION of the larger
#: object's largest extent (at least NEAR_FLOOR); "far": at least FAR_FRACTION of it (at least
#: FAR_FLOOR). Between the two, neither is stated beyond doubt.
NEAR_FRACTION, NEAR_FLOOR = 0.5, 0.15
FAR_FRACTION, FAR_FLOOR = 1.5, 0.6


class Verdict(IntEnum):
    """Same values as the ``VERDICT_*`` constants of ``spatialthinker_msgs/SceneRelation``."""

    UNKNOWN = 0
    CONSISTENT = 1
    CONTRADICTED = 2


def verdict_name(value: int) -> str:
    """``"consistent"``, ``"contradicted"`` or ``"unknown"`` (also for values not defined here),
    as JSON outputs spell a verdict."""
    try:
        return Verdict(value).name.lower()
    except ValueError:
        return Verdict.UNKNOWN.name.lower()


@dataclass(frozen=True)
class RelationCheck:
    """The verdict on one relation.

    Attributes:
        verdict: See :class:`Verdict`.
        evidence: What was measured, with numbers (``"chair.1's front is 1.90 m nearer the
            camera than dresser.1's (margin 0.15 m)"``), or why no verdict was possible.
        family: Canonical predicate the model's wording was read as (``"in front of"``), or
            ``""`` when it is not one this module understands.
    """

    verdict: Verdict
    evidence: str
    family: str = ""


@dataclass(frozen=True)
class RelationReport:
    """The verdicts on every relation of one answer.

    Attributes:
        checks: One check per relation, in the relations' order.
        contradicted: How many relations are contradicted.
        warnings: One line per contradicted relation that the model's reasoning or answer
            relies on (see :func:`verify_relations`).
        up: The up direction above, below and on were checked along (None: the camera's -y).
    """

    checks: list[RelationCheck]
    contradicted: int
    warnings: list[str]
    up: UpEstimate | None = None


# ------------------------------------------------------------------------------- vocabulary

#: Canonical predicate -> the wordings read as it, after :func:`_normalise_words` (lower case,
#: no articles, no "is"/"to"/"of"/"than"/"from", no posture verbs).
_WORDINGS: dict[str, tuple[str, ...]] = {
    "left of": ("left", "on left", "left side", "on left side"),
    "right of": ("right", "on right", "right side", "on right side"),
    "above": ("above", "over", "on top", "higher", "higher up"),
    "below": ("below", "under", "beneath", "underneath", "lower", "lower down"),
    "in front of": ("in front", "front", "before"),
    "behind": ("behind", "in back", "back"),
    "closer than": ("closer", "nearer", "closer camera", "nearer camera"),
    "farther than": ("farther", "further", "farther away", "further away", "farther camera"),
    "near": ("near", "next", "beside", "close", "nearby", "adjacent", "by", "alongside"),
    "far from": ("far", "far away"),
    "on": ("on", "upon", "onto", "on surface"),
}
#: Every canonical predicate, in the order of the vocabulary table.
FAMILIES = tuple(_WORDINGS)
_LOOKUP = {wording: family for family, wordings in _WORDINGS.items() for wording in wordings}
# Words that carry no spatial meaning in a predicate ("is to the left of", "sitting on",
# "closer to the camera than", "placed on top of").
_FILLER_WORDS = (
    "a an the is are be being it its to of than from located positioned situated placed set "
    "sitting sits sit standing stands stand resting rests rest lying lies lie lays laying "
    "directly just slightly somewhat camera's viewer's"
)
_FILLER = frozenset(_FILLER_WORDS.split())
_NEGATION = frozenset(["not", "no", "never", "isn't", "aren't"])


def _normalise_words(predicate: str) -> tuple[list[str], bool]:
    """The predicate's meaningful words, and whether it is negated."""
    words = re.findall(r"[a-z']+", predicate.lower().replace("_", " "))
    negated = any(w in _NEGATION for w in words)
    return [w for w in words if w not in _FILLER and w not in _NEGATION], negated


@functools.lru_cache(maxsize=4096)
def normalise_predicate(predicate: str) -> str:
    """The canonical predicate a wording is read as, or ``""`` when it is not understood.

    Case, articles and joining words do not matter: ``"is to the LEFT of"`` -> ``"left of"``,
    ``"sitting on"`` -> ``"on"``, ``"nearer to the camera than"`` -> ``"closer than"``. Negated
    predicates (``"not behind"``) are not understood.
    """
    words, negated = _normalise_words(predicate)
    if negated:
        return ""
    if words and words[-1] in ("camera", "viewer"):
        words = words[:-1]  # "closer to the camera than", "farther from the viewer"
    return _LOOKUP.get(" ".join(words), "")


# ------------------------------------------------------------------------------- geometry


def depth_sigma(z: float) -> float:
    """Depth noise (one sigma, metres) of a Kinect-like camera at depth ``z`` metres."""
    return SENSOR_QUADRATIC * z * z + SENSOR_FLOOR


@dataclass(frozen=True)
class _Body:
    """An object's measured 3D box: lateral extents, front surface and assumed back."""

    id: str
    lo: tuple[float, float, float]  # x, y, z minima (z: the front surface)
    hi: tuple[float, float, float]  # x, y, z maxima (z: front + the depth extent)
    centre: tuple[float, float, float]  # lateral centre; z is the front surface
    distance: float  # of the front-surface point from the camera
    sigma: tuple[float, float, float]  # positional uncertainty along x, y, z

    @classmethod
    def from_estimate(cls, object_id: str, estimate: Any) -> _Body | str:
        """The body of a ``Lifted3D``, or the reason there is none."""
        if estimate is None:
            return f"no 3D for {object_id}"
        if not getattr(estimate, "has_3d", False):
            reason = getattr(estimate, "reason", "") or "no estimate"
            return f"no 3D for {object_id}: {reason}"
        cx, cy, cz = (float(v) for v in estimate.center)
        dx, dy, dz = (float(v) for v in estimate.size)
        front = getattr(estimate, "surface_depth", None)
        zf = float(front) if front is not None else cz - dz / 2.0
        # The lifting's front-surface point when it publishes one (it may lie off the box
        # centre for an object seen at an angle); else the lateral centre at the front depth.
        surface = getattr(estimate, "surface", None)
        sx, sy, sz = (float(v) for v in surface) if surface is not None else (cx, cy, zf)
        if not all(math.isfinite(v) for v in (cx, cy, zf, dx, dy, dz, sx, sy, sz)) or zf <= 0:
            return f"no usable 3D for {object_id}"
        noise = depth_sigma(zf)
        # The front surface jitters with the box too, by the object's lateral size.
        sigma = (
            noise + SIZE_FRACTION * dx,
            noise + SIZE_FRACTION * dy,
            noise + SIZE_FRACTION * max(dx, dy),
        )
        return cls(
            object_id,
            (cx - dx / 2.0, cy - dy / 2.0, zf),
            (cx + dx / 2.0, cy + dy / 2.0, zf + dz),
            (cx, cy, zf),
            math.sqrt(sx * sx + sy * sy + sz * sz),
            sigma,
        )

    def levelled(self, rotation: Any) -> _Body:
        """This body in a levelled frame (``rotation``: camera -> levelled, 3x3 rows of floats, see
        :func:`spatialthinker_ros.core.gravity.levelling_rotation`): the 3D box turned and
        bounded again, the centre and the uncertainties turned with it."""
        mid = [(lo + hi) / 2.0 for lo, hi in zip(self.lo, self.hi, strict=True)]
        half = [(hi - lo) / 2.0 for lo, hi in zip(self.lo, self.hi, strict=True)]
        # The lateral centre at the box's mid-depth: a camera looking down sees the front of
        # an object lower than its middle.
        cx, cy, cz = self.centre[0], self.centre[1], mid[2]
        sx, sy, sz = self.sigma
        lo, hi, centre, sigma = [], [], [], []
        for a, b, c in rotation:
            m = a * mid[0] + b * mid[1] + c * mid[2]
            h = abs(a) * half[0] + abs(b) * half[1] + abs(c) * half[2]
            lo.append(m - h)
            hi.append(m + h)
            centre.append(a * cx + b * cy + c * cz)
            sigma.append(math.sqrt((a * sx) ** 2 + (b * sy) ** 2 + (c * sz) ** 2))
        return _Body(self.id, tuple(lo), tuple(hi), tuple(centre), self.distance, tuple(sigma))

    def extent(self, axis: int) -> float:
        return self.hi[axis] - self.lo[axis]

    def largest(self) -> float:
        return max(self.extent(0), self.extent(1), self.extent(2))


def _margin(a: _Body, b: _Body, axis: int) -> float:
    return MARGIN_FLOOR + K_SIGMA * math.hypot(a.sigma[axis], b.sigma[axis])


def _overlap(a: _Body, b: _Body, axis: int) -> float:
    """Overlap of the two extents along ``axis``; negative: the gap between them."""
    return min(a.hi[axis], b.hi[axis]) - max(a.lo[axis], b.lo[axis])


def _centre_inside(a: _Body, b: _Body, axis: int) -> bool:
    """Whether either object's centre lies within the other's extent along ``axis`` (x or y;
    along z only the front surfaces are measured)."""
    ca, cb = a.centre[axis], b.centre[axis]
    return b.lo[axis] < ca < b.hi[axis] or a.lo[axis] < cb < a.hi[axis]


# (axis, word for the negative direction, word for the positive direction) per axis; the
# facts are stated from the measurement, whatever the model claimed.
_AXIS_WORDS = {
    0: ("left of", "right of"),
    1: ("higher than", "lower than"),
    2: ("nearer the camera than", "farther from the camera than"),
}
# Canonical predicate -> (axis, sign): the subject is on the predicate's side of the object
# when sign * (subject - object) > 0 along the axis ("distance" compares camera distances).
_DIRECTIONAL: dict[str, tuple[int | str, int]] = {
    "left of": (0, -1),
    "right of": (0, 1),
    "above": (1, -1),
    "below": (1, 1),
    "in front of": (2, -1),
    "behind": (2, 1),
    "closer than": ("distance", -1),
    "farther than": ("distance", 1),
}


def _fact(a: _Body, b: _Body, axis: int | str) -> tuple[float, str]:
    """The measured signed difference (subject - object) and the sentence stating it."""
    if axis == "distance":
        diff = a.distance - b.distance
        side = "nearer the camera than" if diff < 0 else "farther from the camera than"
        detail = f"distances {a.distance:.2f} / {b.distance:.2f} m"
        return diff, f"{a.id} is {abs(diff):.2f} m {side} {b.id} ({detail}"
    assert isinstance(axis, int)
    diff = a.centre[axis] - b.centre[axis]
    side = _AXIS_WORDS[axis][diff > 0]
    if axis == 2:
        detail = f"front surfaces at z {a.centre[2]:.2f} / {b.centre[2]:.2f} m"
        return diff, f"{a.id}'s front is {abs(diff):.2f} m {side} {b.id}'s ({detail}"
    name = "xy"[axis]
    detail = f"centres at {name} {a.centre[axis]:+.2f} / {b.centre[axis]:+.2f} m"
    return diff, f"{a.id} is {abs(diff):.2f} m {side} {b.id} ({detail}"


def _directional(a: _Body, b: _Body, family: str) -> RelationCheck:
    axis, sign = _DIRECTIONAL[family]
    diff, fact = _fact(a, b, axis)
    margin_axis = 2 if axis == "distance" else int(axis)
    margin = _margin(a, b, margin_axis)
    evidence = f"{fact}, margin {margin:.2f} m)"
    if abs(diff) <= margin:
        return RelationCheck(Verdict.UNKNOWN, f"too close to call: {evidence}", family)
    if axis in (0, 1) and _centre_inside(a, b, int(axis)):
        # One object spans the other along the axis (a cup and the table it is on, for
        # "left of"): a person would not call it either way.
        return RelationCheck(
            Verdict.UNKNOWN, f"extents overlap along {'xyz'[int(axis)]}: {evidence}", family
        )
    verdict = Verdict.CONSISTENT if sign * diff > 0 else Verdict.CONTRADICTED
    return RelationCheck(verdict, evidence, family)


def _near_far(a: _Body, b: _Body, family: str) -> RelationCheck:
    gaps = [max(0.0, -_overlap(a, b, axis)) for axis in range(3)]
    gap = math.sqrt(sum(g * g for g in gaps))
    margin = max(_margin(a, b, axis) for axis in range(3))
    scale = max(a.largest(), b.largest())
    near_limit = max(NEAR_FLOOR, NEAR_FRACTION * scale)
    far_limit = max(FAR_FLOOR, FAR_FRACTION * scale)
    evidence = (
        f"{a.id} and {b.id} are {gap:.2f} m apart (near up to {near_limit:.2f} m, far from "
        f"{far_limit:.2f} m, margin {margin:.2f} m)"
    )
    if gap + margin <= near_limit:
        measured = "near"
    elif gap - margin >= far_limit:
        measured = "far from"
    else:
        return RelationCheck(Verdict.UNKNOWN, f"neither near nor far: {evidence}", family)
    verdict = Verdict.CONSISTENT if measured == family else Verdict.CONTRADICTED
    return RelationCheck(verdict, evidence, family)


def _on(a: _Body, b: _Body) -> RelationCheck:
    """Vertical contact: the subject's bottom at the object's top, footprints overlapping."""
    # y points down: the subject's bottom is its largest y, the object's top its smallest.
    gap = b.lo[1] - a.hi[1]  # > 0: the subject's bottom is above the object's top
    tol = _margin(a, b, 1)
    mx, mz = _margin(a, b, 0), _margin(a, b, 2)
    ox, oz = _overlap(a, b, 0), _overlap(a, b, 2)
    where = "above" if gap >= 0 else "below"
    evidence = (
        f"{a.id}'s bottom is {abs(gap):.2f} m {where} {b.id}'s top, footprints overlap by "
        f"{ox:.2f} m across and {oz:.2f} m in depth (margin {tol:.2f} m)"
    )
    if ox < -mx or oz < -mz:
        return RelationCheck(Verdict.CONTRADICTED, f"beside, not on: {evidence}", "on")
    if gap > 2.0 * tol:
        return RelationCheck(Verdict.CONTRADICTED, f"not touching: {evidence}", "on")
    if a.hi[1] > b.hi[1] + tol:
        # The subject reaches lower than the whole object: it cannot rest on it.
        return RelationCheck(Verdict.CONTRADICTED, f"{a.id} reaches below {b.id}: {evidence}", "on")
    if abs(gap) <= tol and ox > 0 and oz > -mz:
        return RelationCheck(Verdict.CONSISTENT, evidence, "on")
    # Bottom inside the object's height (a shelf, a partly hidden support) or barely apart.
    return RelationCheck(Verdict.UNKNOWN, f"contact unclear: {evidence}", "on")


def check_relation(
    subject_id: str,
    predicate: str,
    object_id: str,
    subject_3d: Any,
    object_3d: Any,
    up: UpEstimate | None = None,
) -> RelationCheck:
    """The verdict on ``subject predicate object`` from the two objects' 3D estimates.

    Args:
        subject_id: The subject's id (used in the evidence).
        predicate: The predicate as the model wrote it.
        object_id: The object's id.
        subject_3d: The subject's ``Lifted3D`` (``center``, ``size``, ``surface_depth``, and
            ``surface`` when the lifting provides it), or ``None`` when it has none.
        object_3d: Likewise for the object.
        up: The scene's up direction (:func:`spatialthinker_ros.core.gravity.estimate_up`)
            for above, below and on; None: the camera's -y.

    Returns:
        The check; never raises on odd input (a verdict of ``UNKNOWN`` says why).
    """
    a = _Body.from_estimate(subject_id, subject_3d)
    b = _Body.from_estimate(object_id, object_3d)
    return _check(subject_id, predicate, object_id, a, b, up, _leveller(up))


#: The predicates about gravity: checked in the levelled frame when the up direction is known.
VERTICAL_FAMILIES = frozenset({"above", "below", "on"})


def _leveller(up: UpEstimate | None) -> Callable[[_Body], _Body] | None:
    """Turns bodies into the frame levelled by ``up``, each body once (None without ``up``)."""
    if up is None:
        return None
    rotation = levelling_rotation(up.vector).tolist()
    levelled: dict[str, _Body] = {}

    def level(body: _Body) -> _Body:
        if body.id not in levelled:
            levelled[body.id] = body.levelled(rotation)
        return levelled[body.id]

    return level


def _check(
    subject_id: str,
    predicate: str,
    object_id: str,
    a: _Body | str,
    b: _Body | str,
    up: UpEstimate | None = None,
    level: Callable[[_Body], _Body] | None = None,
) -> RelationCheck:
    """:func:`check_relation` on bodies already built (or the reasons there are none);
    ``level`` (:func:`_leveller` of ``up``) turns a body into the levelled frame."""
    family = normalise_predicate(predicate)
    if not family:
        shown = " ".join(predicate.split())[:60]
        return RelationCheck(
            Verdict.UNKNOWN,
            f"predicate {shown!r} is not a spatial relation the depth check understands",
        )
    if subject_id == object_id:
        return RelationCheck(Verdict.UNKNOWN, f"{subject_id} is related to itself", family)
    missing = [body for body in (a, b) if isinstance(body, str)]
    if missing:
        return RelationCheck(Verdict.UNKNOWN, "; ".join(missing), family)
    assert isinstance(a, _Body) and isinstance(b, _Body)
    if family in VERTICAL_FAMILIES and up is not None and level is not None:
        check = _check(subject_id, predicate, object_id, level(a), level(b))
        return RelationCheck(check.verdict, f"{check.evidence}; {up.describe()}", check.family)
    if family in _DIRECTIONAL:
        return _directional(a, b, family)
    if family in ("near", "far from"):
        return _near_far(a, b, family)
    return _on(a, b)


# ------------------------------------------------------------------------------- the answer


def _has_word(text: str, word: str, dotted: bool = False) -> bool:
    """Whether ``word`` occurs in ``text`` between word boundaries; ``dotted``: nor preceded by
    a dot nor followed by ``.<digit>`` (``chair.1`` is not in ``chair.10``, ``chair`` is not in
    ``armchair`` nor ``chairs``)."""
    # str.find, not a regex: a pattern that starts with a look-behind is tried at every
    # position of the text, ~50x slower on a reasoning of a few thousand characters.
    start = text.find(word)
    while start != -1:
        end = start + len(word)
        before = text[start - 1] if start else " "
        after = text[end : end + 2]
        if not (
            before.isalnum()
            or before == "_"
            or (dotted and before == ".")
            or (after[:1].isalnum() or after[:1] == "_")
            or (dotted and after[:1] == "." and after[1:2].isdigit())
        ):
            return True
        start = text.find(word, start + 1)
    return False


class _Reliance:
    """Decides which relations the model's reasoning and answer rely on (one answer's text)."""

    def __init__(self, text: str) -> None:
        self._text = text.lower()
        self._named: dict[str, bool] = {}

    def names(self, object_id: str) -> bool:
        """Whether the text names ``object_id`` by id (``chair.1``) or label (``chair``)."""
        if object_id not in self._named:
            self._named[object_id] = any(
                name and _has_word(self._text, name, dotted=True)
                for name in (object_id.lower(), label_from_id(object_id).lower())
            )
        return self._named[object_id]

    def why(self, relation: Any) -> str:
        """What shows the text relies on ``relation``, or ``""``.

        SpatialThinker reasons over the scene graph it wrote, citing its objects by id or by
        name. A relation is relied on when the text names both of its objects, or one of them
        together with the relation's wording (``"in front of"``, or the canonical predicate it
        was read as). A relation about objects the text never names is not its argument.
        """
        named = [i for i in dict.fromkeys((relation.subject, relation.object)) if self.names(i)]
        if len(named) == 2:
            return f"it names {named[0]} and {named[1]}"
        if not named:
            return ""
        words = " ".join(str(relation.predicate).lower().split())
        words = re.sub(r"^(is|are)\s+", "", words)
        for wording in dict.fromkeys((words, normalise_predicate(relation.predicate))):
            if wording and _has_word(self._text, wording):
                return f"it names {named[0]} and says {wording!r}"
        return ""


def verify_relations(
    parsed: Any, lifted: Sequence[Any | None] | None, up: UpEstimate | None = None
) -> RelationReport:
    """Check every relation of one parsed answer against the objects' 3D estimates.

    The one step after lifting shared by the node and every offline tool.

    Args:
        parsed: The ``SpatialResult`` (objects, relations, reasoning, answer).
        lifted: One ``Lifted3D`` per object of ``parsed.objects`` (same order), or ``None``
            when no depth was used.
        up: The scene's measured up direction, or None (the camera's -y).

    Returns:
        The checks, the count of contradicted relations, and a warning for each contradicted
        relation the reasoning or answer relies on. The model's choice is left alone.
    """
    # One body per object, built once however many relations name it.
    bodies: dict[str, _Body | str] = {}
    for index, obj in enumerate(parsed.objects):
        if obj.id not in bodies:
            estimate = lifted[index] if lifted is not None and index < len(lifted) else None
            bodies[obj.id] = _Body.from_estimate(obj.id, estimate)
    level = _leveller(up)  # bodies levelled once each, for the relations about gravity
    reliance = _Reliance(f"{parsed.reasoning}\n{parsed.answer}")
    checks: list[RelationCheck] = []
    warnings: list[str] = []
    for rel in parsed.relations:
        subject, obj = rel.subject, rel.object
        if subject not in bodies or obj not in bodies:
            unlisted = subject if subject not in bodies else obj
            check = RelationCheck(
                Verdict.UNKNOWN,
                f"{unlisted} is not among the objects",
                normalise_predicate(rel.predicate),
            )
        else:
            check = _check(subject, rel.predicate, obj, bodies[subject], bodies[obj], up, level)
        checks.append(check)
        if check.verdict == Verdict.CONTRADICTED:
            why = reliance.why(rel)
            if why:
                warnings.append(
                    f"the reasoning relies on '{subject} {rel.predicate} {obj}' ({why}), which "
                    f"the depth contradicts: {check.evidence}"
                )
    contradicted = sum(c.verdict == Verdict.CONTRADICTED for c in checks)
    return RelationReport(checks, contradicted, warnings, up)


class ContradictionCounter:
    """Contradicted relations over a sliding window, for diagnostics (thread-safe)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self.total = 0
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, count: int, now: float | None = None) -> None:
        """Record ``count`` contradicted relations of one answer."""
        if count <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            self.total += count
            self._events.append((now, count))
            self._expire(now)

    def in_window(self, now: float | None = None) -> int:
        """Contradicted relations recorded within the last ``window_s`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            return sum(count for _, count in self._events)

    def _expire(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()
