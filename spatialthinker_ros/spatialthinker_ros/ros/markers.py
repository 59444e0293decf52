"""RViz markers for a scene graph: one box and label per 3D object, one edge per relation
coloured by the depth check's verdict."""

from __future__ import annotations

import math
import textwrap

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Quaternion
from scipy.spatial.transform import Rotation
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from spatialthinker_msgs.msg import SceneGraph, SceneObject, SceneRelation
from spatialthinker_ros.core.annotate import label_colour

__all__ = ["EVIDENCE_LINES", "MAX_TEXT_CHARS", "VERDICT_COLOURS", "scene_graph_markers"]

# Marker texts longer than this are cut: a runaway model id or predicate must not paint a
# sentence across the RViz scene.
MAX_TEXT_CHARS = 48
# Cube transparency: the point cloud or the object behind the box should stay visible.
_BOX_ALPHA = 0.35
# RViz warns about (and may not draw) markers with a zero scale component.
_MIN_SCALE = 1e-3
_TEXT_COLOUR = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
# The scene's up direction (SceneGraph.up), drawn as an arrow this long from the objects' middle.
UP_ARROW_M = 0.3
_UP_COLOUR = ColorRGBA(r=0.3, g=0.6, b=1.0, a=0.9)
# Relation edges and their labels by verdict: green consistent, red contradicted, grey unknown
# (the label a lighter shade of its edge, readable on a dark background).
VERDICT_COLOURS = {
    SceneRelation.VERDICT_CONSISTENT: (0.2, 0.8, 0.2),
    SceneRelation.VERDICT_CONTRADICTED: (0.9, 0.15, 0.15),
    SceneRelation.VERDICT_UNKNOWN: (0.6, 0.6, 0.6),
}
_VERDICT_NAMES = {
    SceneRelation.VERDICT_CONSISTENT: "consistent",
    SceneRelation.VERDICT_CONTRADICTED: "contradicted",
    SceneRelation.VERDICT_UNKNOWN: "unknown",
}
# The evidence under a relation's predicate: at most this many lines of MAX_TEXT_CHARS.
EVIDENCE_LINES = 2


def _shorten(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _usable_3d(obj: SceneObject) -> bool:
    """True when ``obj`` has a 3D estimate RViz can draw (non-finite values would be rejected)."""
    c, s = obj.center, obj.size
    return bool(obj.has_3d) and _finite(c.x, c.y, c.z, s.x, s.y, s.z)


def _box_rotation(obj: SceneObject) -> Rotation | None:
    """The box's orientation when it is not the identity (None: axis-aligned; an unset or
    unusable quaternion counts as the identity)."""
    q = obj.orientation
    values = (float(q.x), float(q.y), float(q.z), float(q.w))
    if not _finite(*values) or values in ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0)):
        return None
    if math.sqrt(sum(v * v for v in values)) < 1e-6:
        return None
    return Rotation.from_quat(values)


class _Builder:
    """Creates markers that share a header and namespace, with ids unique within the array."""

    def __init__(self, graph: SceneGraph, namespace: str) -> None:
        self._graph = graph
        self._namespace = namespace
        self._next_id = 0
        self.markers: list[Marker] = []

    def add(self, marker_type: int) -> Marker:
        marker = Marker()
        # Same stamp and frame as the source image, so RViz places the boxes where the camera
        # saw them even when TF moved since.
        marker.header.frame_id = self._graph.header.frame_id
        marker.header.stamp = self._graph.header.stamp
        # One namespace for everything: DELETEALL then clears exactly our markers, whether the
        # RViz version scopes it to a namespace or not.
        marker.ns = self._namespace
        marker.id = self._next_id
        self._next_id += 1
        marker.type = marker_type
        marker.action = Marker.ADD
        marker.pose.orientation.w = 1.0
        # Zero lifetime: persist until the next array's DELETEALL replaces them. A short
        # lifetime would make markers blink whenever inference is slower than the lifetime.
        marker.lifetime = Duration(sec=0, nanosec=0)
        marker.frame_locked = False
        self.markers.append(marker)
        return marker


def _relation_colours(verdict: int) -> tuple[ColorRGBA, ColorRGBA]:
    """Edge and label colour of a relation with ``verdict`` (unknown for any other value)."""
    r, g, b = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS[SceneRelation.VERDICT_UNKNOWN])
    edge = ColorRGBA(r=r, g=g, b=b, a=0.9)
    label = ColorRGBA(r=0.5 + r / 2.0, g=0.5 + g / 2.0, b=0.5 + b / 2.0, a=1.0)
    return edge, label


def _relation_text(relation: SceneRelation) -> str:
    """``"in front of [contradicted]"`` and the evidence's sentence below it, wrapped."""
    verdict = _VERDICT_NAMES.get(relation.verdict, "unknown")
    evidence = " ".join(relation.evidence.split())
    if not evidence:  # a graph from before the depth check: the predicate alone
        return _shorten(relation.predicate) or "?"
    tag = f" [{verdict}]"
    head = _shorten(relation.predicate, MAX_TEXT_CHARS - len(tag)) or "?"
    # The sentence a person reads; the numbers in parentheses stay in the message.
    sentence = evidence.split(" (", 1)[0]
    lines = textwrap.wrap(
        sentence,
        MAX_TEXT_CHARS,
        max_lines=EVIDENCE_LINES,
        placeholder="...",
        break_on_hyphens=False,
    )
    return "\n".join([head + tag, *(line[:MAX_TEXT_CHARS] for line in lines)])


