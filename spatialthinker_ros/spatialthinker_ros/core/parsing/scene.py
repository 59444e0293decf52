"""The scene graph: ``<scene>`` text to objects and relations.

:func:`_read_scene` decodes the scene (strict JSON, else :mod:`.lenient_json`), checks it against
the training format, and turns its entries into :class:`ParsedObject` and
:class:`ParsedRelation`: ids read or normalised to ``name.N``, boxes read as four finite
numbers, reordered and clipped to the image, relations resolved to the objects' ids. The counts
and field lengths are capped here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from spatialthinker_ros.core.parsing.lenient_json import (
    _NUMBER,
    _read_scene_tolerant,
    _strip_fences,
)
from spatialthinker_ros.core.parsing.notes import _cap, _excerpt, _Notes
from spatialthinker_ros.core.parsing.results import Box, ParsedObject, ParsedRelation

#: Object ids the training format accepts (full match).
ID_PATTERN = re.compile(r"[a-zA-Z_]+\.\d+")

MAX_OBJECTS = 100
MAX_RELATIONS = 100
#: Ids, labels, predicates.
MAX_FIELD_CHARS = 256


def label_from_id(object_id: str) -> str:
    """The part before the last dot, underscores read as spaces, any script kept.

    ``traffic_light.2`` -> ``traffic light``; ``man.1`` -> ``man``; ``café.1`` -> ``café``.
    """
    name = object_id.rpartition(".")[0] if "." in object_id else object_id
    return _name_key(name)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_finite_number(v: Any) -> bool:
    # JSON parsers accept NaN/Infinity, and ints too large for a float overflow.
    if not _is_number(v):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _strict_object(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and obj.keys() == {"id", "bbox"}
        and isinstance(obj["id"], str)
        and ID_PATTERN.fullmatch(obj["id"]) is not None
        and isinstance(obj["bbox"], list)
        and len(obj["bbox"]) == 4
        and all(_is_finite_number(v) for v in obj["bbox"])
    )


def _strict_relation(rel: Any) -> bool:
    return (
        isinstance(rel, dict)
        and all(isinstance(rel.get(k), str) for k in ("subject", "predicate", "object"))
        and ID_PATTERN.fullmatch(rel["subject"]) is not None
        and ID_PATTERN.fullmatch(rel["object"]) is not None
    )


def _scene_is_strict(scene: Any) -> bool:
    """The training format's checks on the parsed scene (short-circuits on the first failure)."""
    if not isinstance(scene, dict):
        return False
    objs = scene.get("objects", [])
    rels = scene.get("relationships", [])
    if not isinstance(objs, list) or not isinstance(rels, list):
        return False
    if not all(_strict_object(o) for o in objs):
        return False
    ids = [o["id"] for o in objs]
    return len(set(ids)) == len(ids) and all(_strict_relation(r) for r in rels)


def _is_name(name: str) -> bool:
    """A readable object name: letters of any script, digits, ``_``, inner spaces and hyphens."""
    return (
        name == name.strip(" -")
        and any(ch.isalpha() for ch in name)
        and all(ch.isalnum() or ch in "_ -" for ch in name)
    )


def _split_id(raw: str) -> tuple[str, str | None]:
    """Name and number of an id as written.

    An id that is already ``name.N``-like is kept as written: ``"bike.01"`` ->
    ``("bike", "01")``, ``"traffic light.1"`` -> ``("traffic light", "1")``, ``"café.1"`` ->
    ``("café", "1")``; relations and the model's reasoning name objects by those very ids.
    Anything else is normalised to letters and underscores: ``"car"`` -> ``("car", None)``,
    ``"thing 3"`` -> ``("thing", "3")``, ``'a".1'`` -> ``("a", "1")``.
    """
    s = raw.strip()
    name, dot, number = s.rpartition(".")
    if dot and number.isascii() and number.isdigit() and _is_name(name):
        return name, number
    stem = s.rstrip("0123456789")
    digits = s[len(stem) :] or None
    name = stem.rstrip(" ._-#") if digits else stem
    # Any run of characters other than letters and '_' becomes one underscore.
    out: list[str] = []
    for ch in name:
        if ch.isalpha() or ch == "_":
            out.append(ch)
        elif out and out[-1] != "_":
            out.append("_")
    clean = "".join(out).strip("_") or "object"
    return clean, (str(int(digits)) if digits else None)


def _name_key(name: str) -> str:
    """One key for the spellings of a name (``traffic_light``, ``traffic light``)."""
    return " ".join(name.replace("_", " ").split())


