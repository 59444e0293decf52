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

Modules, one concern each (this package's ``__init__`` re-exports the public names):

* :mod:`.results`: what a parse returns (:class:`SpatialResult`, :class:`ParsedObject`,
  :class:`ParsedRelation`);
* :mod:`.output`: the entry point :func:`parse_output`;
* :mod:`.sections`: the four tagged sections, in document order (:func:`section_progress` for
  an output still being written);
* :mod:`.scene`: ``<scene>`` to objects and relations (ids, boxes, the trained format's checks);
* :mod:`.lenient_json`: the tolerant reader for scene text that is not valid JSON;
* :mod:`.answer_choice`: the chosen option, and an answer written without tags;
* :mod:`.notes`: the warnings and strict flag every step reports to.
"""

from __future__ import annotations

from spatialthinker_ros.core.parsing.lenient_json import MAX_SCENE_CHARS
from spatialthinker_ros.core.parsing.notes import MAX_WARNINGS
from spatialthinker_ros.core.parsing.output import MAX_TEXT_CHARS, parse_output
from spatialthinker_ros.core.parsing.results import ParsedObject, ParsedRelation, SpatialResult
from spatialthinker_ros.core.parsing.scene import (
    ID_PATTERN,
    MAX_FIELD_CHARS,
    MAX_OBJECTS,
    MAX_RELATIONS,
    label_from_id,
)
from spatialthinker_ros.core.parsing.sections import TAGS, section_progress

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