def _rgba(label: str, alpha: float) -> ColorRGBA:
    r, g, b = label_colour(label)
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=alpha)


def scene_graph_markers(
    graph: SceneGraph,
    *,
    namespace: str = "spatialthinker",
    text_height: float = 0.05,
    line_width: float = 0.01,
) -> MarkerArray:
    """Build the RViz markers for one scene graph.

    The array starts with a DELETEALL marker so that nothing from the previous graph stays on
    screen, then holds, per object with a 3D estimate, a semi-transparent CUBE and a
    TEXT_VIEW_FACING label (``"cup.1 1.23 m"``, the distance from the camera) above it, and per
    relation whose subject and object both have 3D, a LINE_LIST edge between their centres,
    coloured by the relation's verdict (:data:`VERDICT_COLOURS`), and at its midpoint the
    predicate with the verdict and, below it, the evidence's sentence; when the graph has an up
    direction (``SceneGraph.up``), an ARROW of :data:`UP_ARROW_M` along it from the middle of the
    objects. Objects and relations without 3D are left out.

    Args:
        graph: Scene graph; its header (frame and stamp) is copied to every marker. Centres and
            sizes are in that frame (the camera optical frame: x right, y down, z forward).
        namespace: Marker namespace shared by all markers.
        text_height: Height of the text markers in metres.
        line_width: Width of the relation edges in metres.

    Returns:
        The marker array, DELETEALL first; ``(ns, id)`` pairs are unique.
    """
    builder = _Builder(graph, namespace)
    clear = builder.add(Marker.CUBE)
    clear.action = Marker.DELETEALL

    centres: dict[str, Point] = {}
    for obj in graph.objects:
        if not _usable_3d(obj):
            continue
        centre = Point(x=float(obj.center.x), y=float(obj.center.y), z=float(obj.center.z))
        centres.setdefault(obj.id, centre)
        size = (
            max(abs(float(obj.size.x)), _MIN_SCALE),
            max(abs(float(obj.size.y)), _MIN_SCALE),
            max(abs(float(obj.size.z)), _MIN_SCALE),
        )
        colour_key = obj.label or obj.id

        cube = builder.add(Marker.CUBE)
        cube.pose.position = centre
        rotation = _box_rotation(obj)
        if rotation is not None:  # a box reported in a target frame turns with the camera
            qx, qy, qz, qw = (float(v) for v in rotation.as_quat())  # normalised for RViz
            cube.pose.orientation = Quaternion(x=qx, y=qy, z=qz, w=qw)
        cube.scale.x, cube.scale.y, cube.scale.z = size
        cube.color = _rgba(colour_key, _BOX_ALPHA)

        # From the camera, in any frame (a target frame's origin is not the camera). Unset (0)
        # by a publisher that predates the field: the centre's norm, right in the camera frame.
        distance = float(obj.distance)
        if not distance > 0.0 and rotation is None:
            distance = math.sqrt(centre.x**2 + centre.y**2 + centre.z**2)
        suffix = f" {distance:.2f} m"
        label = builder.add(Marker.TEXT_VIEW_FACING)
        label.text = _shorten(obj.id or obj.label, MAX_TEXT_CHARS - len(suffix)) + suffix
        # "Above" the box is its own -y (the camera's); lift the text clear of the box top.
        lift = np.array([0.0, -(size[1] / 2.0 + text_height), 0.0])
        if rotation is not None:
            lift = rotation.apply(lift)
        label.pose.position = Point(
            x=centre.x + float(lift[0]), y=centre.y + float(lift[1]), z=centre.z + float(lift[2])
        )
        label.scale.z = float(text_height)
        label.color = _TEXT_COLOUR

    for relation in graph.relations:
        start = centres.get(relation.subject)
        end = centres.get(relation.object)
        # The model may name ids it did not list, or relate an object to itself: nothing to draw.
        if start is None or end is None or relation.subject == relation.object:
            continue
        edge = builder.add(Marker.LINE_LIST)
        edge.points = [start, end]
        edge.scale.x = max(float(line_width), _MIN_SCALE)
        edge.color, text_colour = _relation_colours(relation.verdict)

        text = builder.add(Marker.TEXT_VIEW_FACING)
        text.text = _relation_text(relation)
        text.pose.position = Point(
            x=(start.x + end.x) / 2.0, y=(start.y + end.y) / 2.0, z=(start.z + end.z) / 2.0
        )
        text.scale.z = float(text_height)
        text.color = text_colour

    up = (float(graph.up.x), float(graph.up.y), float(graph.up.z))
    if centres and any(up) and all(math.isfinite(v) for v in up):
        # The up direction the vertical relations were checked along, from the objects' middle.
        middle = [sum(getattr(c, axis) for c in centres.values()) / len(centres) for axis in "xyz"]
        arrow = builder.add(Marker.ARROW)
        tip = [m + UP_ARROW_M * u for m, u in zip(middle, up, strict=True)]
        arrow.points = [
            Point(x=middle[0], y=middle[1], z=middle[2]),
            Point(x=tip[0], y=tip[1], z=tip[2]),
        ]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.02, 0.04, 0.06  # shaft, head width, head
        arrow.color = _UP_COLOUR

    return MarkerArray(markers=builder.markers)