def _to_float(v: Any) -> float | None:
    if isinstance(v, str):
        v = v.strip()
        if len(v) > 64 or not _NUMBER.fullmatch(v):
            return None
    elif not _is_number(v):
        return None
    try:
        f = float(v)
    except (OverflowError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _read_box(raw: Any, oid: str, notes: _Notes) -> Box | None:
    values = raw
    if isinstance(raw, str):
        notes.add(f"bbox of {oid} given as a string")
        text = raw[:256].strip().strip("[]()")
        values = [p for p in text.replace(",", " ").split() if p]
    elif isinstance(raw, dict):
        notes.add(f"bbox of {oid} given as a dict")
        values = [raw.get(k) for k in ("x1", "y1", "x2", "y2")]
    if not isinstance(values, list) or len(values) != 4:
        notes.add(f"object {oid} has no 4-number bbox ({_excerpt(raw)}); dropped")
        return None
    if not isinstance(raw, str) and any(isinstance(v, str) for v in values):
        notes.add(f"bbox of {oid} has numbers given as strings")
    nums = [_to_float(v) for v in values]
    if any(v is None for v in nums):
        notes.add(
            f"object {oid} has a bbox that is not 4 finite numbers ({_excerpt(raw)}); dropped"
        )
        return None
    x1, y1, x2, y2 = nums  # type: ignore[misc]
    if x1 > x2 or y1 > y2:
        notes.add(f"bbox of {oid} has its corners swapped; reordered")
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
    return (x1, y1, x2, y2)


def _clip_box(box: Box, oid: str, image_size: tuple[int, int], notes: _Notes) -> Box | None:
    w, h = float(image_size[0]), float(image_size[1])
    x1, y1, x2, y2 = box
    clipped = (
        min(max(x1, 0.0), w),
        min(max(y1, 0.0), h),
        min(max(x2, 0.0), w),
        min(max(y2, 0.0), h),
    )
    if clipped == box:
        return box
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        # Nothing of it is in the image: a box of zero area would only mislead the 3D lifting.
        notes.add(f"bbox of {oid} lies entirely outside the {int(w)} x {int(h)} image; dropped")
        return None
    notes.add(f"bbox of {oid} extends outside the {int(w)} x {int(h)} image; clipped")
    return clipped


def _objects_from(
    raw_objects: list[Any], image_size: tuple[int, int] | None, notes: _Notes
) -> list[ParsedObject]:
    # First pass: the entries we can use and their ids as written, so that numbers we assign to
    # ids written without one never collide with an id that appears later.
    entries: list[tuple[str, str | None, Any, str]] = []
    used: set[str] = set()
    for obj in raw_objects:
        if not isinstance(obj, dict):
            notes.add(f"scene object is not a dict ({_excerpt(obj)}); dropped")
            continue
        if not getattr(obj, "complete", True):
            continue  # cut off by the token limit: reported once by the reader
        raw_id = obj.get("id")
        if raw_id is None:
            for alt in ("name", "label", "object", "category"):
                if isinstance(obj.get(alt), str):
                    raw_id = obj[alt]
                    notes.add(f"object without 'id' named by its {alt!r} {_excerpt(raw_id)}")
                    break
            else:
                raw_id = "object"
                notes.add("object without 'id'; named 'object'")
        if not isinstance(raw_id, str):
            notes.add(f"object id {_excerpt(raw_id)} is not a string")
            raw_id = str(raw_id)
        raw_id = _cap(raw_id, MAX_FIELD_CHARS, "object id", notes)
        extra = sorted(str(k) for k in obj if k not in ("id", "bbox"))
        if extra:
            notes.add(f"object {_excerpt(raw_id)} has extra keys {', '.join(extra)[:80]}; ignored")
        name, number = _split_id(raw_id)
        if number is not None:
            used.add(f"{name}.{number}")
        entries.append((name, number, obj.get("bbox"), raw_id))

    objects: list[ParsedObject] = []
    seen: set[str] = set()
    for name, number, raw_box, raw_id in entries:
        if number is None:
            n = 1
            while f"{name}.{n}" in used:
                n += 1
            oid = f"{name}.{n}"
            used.add(oid)
            notes.add(f"id {_excerpt(raw_id)} has no number; named {oid}")
        else:
            oid = f"{name}.{number}"
            if oid != raw_id:
                notes.add(f"id {_excerpt(raw_id)} is not of the form name.N; read as {oid}")
            elif ID_PATTERN.fullmatch(oid) is None:
                notes.add(
                    f"id {_excerpt(raw_id)} is outside the trained pattern (letters and "
                    "underscores, a dot, a number); kept as written"
                )
        if oid in seen:
            notes.add(f"duplicate id {oid}; kept the first")
            continue
        if raw_box is None:
            notes.add(f"object {oid} has no bbox; dropped")
            continue
        box = _read_box(raw_box, oid, notes)
        if box is not None and image_size is not None:
            box = _clip_box(box, oid, image_size, notes)
        if box is None:
            continue
        seen.add(oid)
        objects.append(ParsedObject(oid, label_from_id(oid), box))
    return objects


def _resolve_ref(raw: Any, role: str, by_name: dict[str, list[str]], notes: _Notes) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        notes.add(f"relation {role} {_excerpt(raw)} is not a string")
        raw = str(raw)
    raw = _cap(raw, MAX_FIELD_CHARS, f"relation {role}", notes)
    name, number = _split_id(raw)
    if number is not None:
        ref = f"{name}.{number}"
    elif len(by_name.get(_name_key(name), ())) == 1:
        ref = by_name[_name_key(name)][0]
    else:
        ref = name
    if ref != raw:
        notes.add(f"relation {role} {_excerpt(raw)} read as {ref}")
    return ref


def _relations_from(
    raw_relations: list[Any], objects: list[ParsedObject], notes: _Notes
) -> list[ParsedRelation]:
    ids = {o.id for o in objects}
    by_name: dict[str, list[str]] = {}
    for o in objects:
        by_name.setdefault(_name_key(o.id.rpartition(".")[0]), []).append(o.id)
    relations: list[ParsedRelation] = []
    for rel in raw_relations:
        if not isinstance(rel, dict):
            notes.add(f"relation is not a dict ({_excerpt(rel)}); dropped")
            continue
        if not getattr(rel, "complete", True):
            continue
        predicate = rel.get("predicate", rel.get("relation"))
        subject = _resolve_ref(rel.get("subject"), "subject", by_name, notes)
        obj = _resolve_ref(rel.get("object"), "object", by_name, notes)
        if subject is None or obj is None or predicate is None:
            notes.add(f"relation missing subject, predicate or object ({_excerpt(rel)}); dropped")
            continue
        if "predicate" not in rel:
            notes.add("relation uses 'relation' instead of 'predicate'")
        if not isinstance(predicate, str):
            notes.add(f"predicate {_excerpt(predicate)} is not a string")
            predicate = str(predicate)
        predicate = " ".join(_cap(predicate, MAX_FIELD_CHARS, "predicate", notes).split())
        for ref in (subject, obj):
            if ref not in ids:
                notes.add(f"relation names unknown id {_excerpt(ref)}; kept")
        relations.append(ParsedRelation(subject, predicate, obj))
    return relations


def _read_scene(
    scene_text: str, image_size: tuple[int, int] | None, notes: _Notes
) -> tuple[list[ParsedObject], list[ParsedRelation]]:
    scene = _decode_scene(scene_text, notes)
    if scene is None:
        if scene_text.strip():
            notes.add(f"no scene graph found in <scene> ({_excerpt(scene_text.strip())})")
        else:
            notes.add("empty <scene>")
        notes.strict = False
        return [], []
    if not _scene_is_strict(scene):
        notes.strict = False
    if isinstance(scene, dict) and not scene:
        # The training reward gives no format credit to an empty object: it wants the lists.
        notes.add("scene is an empty object {} (no 'objects' list)", breaks_format=True)

    if isinstance(scene, list):
        notes.add("scene is a bare list; read as its objects")
        scene = {"objects": scene}
    if not isinstance(scene, dict):
        notes.add(f"scene is not a JSON object ({_excerpt(scene)})")
        return [], []
    raw_objects = scene.get("objects", [])
    raw_relations = scene.get("relationships")
    if raw_relations is None and "relations" in scene:
        notes.add("scene uses 'relations' instead of 'relationships'")
        raw_relations = scene["relations"]
    if raw_relations is None:
        raw_relations = []
    if not isinstance(raw_objects, list):
        notes.add("scene 'objects' is not a list; ignored")
        raw_objects = []
    if not isinstance(raw_relations, list):
        notes.add("scene 'relationships' is not a list; ignored")
        raw_relations = []
    if len(raw_objects) > MAX_OBJECTS:
        notes.add(f"{len(raw_objects)} objects; only the first {MAX_OBJECTS} read")
        raw_objects = raw_objects[:MAX_OBJECTS]
    if len(raw_relations) > MAX_RELATIONS:
        notes.add(f"{len(raw_relations)} relations; only the first {MAX_RELATIONS} read")
        raw_relations = raw_relations[:MAX_RELATIONS]
    objects = _objects_from(raw_objects, image_size, notes)
    relations = _relations_from(raw_relations, objects, notes)
    return objects, relations


def _decode_scene(scene_text: str, notes: _Notes) -> Any:
    """The scene's value: strict JSON, else JSON inside a code fence, else read tolerantly."""
    scene: Any = None
    try:
        scene = json.loads(scene_text)
    except (ValueError, RecursionError):
        notes.strict = False
        body = _strip_fences(scene_text, notes)
        if body is not scene_text:
            try:
                scene = json.loads(body)
            except (ValueError, RecursionError):
                scene = None
        if scene is None:
            scene = _read_scene_tolerant(body, notes)
            if scene is not None:
                notes.add("scene is not valid JSON; read tolerantly")
    return scene
