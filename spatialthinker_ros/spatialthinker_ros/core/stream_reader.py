"""Read SpatialThinker's output while it is being written (ROS-free).

The model writes ``<observe>``, ``<scene>``, a long ``<think>`` and ``<answer>``; the scene
graph is whole once ``</scene>`` is written, typically at 40-50 % of the output. A
:class:`StreamReader` is fed the text chunk by chunk and says when the stage changes and, at
``</scene>``, what the scene graph is.

Sections are found by :func:`spatialthinker_ros.core.parsing.section_progress` and the scene is
parsed by :func:`spatialthinker_ros.core.parsing.parse_output` on the text up to ``</scene>``: the
same rules as the final parse of the whole text, which stays the one source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spatialthinker_ros.core.parsing import SpatialResult, parse_output, section_progress

__all__ = ["STAGES", "StreamEvent", "StreamReader"]

#: The stages of a request, in order: waiting for the model, then one per section.
STAGES = ("queued", "observing", "scene", "thinking", "answering")
# The stage while each section is being written.
_STAGE_OF = {"observe": "observing", "scene": "scene", "think": "thinking", "answer": "answering"}
# Longest tag (``</observe>``): a tag may be split across chunks.
_TAG_CHARS = len("</observe>")


@dataclass(frozen=True)
class StreamEvent:
    """What one chunk changed.

    Attributes:
        stage: The stage entered (one of :data:`STAGES`), or "" for a scene event.
        scene: At ``</scene>``: the output parsed up to there (its ``objects`` and
            ``relations`` are the scene graph; boxes in the prompt's stated frame), else None.
    """

    stage: str = ""
    scene: SpatialResult | None = None


class StreamReader:
    """Fed an output's text in chunks, reports stage changes and the scene graph once whole.

    Args:
        image_size: ``(width, height)`` stated in the prompt (boxes are clipped to it, as in
            the final parse).
        options: The request's options (as the final parse gets them).

    Stages only move forward (an output that writes ``<answer>`` first stays "answering").
    Each chunk costs a look for ``>``; the sections are located again only when a tag may have
    been completed, so a long output is read in about linear time.
    """

    def __init__(
        self,
        image_size: tuple[int, int] | None = None,
        options: Sequence[str] | None = None,
    ) -> None:
        self._image_size = image_size
        self._options = list(options) if options else None
        self._parts: list[str] = []
        self._length = 0
        self._tail = ""  # the last characters read: a tag may straddle two chunks
        self.stage = "observing"
        self.scene: SpatialResult | None = None

    @property
    def chars(self) -> int:
        """Characters fed so far."""
        return self._length

    @property
    def text(self) -> str:
        """Everything fed so far."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def feed(self, chunk: str) -> list[StreamEvent]:
        """Read one more chunk; returns what changed, in order (stage first, then scene)."""
        if not chunk:
            return []
        self._parts.append(chunk)
        self._length += len(chunk)
        window = self._tail + chunk
        self._tail = window[-_TAG_CHARS:]
        if ">" not in window:
            return []
        current, scene_end = section_progress(self.text)
        events: list[StreamEvent] = []
        stage = _STAGE_OF.get(current or "", self.stage)
        if STAGES.index(stage) > STAGES.index(self.stage):
            self.stage = stage
            events.append(StreamEvent(stage=stage))
        if self.scene is None and scene_end is not None:
            self.scene = parse_output(self.text[:scene_end], self._image_size, self._options)
            events.append(StreamEvent(scene=self.scene))
        return events
