"""What a parse returns: the scene graph's objects and relations, and the whole result.

Plain data with no behaviour beyond :meth:`SpatialResult.to_dict`; everything downstream (the
engine, the answering pipeline, the ROS messages) reads these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
        answer_span: ``(start, end)`` of ``answer`` in the parsed text (characters), or None
            without an answer. With ``letter_offset``, where the model's token probabilities
            of the answer are read (``core.confidence``); not part of :meth:`to_dict`.
        letter_offset: Position in the parsed text of the option letter the answer starts
            with (the ``B`` of ``(B) behind``), or None when it starts with none (an answer
            naming an option by its text only).
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
    answer_span: tuple[int, int] | None = None
    letter_offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (boxes become lists); the positions in the text are left out."""
        data = asdict(self)
        del data["answer_span"], data["letter_offset"]
        for obj in data["objects"]:
            obj["bbox"] = list(obj["bbox"])
        return data
