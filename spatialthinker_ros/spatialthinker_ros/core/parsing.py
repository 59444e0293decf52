"""Read SpatialThinker's tagged output into plain data.

The model writes::

    <observe> ... </observe>
    <scene> {"objects": [{"id": "man.1", "bbox": [x1, y1, x2, y2]}, ...],
             "relationships": [{"subject": "man.1", "predicate": "behind", "object": "bike.1"}]}
    </scene>
    <think> ... </think>
    <answer> (A) behind </answer>

:func:`parse_output` is exact on that format and forgiving of what real generations contain
instead (code fences, Python-style dicts, trailing commas, output cut off by the token limit,
odd ids, boxes as strings or upside down, loose answers). Sections are found in document order:
a tag named inside another section ("I will put the letter in the <answer> section" inside
``<think>``) is text of that section. Of several answer blocks the last complete one is used.
An answer whose letter and text name different options gives no choice. Every repair is
recorded in ``SpatialResult.warnings``; ``SpatialResult.strict`` says whether the text met the
format the model was trained to produce (the training format reward), whatever we repaired.

Design constraints, because everything downstream trusts this layer and the input is
untrusted model text:

* never raises on any ``str`` (a last-resort guard turns internal errors into a warning);
* linear time: tags are located with ``str.find``; the only regular expressions have no nested
  or overlapping quantifiers; the tolerant scene reader is an iterative tokenizer + stack
  parser (no recursion, nothing is ever ``eval``-ed);
* bounded output: objects, relations, warnings and text fields are capped, with a warning.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ID_PATTERN",
    "MAX_FIELD_CHARS",
    "MAX_OBJECTS",
    "MAX_RELATIONS",
    "MAX_SCENE_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_WARNINGS",
    "TAGS",
    "ParsedObject",
    "ParsedRelation",
    "SpatialResult",
    "label_from_id",
    "parse_output",
    "section_progress",
]

#: The four sections, in the order the model is trained to write them.
TAGS = ("observe", "scene", "think", "answer")
#: Object ids the training format accepts (full match).
ID_PATTERN = re.compile(r"[a-zA-Z_]+\.\d+")

MAX_OBJECTS = 100
MAX_RELATIONS = 100
#: Ids, labels, predicates.
MAX_FIELD_CHARS = 256
#: Observation, reasoning, answer: 2,048 generated tokens are ~8k characters, so 16k is ample.
MAX_TEXT_CHARS = 16_384
#: The tolerant scene reader looks at no more than this; a real scene of 100 objects and 100
#: relations is ~15k characters.
MAX_SCENE_CHARS = 100_000
MAX_WARNINGS = 64
#: Deeper nesting than this never occurs in a scene graph; deeper content is skipped.
_MAX_DEPTH = 16

_EXCERPT = 40

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ParsedObject:
    """One object of the scene graph.

    Attributes:
        id: The model's id when it is ``name.N``-like (``bike.01``, ``traffic light.1`` and
            ``café.1`` are kept as written), otherwise a normalised ``name.N``.
        label: The id's part before the last dot, underscores read as spaces
            (``traffic_light.2`` -> ``traffic light``, ``café.1`` -> ``café``).
        bbox: ``(x1, y1, x2, y2)`` with ``x1 <= x2``, ``y1 <= y2``, in the stated image frame.
    """

    id: str
    label: str
    bbox: Box


@dataclass(frozen=True)
class ParsedRelation:
    """One ``subject predicate object`` relation (ids read like object ids)."""

    subject: str
    predicate: str
    object: str


@dataclass
class SpatialResult:
    """Everything extracted from one model output.

    Attributes:
        observation: Text of ``<observe>``.
        reasoning: Text of ``<think>``.
        objects: Scene-graph objects, unique ids, in output order.
        relations: Scene-graph relations, in output order.
        answer: Text inside ``<answer>`` (stripped), or our best recovery of it.
        choice: Option letter (``"B"``) or ``None``.
        choice_index: 0-based option index or ``None``.
        strict: The text met the trained format exactly.
        warnings: One line per deviation found or repair made.
    """

    observation: str = ""
    reasoning: str = ""
    objects: list[ParsedObject] = field(default_factory=list)
    relations: list[ParsedRelation] = field(default_factory=list)
    answer: str = ""
    choice: str | None = None
    choice_index: int | None = None
    strict: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (boxes become lists)."""
        data = asdict(self)
        for obj in data["objects"]:
            obj["bbox"] = list(obj["bbox"])
        return data


