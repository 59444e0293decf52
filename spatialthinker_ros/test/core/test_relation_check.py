"""relation_check: every predicate family, both verdicts, the ambiguous cases, on known geometry."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest

from spatialthinker_ros.core.gravity import UpEstimate
from spatialthinker_ros.core.lifting import Lifted3D, lift_boxes
from spatialthinker_ros.core.parsing import ParsedObject, ParsedRelation, SpatialResult
from spatialthinker_ros.core.relation_check import (
    FAMILIES,
    ContradictionCounter,
    Verdict,
    check_relation,
    depth_sigma,
    normalise_predicate,
    verify_relations,
)
from spatialthinker_ros.core.synthetic_scene import ObjectSpec, demo_scene, render_scene

C, X, U = Verdict.CONSISTENT, Verdict.CONTRADICTED, Verdict.UNKNOWN


def est(
    center: tuple[float, float, float], size: tuple[float, float, float] = (0.1, 0.1, 0.1)
) -> Lifted3D:
    """A measured object: centre, size, front surface half its depth in front of the centre."""
    return Lifted3D(center, size, 200, 0.9, "", center[2] - size[2] / 2.0)


def check(predicate: str, a: Lifted3D | None, b: Lifted3D | None):
    return check_relation("a.1", predicate, "b.1", a, b)


# ----------------------------------------------------------------------------- vocabulary


@pytest.mark.parametrize(
    ("wording", "family"),
    [
        ("left of", "left of"),
        ("is to the LEFT of", "left of"),
        ("on the left of", "left of"),
        ("to_the_right_of", "right of"),
        ("right", "right of"),
        ("above", "above"),
        ("over", "above"),
        ("on top of", "above"),
        ("below", "below"),
        ("under", "below"),
        ("is beneath", "below"),
        ("underneath", "below"),
        ("in front of", "in front of"),
        ("is in front of the", "in front of"),
        ("behind", "behind"),
        ("in back of", "behind"),
        ("closer than", "closer than"),
        ("nearer to the camera than", "closer than"),
        ("farther than", "farther than"),
        ("further from the camera than", "farther than"),
        ("next to", "near"),
        ("beside", "near"),
        ("near", "near"),
        ("is close to", "near"),
        ("far from", "far from"),
        ("on", "on"),
        ("sitting on", "on"),
        ("is standing on", "on"),
        ("resting on", "on"),
    ],
)
def test_wordings_the_model_writes_are_read_as_their_family(wording: str, family: str) -> None:
    assert normalise_predicate(wording) == family


@pytest.mark.parametrize(
    "wording", ["holding", "wearing", "part of", "looking at", "inside", "not behind", "", "???"]
)
def test_predicates_outside_the_vocabulary_are_not_understood(wording: str) -> None:
    assert normalise_predicate(wording) == ""
    result = check(wording, est((0, 0, 1)), est((1, 0, 2)))
    assert result.verdict == U and result.family == ""
    assert "not a spatial relation" in result.evidence


def test_every_family_has_a_rule() -> None:
    a, b = est((-0.5, -0.5, 1.0)), est((0.5, 0.5, 3.0))
    for family in FAMILIES:
        result = check(family, a, b)
        assert result.family == family
        assert "not a spatial relation" not in result.evidence


# ----------------------------------------------------------------------------- each family


def test_left_right_along_x() -> None:
    cup, laptop = est((-0.5, 0.0, 1.0)), est((0.5, 0.0, 1.0))
    left = check("left of", cup, laptop)
    assert left.verdict == C
    assert left.evidence.startswith("a.1 is 1.00 m left of b.1 (centres at x -0.50 / +0.50 m")
    assert check("to the right of", cup, laptop).verdict == X
    assert check("right of", laptop, cup).verdict == C
    assert check("left of", laptop, cup).verdict == X


def test_above_below_along_minus_y() -> None:
    # Optical frame: y points down, so the lamp (y -0.5) is higher than the desk (y +0.3).
    lamp, desk = est((0.0, -0.5, 2.0)), est((0.0, 0.3, 2.0))
    above = check("above", lamp, desk)
    assert above.verdict == C
    assert above.evidence.startswith("a.1 is 0.80 m higher than b.1")
    for wording in ("below", "under", "beneath"):
        assert check(wording, lamp, desk).verdict == X
    assert check("under", desk, lamp).verdict == C
    assert "lower than" in check("above", desk, lamp).evidence


def test_front_behind_compare_the_measured_front_surfaces() -> None:
    chair, dresser = est((0.0, 0.0, 2.3), (0.6, 1.0, 0.6)), est((0.0, 0.0, 4.3), (0.6, 1.0, 0.6))
    front = check("in front of", chair, dresser)
    assert front.verdict == C
    assert front.evidence.startswith(
        "a.1's front is 2.00 m nearer the camera than b.1's (front surfaces at z 2.00 / 4.00 m"
    )
    assert check("behind", chair, dresser).verdict == X
    assert check("behind", dresser, chair).verdict == C
    assert check("in front of", dresser, chair).verdict == X
    # A deep object's back is the lifting's guess: the front surface decides, not the centre.
    deep = Lifted3D((0.0, 0.0, 3.5), (0.6, 1.0, 3.0), 200, 0.9, "", 2.0)
    assert check("in front of", deep, est((0.0, 0.0, 3.0))).verdict == C


def test_closer_farther_compare_distances_not_depth() -> None:
    # Off to the side at z 1.0 (1.80 m away) versus straight ahead at z 1.5 (1.50 m away).
    side, ahead = est((1.5, 0.0, 1.05)), est((0.0, 0.0, 1.55))
    assert check("in front of", side, ahead).verdict == C
    closer = check("closer than", side, ahead)
    assert closer.verdict == X
    assert closer.evidence.startswith("a.1 is 0.30 m farther from the camera than b.1")
    assert "distances 1.80 / 1.50 m" in closer.evidence
    assert check("farther than", side, ahead).verdict == C
    assert check("nearer than", ahead, side).verdict == C


def test_near_and_far_by_the_gap_between_the_objects() -> None:
    cup, plate = est((0.0, 0.0, 1.0)), est((0.12, 0.0, 1.0))  # 2 cm apart
    near = check("next to", cup, plate)
    assert near.verdict == C and "0.02 m apart" in near.evidence
    assert check("far from", cup, plate).verdict == X
    door = est((3.0, 0.0, 1.0))
    assert check("far from", cup, door).verdict == C
    assert check("beside", cup, door).verdict == X
    # In between (0.3 m for two 10 cm objects): neither is beyond doubt.
    middle = check("near", cup, est((0.4, 0.0, 1.0)))
    assert middle.verdict == U and middle.evidence.startswith("neither near nor far")


def test_on_is_vertical_contact_with_overlapping_footprints() -> None:
    # A table top 5 cm thick (top at y 0.475) from z 1.6 to 2.4; a cup standing on it.
    table = Lifted3D((0.0, 0.5, 2.0), (1.2, 0.05, 0.8), 500, 0.9, "", 1.6)
    cup = est((0.2, 0.425, 1.95), (0.08, 0.1, 0.08))
    on = check("on", cup, table)
    assert on.verdict == C
    assert on.evidence.startswith("a.1's bottom is 0.00 m above b.1's top, footprints overlap")
    for wording in ("sitting on", "standing on", "is resting on"):
        assert check(wording, cup, table).verdict == C
    floating = check("on", est((0.2, -0.2, 1.95), (0.08, 0.1, 0.08)), table)
    assert floating.verdict == X and floating.evidence.startswith("not touching")
    beside = check("on", est((1.2, 0.425, 1.95), (0.08, 0.1, 0.08)), table)
    assert beside.verdict == X and beside.evidence.startswith("beside, not on")
    on_floor = check("on", est((0.2, 1.0, 1.95), (0.08, 0.1, 0.08)), table)
    assert on_floor.verdict == X
    # The table on the cup: the table reaches lower than the whole cup.
    assert check("on", table, cup).verdict == X


def test_on_a_shelf_inside_the_objects_height_is_unknown() -> None:
    shelf = est((0.0, 0.0, 2.0), (0.8, 1.8, 0.4))  # top at y -0.9, bottom at +0.9
    book = est((0.0, 0.1, 1.95), (0.2, 0.25, 0.15))  # on a middle board
    result = check("on", book, shelf)
    assert result.verdict == U and result.evidence.startswith("contact unclear")


# ----------------------------------------------------------------------------- ambiguity


def test_overlapping_extents_are_unknown() -> None:
    # A cup on the right half of a table: "right of the table"? A person would not say.
    table = est((0.0, 0.5, 2.0), (1.2, 0.05, 0.8))
    cup = est((0.3, 0.42, 2.0), (0.08, 0.1, 0.08))
    result = check("right of", cup, table)
    assert result.verdict == U
    assert result.evidence.startswith("extents overlap along x: a.1 is 0.30 m right of b.1")
    assert check("left of", cup, table).verdict == U


@pytest.mark.parametrize("missing", [None, Lifted3D(None, None, 3, 0.01, "too few valid pixels")])
def test_missing_3d_is_unknown_with_the_reason(missing: Lifted3D | None) -> None:
    for a, b in ((missing, est((0, 0, 1))), (est((0, 0, 1)), missing)):
        result = check("left of", a, b)
        assert result.verdict == U and result.family == "left of"
        assert "no 3D for" in result.evidence
    if missing is not None:
        assert "too few valid pixels" in check("behind", missing, est((0, 0, 1))).evidence


def test_non_finite_3d_and_self_relations_are_unknown() -> None:
    broken = Lifted3D((math.nan, 0.0, 1.0), (0.1, 0.1, 0.1), 100, 0.5, "", 0.95)
    assert check("left of", broken, est((1, 0, 1))).verdict == U
    assert check_relation("a.1", "left of", "a.1", est((0, 0, 1)), est((0, 0, 1))).verdict == U


def test_equal_depth_within_noise_is_unknown() -> None:
    result = check("in front of", est((0.0, 0.0, 2.05)), est((0.5, 0.0, 2.08)))
    assert result.verdict == U
    assert result.evidence.startswith("too close to call: a.1's front is 0.03 m nearer")
    assert check("behind", est((0.0, 0.0, 2.05)), est((0.5, 0.0, 2.08))).verdict == U


def test_margin_grows_with_depth_and_with_object_size() -> None:
    assert depth_sigma(1.0) == pytest.approx(0.0045)
    assert depth_sigma(5.0) == pytest.approx(0.0405)
    # The same 10 cm in depth: decided at 1 m, too close to call at 5 m.
    assert check("in front of", est((0, 0, 1.0)), est((0.5, 0, 1.1))).verdict == C
    assert check("in front of", est((0, 0, 5.0)), est((0.5, 0, 5.1))).verdict == U
    # The same 15 cm sideways at 1 m: decided for cups, not for two armchairs.
    assert check("left of", est((0, 0, 1.0)), est((0.15, 0, 1.0))).verdict == C
    big = (1.0, 1.0, 1.0)
    assert check("left of", est((0, 0, 1.0), big), est((0.15, 0, 1.0), big)).verdict == U


def test_the_lifting_s_surface_point_is_used_when_present() -> None:
    # Same box; the visible front face off to the side puts the object farther away.
    plain = est((0.0, 0.0, 2.0), (0.4, 0.4, 0.4))
    with_surface = SimpleNamespace(
        has_3d=True,
        center=(0.0, 0.0, 2.0),
        size=(0.4, 0.4, 0.4),
        surface_depth=1.8,
        surface=(1.2, 0.0, 1.8),
    )
    other = est((0.0, 0.0, 2.2), (0.4, 0.4, 0.4))  # 2.0 m away
    assert check("closer than", plain, other).verdict == C
    assert check("closer than", with_surface, other).verdict == X


# ----------------------------------------------------------------------------- one answer


def _parsed(relations, reasoning: str, answer: str = "(A) yes") -> SpatialResult:
    ids = ["chair.1", "dresser.1", "lamp.1", "cup.1"]
    return SpatialResult(
        reasoning=reasoning,
        answer=answer,
        objects=[ParsedObject(i, i.split(".")[0], (0, 0, 10, 10)) for i in ids],
        relations=[ParsedRelation(*r) for r in relations],
        choice="A",
        choice_index=0,
    )


LIFTED = [
    est((0.0, 0.0, 2.3), (0.6, 1.0, 0.6)),  # chair.1
    est((-1.0, -0.2, 4.3), (0.6, 1.0, 0.6)),  # dresser.1
    Lifted3D(None, None, 0, 0.0, "no valid depth in the box"),  # lamp.1
    est((1.0, 0.3, 1.0)),  # cup.1
]


def test_verify_relations_checks_every_relation_and_counts_contradictions() -> None:
    parsed = _parsed(
        [
            ("chair.1", "in front of", "dresser.1"),  # consistent
            ("dresser.1", "in front of", "chair.1"),  # contradicted
            ("lamp.1", "above", "chair.1"),  # no 3D
            ("cup.1", "holding", "chair.1"),  # not spatial
            ("ghost.3", "left of", "chair.1"),  # not listed
            ("cup.1", "left of", "chair.1"),  # contradicted, not in the reasoning
        ],
        reasoning="chair.1 stands in the room; dresser.1 is against the wall, in front of it.",
    )
    report = verify_relations(parsed, LIFTED)
    assert [c.verdict for c in report.checks] == [C, X, U, U, U, X]
    assert report.contradicted == 2
    assert "no 3D for lamp.1: no valid depth in the box" in report.checks[2].evidence
    assert report.checks[4].evidence == "ghost.3 is not among the objects"
    # Only the contradicted relation the reasoning relies on is named in a warning.
    (warning,) = report.warnings
    assert warning.startswith(
        "the reasoning relies on 'dresser.1 in front of chair.1' (it names dresser.1 and chair.1)"
    )
    assert "dresser.1's front is 2.00 m farther from the camera than chair.1's" in warning
    # We report; the model's choice stays.
    assert (parsed.choice, parsed.choice_index, parsed.answer) == ("A", 0, "(A) yes")


def test_relied_on_by_label_and_wording() -> None:
    relations = [("dresser.1", "in front of", "chair.1")]
    by_labels = verify_relations(
        _parsed(relations, "The dresser stands in front of the chair."), LIFTED
    )
    assert "it names dresser.1 and chair.1" in by_labels.warnings[0]
    one_and_wording = verify_relations(
        _parsed(relations, "Something is in front of chair.1."), LIFTED
    )
    assert "it names chair.1 and says 'in front of'" in one_and_wording.warnings[0]
    # Neither object named, or one named without the wording: not the reasoning's argument.
    assert not verify_relations(_parsed(relations, "It is in front of the wall."), LIFTED).warnings
    assert not verify_relations(_parsed(relations, "chair.10 and armchairs."), LIFTED).warnings
    in_answer = verify_relations(_parsed(relations, "", answer="(A) dresser.1, chair.1"), LIFTED)
    assert in_answer.contradicted == 1 and len(in_answer.warnings) == 1


def test_without_depth_every_relation_is_unknown() -> None:
    parsed = _parsed([("chair.1", "in front of", "dresser.1")], "chair.1 and dresser.1")
    for lifted in (None, []):
        report = verify_relations(parsed, lifted)
        assert [c.verdict for c in report.checks] == [U]
        assert report.contradicted == 0 and not report.warnings
        assert report.checks[0].evidence.startswith("no 3D for chair.1")


# ----------------------------------------------------------------------------- rendered scenes


def test_rendered_scene_verdicts_agree_with_the_ground_truth() -> None:
    """On the demo scene, lifted from noisy synthetic depth, no verdict is wrong and clear
    truths (over 0.3 m apart along the axis) are confirmed."""
    scene = demo_scene()
    boxes = [o for o in scene.objects if o.kind == "box" and o.bbox is not None]
    lifted = lift_boxes([o.bbox for o in boxes], scene.depth_m, scene.intrinsics)
    axes = {"right of": 0, "below": 1, "behind": 2}
    decided = 0
    for (i, a), (j, b) in itertools.permutations(enumerate(boxes), 2):
        for predicate, axis in axes.items():
            if axis == 2:  # front surfaces
                truth = (a.center[2] - a.size[2] / 2) - (b.center[2] - b.size[2] / 2)
            else:
                truth = a.center[axis] - b.center[axis]
            result = check_relation(a.id, predicate, b.id, lifted[i], lifted[j])
            if result.verdict != U:
                assert (result.verdict == C) == (truth > 0), (a.label, predicate, b.label, result)
                decided += 1
            overlap = min(a.center[axis] + a.size[axis] / 2, b.center[axis] + b.size[axis] / 2)
            overlap -= max(a.center[axis] - a.size[axis] / 2, b.center[axis] - b.size[axis] / 2)
            if abs(truth) > 0.3 and overlap < 0:
                assert result.verdict != U, (a.label, predicate, b.label, result)
    assert decided >= 20


def test_rendered_cup_on_a_table_top() -> None:
    """A box standing on a horizontal plane, seen by a level camera 0.5 m above it."""
    specs = [
        ObjectSpec("table top", (0.0, 0.5, 2.0), (1.0, 0.0, 0.8), (150, 100, 60)),
        ObjectSpec("mug", (0.1, 0.44, 2.0), (0.09, 0.12, 0.09), (220, 30, 30)),
        ObjectSpec("ball", (-0.3, 0.1, 2.0), (0.12, 0.12, 0.12), (30, 30, 220)),
    ]
    scene = render_scene(specs, demo_scene().intrinsics, seed=1)
    lifted = lift_boxes([o.bbox for o in scene.objects], scene.depth_m, scene.intrinsics)
    assert check_relation("mug.1", "on", "table.1", lifted[1], lifted[0]).verdict == C
    assert check_relation("ball.1", "on", "table.1", lifted[2], lifted[0]).verdict == X
    assert check_relation("ball.1", "above", "mug.1", lifted[2], lifted[1]).verdict == C


# ----------------------------------------------------------------------------- diagnostics


def test_contradiction_counter_counts_within_the_window() -> None:
    counter = ContradictionCounter(60.0)
    counter.add(2, now=100.0)
    counter.add(0, now=110.0)
    counter.add(1, now=150.0)
    assert counter.in_window(now=155.0) == 3
    assert counter.in_window(now=161.0) == 1
    assert counter.in_window(now=300.0) == 0
    assert counter.total == 3


def test_on_and_above_seen_by_a_camera_looking_straight_down() -> None:
    # A cup (10 cm tall) on a table seen from 1 m straight above: the cup's top is 0.9 m from
    # the camera, the table's 1.0 m. Along the camera's -y (a level camera) the two are side by
    # side in the image plane; with up along the camera's -z the cup stands on the table.
    cup = Lifted3D((0.0, 0.0, 0.95), (0.08, 0.08, 0.1), 200, 0.9, "", 0.9)
    table = Lifted3D((0.0, 0.0, 1.35), (1.0, 0.6, 0.7), 200, 0.9, "", 1.0)
    down = UpEstimate((0.0, 0.0, -1.0), 90.0, 0.0, measured=False)
    assert check_relation("cup.1", "on", "table.1", cup, table).verdict != C
    on = check_relation("cup.1", "on", "table.1", cup, table, down)
    assert on.verdict == C, on.evidence
    assert "relations.up 'down'" in on.evidence
    assert check_relation("cup.1", "above", "table.1", cup, table, down).verdict == C
    assert check_relation("table.1", "above", "cup.1", table, cup, down).verdict == X
    # A plate beside the table on the floor (1.8 m away): not on it.
    floor_plate = Lifted3D((0.9, 0.0, 1.79), (0.2, 0.2, 0.02), 200, 0.9, "", 1.78)
    assert check_relation("plate.1", "on", "table.1", floor_plate, table, down).verdict == X
