"""Test helper: realistic SpatialThinker answers for the streaming tests and benchmark.

A real answer writes a short ``<observe>``, the ``<scene>`` JSON, then a long ``<think>`` and a
short ``<answer>``; ``</scene>`` comes at 40-50 % of the text. :func:`realistic_reply` is the
scripted model of :func:`node_harness.scripted_reply` (boxes framing the demo scene's objects)
with a reasoning long enough that the scene closes at about ``scene_fraction`` of the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node_harness import scripted_reply

from spatialthinker_ros.core.synthetic_scene import SyntheticScene

REASONING_SENTENCE = (
    "The red box covers more of the floor near the bottom of the image and its depth is"
    " smaller, so it stands in front of the green box, which in turn is left of the pillar. "
)


def realistic_reply(
    scene: SyntheticScene, scene_fraction: float = 0.45
) -> Callable[[dict[str, Any]], str]:
    """A scripted model whose ``</scene>`` closes at about ``scene_fraction`` of its text."""
    short = scripted_reply(scene)

    def reply(body: dict[str, Any]) -> str:
        text = short(body)
        scene_end = text.index("</scene>") + len("</scene>")
        wanted = int(scene_end / scene_fraction) - len(text)
        think = REASONING_SENTENCE * max(1, round(wanted / len(REASONING_SENTENCE)))
        return scripted_reply(scene, think=think.strip())(body)

    return reply


def scene_fraction(text: str) -> float:
    """Where ``</scene>`` ends, as a fraction of the text."""
    return (text.index("</scene>") + len("</scene>")) / len(text)