def label_from_id(object_id: str) -> str:
    """The part before the last dot, underscores read as spaces, any script kept.

    ``traffic_light.2`` -> ``traffic light``; ``man.1`` -> ``man``; ``café.1`` -> ``café``.
    """
    name = object_id.rpartition(".")[0] if "." in object_id else object_id
    return _name_key(name)


# --------------------------------------------------------------------------------------------
# Warnings


class _Notes:
    """Collects warnings, deduplicated and capped, and the strict flag."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._seen: set[str] = set()
        self._dropped = 0
        self.strict = True

    def add(self, message: str, *, breaks_format: bool = False) -> None:
        if breaks_format:
            self.strict = False
        if message in self._seen:
            return
        if len(self.items) >= MAX_WARNINGS:
            self._dropped += 1
            return
        self._seen.add(message)
        self.items.append(message)

    def finish(self) -> list[str]:
        if self._dropped:
            self.items.append(f"{self._dropped} further warnings suppressed")
        return self.items


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text[: _EXCERPT * 2]  # bound repr work before formatting
    short = text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."
    return repr(short) if isinstance(value, str) else short


def _cap(text: str, limit: int, what: str, notes: _Notes) -> str:
    if len(text) > limit:
        notes.add(f"{what} longer than {limit} characters; truncated")
        return text[:limit]
    return text


# --------------------------------------------------------------------------------------------
# Sections

# Lower-case ASCII only: str.lower() may change the length of non-ASCII text, and positions
# found in the lowered copy must index the original.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass
class _Section:
    content: str | None = None  # None: the section is missing
    start: int = -1  # position of the opening tag (or of the content when it is missing)
    end: int = -1  # position just after the closing tag (or the content)
    complete: bool = True  # both its opening and its closing tag were found


@dataclass
class _Sections:
    """The sections used, one per tag, and where the tagged part of the output ends."""

    used: dict[str, _Section]
    tail: int  # position just after the last section: the text after it is not in any section


def _positions(low: str, marker: str) -> list[int]:
    found: list[int] = []
    at = low.find(marker)
    while at >= 0:
        found.append(at)
        at = low.find(marker, at + len(marker))
    return found


def _split_sections(text: str, notes: _Notes) -> _Sections:
    """Find the sections in document order.

    A tag that falls inside an open section is text of that section (the reasoning may well
    say "I will put the letter in the <answer> section"), not a section of its own. A section
    whose own opening tag comes again before it closes was started over and ends there; one
    whose closing tag never comes runs to the next tag, or to the end of the output when
    generation was cut off. Of several sections of one tag the first is used, except for
    ``<answer>``, where the last complete one is (the model's final word; the authors'
    evaluation reads the last answer block too).

    Linear time: every tag is located once with ``str.find``; closing tags are looked up by
    bisection, and the document-order walk skips each tag at most once.
    """
    low = text.translate(_ASCII_LOWER)
    # (position, is_closing, tag) of every tag, in document order.
    tokens: list[tuple[int, bool, str]] = []
    opening_at: dict[str, list[int]] = {}
    closing_at: dict[str, list[int]] = {}
    for tag in TAGS:
        opening_at[tag] = _positions(low, f"<{tag}>")
        tokens.extend((p, False, tag) for p in opening_at[tag])
        closing_at[tag] = _positions(low, f"</{tag}>")
        tokens.extend((p, True, tag) for p in closing_at[tag])
    tokens.sort()
    token_at = [p for p, _, _ in tokens]

    def marker(is_closing: bool, tag: str) -> str:
        return f"</{tag}>" if is_closing else f"<{tag}>"

    def check_case(at: int, mark: str) -> None:
        if text[at : at + len(mark)] != mark:
            notes.add(f"tag {mark} written in upper case", breaks_format=True)

    found: dict[str, list[_Section]] = {tag: [] for tag in TAGS}
    pos = 0  # everything before this is read
    host = ""  # the section that the tags before ``pos`` fell into
    own_close = -1  # position of that section's own closing tag
    for at, is_closing, tag in tokens:
        mark = marker(is_closing, tag)
        if at == own_close:
            continue
        if at < pos:
            # Inside the section just read: its text. The training format counts every
            # opening tag written, so a mention of one still breaks it.
            exact = not is_closing and text[at : at + len(mark)] == mark
            notes.add(
                f"tag {mark} inside <{host}> read as its text, not as a section",
                breaks_format=exact,
            )
            continue
        if is_closing:
            if found[tag]:
                notes.add(f"stray {mark} ignored")
            else:
                # Missing opening tag: the section starts where the previous one ended.
                notes.add(f"missing opening tag <{tag}>", breaks_format=True)
                check_case(at, mark)
                found[tag].append(_Section(text[pos:at], pos, at + len(mark), complete=False))
            pos, host = at + len(mark), tag
            continue
        check_case(at, mark)
        body = at + len(mark)
        closes = closing_at[tag]
        k = bisect.bisect_left(closes, body)
        opens = opening_at[tag]
        j = bisect.bisect_left(opens, body)
        reopened = opens[j] if j < len(opens) else len(text)
        if k < len(closes) and closes[k] > reopened:
            # The same tag opens again before this one closes: the model started the section
            # over (a section never names its own opening tag in the trained format).
            notes.add(
                f"missing closing tag </{tag}>; read up to the next <{tag}>", breaks_format=True
            )
            found[tag].append(_Section(text[body:reopened], at, reopened, complete=False))
            pos, host = reopened, tag
            continue
        if k < len(closes):
            close = closes[k]
            check_case(close, f"</{tag}>")
            found[tag].append(_Section(text[body:close], at, close + len(tag) + 3))
            pos, host, own_close = close + len(tag) + 3, tag, close
            continue
        # Missing closing tag: the section runs to the next tag of any kind, or to the end
        # of the text when generation was cut off by the token limit.
        k = bisect.bisect_left(token_at, body)
        end = token_at[k] if k < len(token_at) else len(text)
        where = "next tag" if k < len(token_at) else "end of output (cut off?)"
        notes.add(f"missing closing tag </{tag}>; read up to the {where}", breaks_format=True)
        found[tag].append(_Section(text[body:end], at, end, complete=False))
        pos, host = end, tag

    used: dict[str, _Section] = {}
    for tag in TAGS:
        sections = found[tag]
        if not sections:
            used[tag] = _Section()
            continue
        if len(sections) == 1:
            used[tag] = sections[0]
            continue
        if tag != "answer":
            used[tag] = sections[0]
            notes.add(
                f"tag <{tag}> appears {len(sections)} times; using the first", breaks_format=True
            )
            continue
        complete = [i for i, sec in enumerate(sections) if sec.complete]
        index = complete[-1] if complete else len(sections) - 1
        used[tag] = sections[index]
        notes.add(
            f"tag <answer> appears {len(sections)} times; using block {index + 1} of "
            f"{len(sections)}: {_excerpt((sections[index].content or '').strip())}",
            breaks_format=True,
        )

    present = sorted((sec.start, tag) for tag, sec in used.items() if sec.content is not None)
    if [tag for _, tag in present] != [tag for tag in TAGS if used[tag].content is not None]:
        # The training reward did not enforce order, so this does not break the format.
        notes.add("tags out of order (expected observe, scene, think, answer)")
    if present:
        first = present[0][0]
        if text[:first].strip():
            notes.add(f"text before the first tag ignored: {_excerpt(text[:first].strip())}")
    tail = max((sec.end for secs in found.values() for sec in secs), default=0)
    return _Sections(used, tail)


def section_progress(text: str) -> tuple[str | None, int | None]:
    """Where an output still being written stands, by the rules :func:`parse_output` reads it.

    Returns:
        The tag of the section written last (the last one started, in document order; None
        before the first tag), and, once the ``<scene>`` that :func:`parse_output` would use is
        closed, the position just after its ``</scene>`` (else None). The text up to that
        position holds the whole scene graph: parsing it gives the final parse's scene.
    """
    split = _split_sections(text, _Notes())
    started = [(sec.start, tag) for tag, sec in split.used.items() if sec.content is not None]
    current = max(started)[1] if started else None
    scene = split.used["scene"]
    closed = scene.content is not None and scene.complete
    return current, (scene.end if closed else None)


# --------------------------------------------------------------------------------------------
# Tolerant scene reader


class _Dict(dict):
    """A dict from the tolerant reader that remembers whether its ``}`` was seen."""

    __slots__ = ("complete",)


class _List(list):
    """A list from the tolerant reader that remembers whether its closing bracket was seen."""

    __slots__ = ("closer", "complete")


# One token per match: punctuation, a double- or single-quoted string (the closing quote is
# optional so a string cut off by the token limit is still one token), or a bare word. Each
# alternative starts with a different character class and the string bodies are the unrolled
# form ``[^"\\]*(?:\\.[^"\\]*)*``, so matching is linear with no backtracking.
_TOKEN = re.compile(
    r"""[{}\[\]():,]"""
    r"""|"[^"\\]*(?:\\.[^"\\]*)*"?"""
    r"""|'[^'\\]*(?:\\.[^'\\]*)*'?"""
    r"""|[^\s{}\[\]():,"']+""",
    re.DOTALL,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}
_LITERALS = {"true": True, "false": False, "null": None}
_PY_LITERALS = {"True": True, "False": False, "None": None}


def _unescape(match: re.Match[str]) -> str:
    esc = match.group(1)
    if len(esc) == 5:
        return chr(int(esc[1:], 16))
    return _SIMPLE_ESCAPES.get(esc, esc)


def _string_token(tok: str) -> tuple[str, bool]:
    """Body of a quoted token and whether it was terminated."""
    quote = tok[0]
    closed = len(tok) >= 2 and tok.endswith(quote) and not _ends_escaped(tok)
    body = tok[1:-1] if closed else tok[1:]
    return (_ESCAPE.sub(_unescape, body) if "\\" in body else body), closed


def _ends_escaped(tok: str) -> bool:
    # The final quote is escaped when preceded by an odd run of backslashes.
    run = len(tok) - 1 - len(tok[:-1].rstrip("\\"))
    return run % 2 == 1


def _read_scene_tolerant(scene: str, notes: _Notes) -> Any:
    """Parse JSON-ish text without recursion or eval, keeping what is complete.

    Accepts single quotes, Python literals and tuples, trailing commas, unquoted words, stray
    text around the value, and input cut off anywhere (open containers are returned with
    ``complete=False``). Returns the first top-level ``{...}`` or ``[...]`` value, or ``None``.
    """
    if len(scene) > MAX_SCENE_CHARS:
        notes.add(f"scene longer than {MAX_SCENE_CHARS} characters; the rest ignored")
        scene = scene[:MAX_SCENE_CHARS]
    root: Any = None
    stack: list[Any] = []  # open containers
    keys: list[Any] = []  # per open container: pending key for dicts (None when expecting one)
    colon: list[bool] = []  # per open container: a ':' followed the pending key
    skip = 0  # depth of containers skipped because nesting exceeded _MAX_DEPTH
    prev = ""
    stray = False

    def attach(value: Any) -> None:
        nonlocal stray
        if not stack:
            stray = True
            return
        top = stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif keys[-1] is None:
            if isinstance(value, str):
                keys[-1] = value
            else:
                stray = True  # a container or number where a key belongs: drop it
        else:
            if not colon[-1]:
                notes.add("missing ':' between a key and its value")
            top[keys[-1]] = value
            keys[-1] = None
            colon[-1] = False

    for m in _TOKEN.finditer(scene):
        tok = m.group()
        c = tok[0]
        if skip:
            if c in "{[(":
                skip += 1
            elif c in "}])":
                skip -= 1
            continue
        if c in "{[(":
            if len(stack) >= _MAX_DEPTH:
                notes.add(f"scene nested deeper than {_MAX_DEPTH} levels; inner part ignored")
                skip = 1
                continue
            if c == "(":
                notes.add("Python tuple in <scene> read as a list")
            container: Any = _Dict() if c == "{" else _List()
            container.complete = False
            if isinstance(container, _List):
                container.closer = "]" if c == "[" else ")"
            if stack:
                attach(container)
            elif root is None:
                root = container
            else:
                stray = True
            stack.append(container)
            keys.append(None)
            colon.append(False)
        elif c in "}])":
            want = _Dict if c == "}" else _List
            idx = len(stack) - 1
            while idx >= 0 and not (
                isinstance(stack[idx], want) and (c == "}" or stack[idx].closer == c)
            ):
                idx -= 1
            if idx < 0:
                stray = True
            else:
                if prev == ",":
                    notes.add("trailing comma in <scene>")
                if idx != len(stack) - 1:
                    notes.add(f"mismatched {c!r} in <scene>; inner containers left incomplete")
                stack[idx].complete = True
                del stack[idx:], keys[idx:], colon[idx:]
                if not stack and root is not None:
                    prev = c
                    break  # the first top-level value is the scene
        elif c == ":":
            if stack and isinstance(stack[-1], dict) and keys[-1] is not None:
                colon[-1] = True
        elif c == ",":
            if stack and isinstance(stack[-1], dict) and keys[-1] is not None:
                keys[-1] = None  # a key without a value: drop it
                colon[-1] = False
        elif c in "\"'":
            value, closed = _string_token(tok)
            if c == "'":
                notes.add("single-quoted strings in <scene>")
            if not closed:
                # Only the token limit cuts a string; its container stays incomplete.
                continue
            attach(value)
        else:
            if tok in _LITERALS:
                attach(_LITERALS[tok])
            elif tok in _PY_LITERALS:
                notes.add(f"Python literal {tok} in <scene>")
                attach(_PY_LITERALS[tok])
            elif _NUMBER.fullmatch(tok):
                # Long digit runs go through float (-> inf, rejected later): int() refuses
                # more than 4,300 digits.
                attach(float(tok) if len(tok) > 300 or any(ch in tok for ch in ".eE") else int(tok))
            elif stack:
                if isinstance(stack[-1], dict) and keys[-1] is None:
                    notes.add(f"unquoted key {_excerpt(tok)} in <scene>")
                else:
                    notes.add(f"unquoted value {_excerpt(tok)} in <scene>")
                attach(tok)
            else:
                stray = True
        prev = c
    if stack:
        notes.add("scene cut off before its end (truncated output?); incomplete entries dropped")
    if stray:
        notes.add("stray text in <scene> ignored")
    return root


def _strip_fences(scene: str, notes: _Notes) -> str:
    """Remove a Markdown code fence (```json ... ```) around the scene."""
    s = scene.strip()
    if not s.startswith("```") and not s.endswith("```"):
        return scene
    notes.add("code fence inside <scene> removed")
    if s.startswith("```"):
        newline = s.find("\n")
        s = s[newline + 1 :] if newline >= 0 else s[3:].lstrip("`")
        # ```json{...} on one line: drop the language word.
        if newline < 0:
            brace = min((p for p in (s.find("{"), s.find("[")) if p >= 0), default=0)
            s = s[brace:]
    if s.rstrip().endswith("```"):
        s = s.rstrip()[:-3]
    return s


# --------------------------------------------------------------------------------------------
# Scene validation


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


# --------------------------------------------------------------------------------------------
# Answer and choice


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


def _recover_answer(tail: str, notes: _Notes) -> str:
    """The answer when ``<answer>`` is missing, from the text after the last section.

    The text after the last ``answer is`` / ``answer:`` when there is one (on its line, or the
    next non-empty line when that is empty), else the last non-empty line.
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
        return ""
    notes.add(f"answer without <answer> tags recovered: {_excerpt(answer)}", breaks_format=True)
    return answer


# --------------------------------------------------------------------------------------------
# Entry point


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

    if sections["answer"].content is not None:
        answer = sections["answer"].content.strip()
        if not answer:
            notes.add("empty <answer>")
        trailing = text[split.tail :].strip()
        if trailing:
            notes.add(f"text after the last tag ignored: {_excerpt(trailing)}")
    else:
        answer = _recover_answer(text[split.tail :], notes)
    answer = _cap(answer, MAX_TEXT_CHARS, "answer", notes)
    # An empty answer was already reported (missing section or empty tags need no second note).
    choice, choice_index = _read_choice(answer, options, notes) if answer else (None, None)
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
    )
