"""Rigid transforms and a tf2-like buffer of a TF tree, ROS-free (numpy + scipy).

:class:`RigidTransform` is a rotation (scipy's :class:`~scipy.spatial.transform.Rotation`) and a
translation: ``p -> R p + t``. :class:`TransformBuffer` keeps a TF tree (each child frame has one
parent; static edges hold at every time, dynamic edges keep ``cache_time`` seconds of history)
and answers :meth:`TransformBuffer.lookup` as tf2's ``lookupTransform`` does: at a stamp, with
the translation interpolated linearly and the rotation by slerp between the two samples around
it, ``stamp == 0`` meaning the latest time every edge of the chain has, and no extrapolation.

Why the buffer's inner maths is a few lines of plain floats rather than scipy calls: on scipy
1.17 every ``Rotation`` call pays about 30 us of array-API dispatch (a ``Slerp`` about 500 us),
so a lookup made of scipy calls would cost a millisecond, where a 50 Hz ``/tf`` and a lookup
per answer want microseconds. The Hamilton product, the rotation of a vector and slerp below
are tested against scipy's ``Rotation`` and ``Slerp``; what leaves the buffer is a
:class:`RigidTransform` holding a scipy ``Rotation`` (one construction per lookup).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial.transform import Rotation

# A pose as plain floats: translation then unit quaternion, (tx, ty, tz, qx, qy, qz, qw).
Pose = tuple[float, float, float, float, float, float, float]

_IDENTITY_POSE: Pose = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
# Below this norm a quaternion has no direction to normalise to (tf2 rejects such transforms).
_MIN_QUATERNION_NORM = 1e-9
# Frames listed by name in an unknown-frame error before "..." (a robot's tree has ~100).
_KNOWN_FRAMES_SHOWN = 12


class TransformError(LookupError):
    """A lookup that cannot be answered; ``str()`` names the frames and TF's reason, tf2-like:

    - ``frame 'base_link' does not exist (known: camera_link, odom, ...)``
    - ``no path from 'camera' to 'map': they are in separate trees``
    - ``extrapolation into the future: asked 12.300 s, newest 'odom' -> 'base_link' is 12.200 s``
    - ``extrapolation into the past: asked 1.000 s, oldest 'odom' -> 'base_link' is 2.000 s``
    """


def _finite_floats(values: Iterable[float], size: int, what: str) -> tuple[float, ...]:
    """``values`` as ``size`` finite floats, or ValueError naming ``what`` is wrong."""
    try:
        floats = tuple([float(v) for v in values])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be {size} numbers, got {values!r}") from exc
    if len(floats) != size:
        raise ValueError(f"{what} must be {size} numbers, got {len(floats)}")
    if not all(map(math.isfinite, floats)):
        raise ValueError(f"{what} is not finite: {floats}")
    return floats


def _unit_quaternion(quaternion_xyzw: Iterable[float]) -> tuple[float, float, float, float]:
    """A finite, non-zero ``(x, y, z, w)`` normalised to unit length (ValueError otherwise)."""
    x, y, z, w = _finite_floats(quaternion_xyzw, 4, "quaternion (x, y, z, w)")
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if norm < _MIN_QUATERNION_NORM:
        raise ValueError(f"quaternion (x, y, z, w) has zero norm: {(x, y, z, w)}")
    return (x / norm, y / norm, z / norm, w / norm)


def _pose(translation: Iterable[float], quaternion_xyzw: Iterable[float]) -> Pose:
    """A validated :data:`Pose` from a translation and a quaternion (ValueError naming the
    problem)."""
    return (
        *_finite_floats(translation, 3, "translation (x, y, z)"),
        *_unit_quaternion(quaternion_xyzw),
    )  # type: ignore[return-value]


def _compose(a: Pose, b: Pose) -> Pose:
    """``a ∘ b`` (``b`` applied first): ``(R_a t_b + t_a, q_a q_b)``."""
    ax, ay, az, qx, qy, qz, qw = a
    bx, by, bz, rx, ry, rz, rw = b
    # t_b rotated by q_a: v + 2 w (u x v) + 2 u x (u x v), u the vector part of q_a.
    cx, cy, cz = qy * bz - qz * by, qz * bx - qx * bz, qx * by - qy * bx
    cx, cy, cz = 2.0 * cx, 2.0 * cy, 2.0 * cz
    return (
        ax + bx + qw * cx + qy * cz - qz * cy,
        ay + by + qw * cy + qz * cx - qx * cz,
        az + bz + qw * cz + qx * cy - qy * cx,
        qw * rx + qx * rw + qy * rz - qz * ry,
        qw * ry - qx * rz + qy * rw + qz * rx,
        qw * rz + qx * ry - qy * rx + qz * rw,
        qw * rw - qx * rx - qy * ry - qz * rz,
    )


def _invert(a: Pose) -> Pose:
    """The inverse pose: ``(-R^T t, q*)``."""
    tx, ty, tz, qx, qy, qz, qw = a
    return _compose((0.0, 0.0, 0.0, -qx, -qy, -qz, qw), (-tx, -ty, -tz, 0.0, 0.0, 0.0, 1.0))


def _interpolate(a: Pose, b: Pose, f: float) -> Pose:
    """The pose a fraction ``f`` of the way from ``a`` to ``b``: linear in translation, slerp
    (the shorter way round, as scipy's ``Slerp``) in rotation."""
    ax, ay, az, p0, p1, p2, p3 = a
    bx, by, bz, q0, q1, q2, q3 = b
    if p0 * q0 + p1 * q1 + p2 * q2 + p3 * q3 < 0.0:
        q0, q1, q2, q3 = -q0, -q1, -q2, -q3
    # The angle between the quaternions as unit 4-vectors, from atan2 rather than acos(dot):
    # well-conditioned down to zero (acos loses digits there, and needs dot clamped to 1).
    d = math.sqrt((p0 - q0) ** 2 + (p1 - q1) ** 2 + (p2 - q2) ** 2 + (p3 - q3) ** 2)
    s = math.sqrt((p0 + q0) ** 2 + (p1 + q1) ** 2 + (p2 + q2) ** 2 + (p3 + q3) ** 2)
    angle = 2.0 * math.atan2(d, s)
    if angle == 0.0:
        wa, wb = 1.0 - f, f
    else:
        sin_angle = math.sin(angle)
        wa, wb = math.sin((1.0 - f) * angle) / sin_angle, math.sin(f * angle) / sin_angle
    r0, r1, r2, r3 = wa * p0 + wb * q0, wa * p1 + wb * q1, wa * p2 + wb * q2, wa * p3 + wb * q3
    norm = math.sqrt(r0 * r0 + r1 * r1 + r2 * r2 + r3 * r3)
    return (
        ax + f * (bx - ax),
        ay + f * (by - ay),
        az + f * (bz - az),
        r0 / norm,
        r1 / norm,
        r2 / norm,
        r3 / norm,
    )


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """A rigid transform ``p -> R p + t`` (immutable).

    Attributes:
        translation: ``t``, shape ``(3,)`` float64 (read-only).
        rotation: ``R``, one scipy ``Rotation``.
    """

    translation: np.ndarray
    rotation: Rotation

    def __post_init__(self) -> None:
        translation = np.array(self.translation, dtype=np.float64)
        # math.isfinite over a list: a third of np.isfinite(...).all()'s cost on 3 values.
        if translation.shape != (3,) or not all(map(math.isfinite, translation.tolist())):
            raise ValueError(f"translation must be 3 finite numbers, got {self.translation!r}")
        translation.flags.writeable = False
        object.__setattr__(self, "translation", translation)
        if not isinstance(self.rotation, Rotation) or not self.rotation.single:
            raise ValueError(f"rotation must be one scipy Rotation, got {self.rotation!r}")

    @classmethod
    def identity(cls) -> RigidTransform:
        """The transform that leaves every point where it is."""
        return cls(np.zeros(3), Rotation.identity())

    @classmethod
    def from_xyz_quat(cls, xyz: Iterable[float], quat_xyzw: Iterable[float]) -> RigidTransform:
        """A transform from a translation and a quaternion ``(x, y, z, w)`` (normalised).

        Raises:
            ValueError: When a value is not finite, a size is wrong or the quaternion is zero.
        """
        pose = _pose(xyz, quat_xyzw)
        return cls(np.array(pose[:3]), Rotation.from_quat(pose[3:]))

    @cached_property
    def quaternion(self) -> tuple[float, float, float, float]:
        """The rotation as a unit quaternion ``(x, y, z, w)``."""
        x, y, z, w = (float(v) for v in self.rotation.as_quat())
        return (x, y, z, w)

    @cached_property
    def matrix(self) -> np.ndarray:
        """The rotation matrix ``R`` (3x3, read-only), computed once: ``apply`` and ``rotate``
        multiply by it, which costs a few microseconds where ``Rotation.apply`` costs ~30."""
        matrix = self.rotation.as_matrix()
        matrix.flags.writeable = False
        return matrix

    def apply(self, points: np.ndarray | Iterable[float]) -> np.ndarray:
        """Points moved by the transform: ``R p + t`` for each ``(..., 3)`` point."""
        return self.rotate(points) + self.translation

    def rotate(self, vectors: np.ndarray | Iterable[float]) -> np.ndarray:
        """Directions turned by the rotation only: ``R v`` for each ``(..., 3)`` vector."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.shape[-1:] != (3,):
            raise ValueError(f"expected points of shape (..., 3), got {vectors.shape}")
        return vectors @ self.matrix.T

    def __mul__(self, other: RigidTransform) -> RigidTransform:
        """``self ∘ other``: ``other`` applied first, then ``self``."""
        if not isinstance(other, RigidTransform):
            return NotImplemented
        return RigidTransform(self.apply(other.translation), self.rotation * other.rotation)

    def inverse(self) -> RigidTransform:
        """The transform that undoes this one: ``p -> R^T (p - t)``."""
        return RigidTransform(-(self.matrix.T @ self.translation), self.rotation.inv())

    def is_close(self, other: RigidTransform, atol: float = 1e-9) -> bool:
        """Whether ``other`` moves points as this one does: translations within ``atol`` metres
        and rotations within ``atol`` radians (``q`` and ``-q`` are the same rotation)."""
        if not np.allclose(self.translation, other.translation, rtol=0.0, atol=atol):
            return False
        return float((self.rotation.inv() * other.rotation).magnitude()) <= atol

    @classmethod
    def _from_pose(cls, pose: Pose) -> RigidTransform:
        """A transform from a pose the buffer already validated."""
        return cls(np.array(pose[:3]), Rotation.from_quat(pose[3:]))


@dataclass(frozen=True)
class Placement:
    """Where an answer's 3D is reported: ``transform`` maps the camera's optical frame into
    ``frame_id`` at the colour image's stamp."""

    frame_id: str
    transform: RigidTransform


class _Edge:
    """One child's link to its parent: one pose (static) or a stamped history (dynamic),
    ``stamps`` ascending and ``poses`` alongside."""

    __slots__ = ("parent", "poses", "stamps", "static")

    def __init__(self, parent: str, static: bool) -> None:
        self.parent = parent
        self.static = static
        self.stamps: list[float] = []
        self.poses: list[Pose] = []


def _frame_id(frame: str, role: str) -> str:
    """``frame`` without tf1's leading '/', or ValueError when it is empty."""
    if not isinstance(frame, str):
        raise ValueError(f"{role} frame id must be a string, got {frame!r}")
    stripped = frame.lstrip("/")
    if not stripped:
        raise ValueError(f"{role} frame id is empty ({frame!r})")
    return stripped


def _two_stamps(asked: float, held: float) -> tuple[str, str]:
    """Both stamps in seconds, in milliseconds unless that would print them alike."""
    for digits in (3, 6):
        texts = f"{asked:.{digits}f} s", f"{held:.{digits}f} s"
        if texts[0] != texts[1]:
            return texts
    return f"{asked:.9f} s", f"{held:.9f} s"


class TransformBuffer:
    """A tf2-like buffer of a TF tree (thread-safe: one lock around every call).

    Args:
        cache_time: Seconds of history a dynamic edge keeps behind its newest stamp (tf2's
            default is 10).
    """

    def __init__(self, cache_time: float = 10.0) -> None:
        cache_time = float(cache_time)
        if not math.isfinite(cache_time) or cache_time < 0.0:
            raise ValueError(f"cache_time must be a finite number >= 0, got {cache_time}")
        self.cache_time = cache_time
        self._lock = threading.Lock()
        # child -> its edge to its parent; every frame ever named (tf2 keeps frames too).
        self._edges: dict[str, _Edge] = {}
        self._frames: set[str] = set()

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp: float,
        translation: Iterable[float],
        quaternion_xyzw: Iterable[float],
        static: bool = False,
    ) -> None:
        """Add the transform mapping points in ``child`` into ``parent`` at ``stamp``.

        A child has one parent: a new parent (or a switch between static and dynamic) replaces
        the child's edge and its history, the latest given winning. Samples may come out of
        order (inserted in place); a second sample at a stamp replaces the first. A dynamic
        edge keeps ``cache_time`` seconds behind its newest stamp; older samples are dropped.

        Args:
            parent: The parent frame (a leading '/' is stripped).
            child: The child frame.
            stamp: Seconds (ROS time); kept but not used for a static edge.
            translation: ``(x, y, z)`` of the child's origin in the parent, metres.
            quaternion_xyzw: The child's orientation in the parent (normalised here).
            static: Whether the edge holds at every time (``/tf_static``).

        Raises:
            ValueError: Naming the problem: an empty id, ``parent == child``, a non-finite
                value, a zero quaternion, or an edge that would close a loop in the tree.
        """
        parent = _frame_id(parent, "parent")
        child = _frame_id(child, "child")
        if parent == child:
            raise ValueError(f"parent and child are both '{child}': a frame cannot be its own")
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp of '{parent}' -> '{child}' is not finite: {stamp}")
        try:
            pose = _pose(translation, quaternion_xyzw)
        except ValueError as exc:
            raise ValueError(f"transform '{parent}' -> '{child}': {exc}") from None
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                if edge is None or edge.parent != parent:
                    self._check_no_loop(parent, child)
                edge = _Edge(parent, static)
                self._edges[child] = edge
                self._frames.add(parent)
                self._frames.add(child)
            stamps, poses = edge.stamps, edge.poses
            if static:
                stamps[:] = [stamp]
                poses[:] = [pose]
                return
            if not stamps or stamp > stamps[-1]:
                # The usual case at 50 Hz: in order, an append.
                stamps.append(stamp)
                poses.append(pose)
            else:
                i = bisect.bisect_left(stamps, stamp)
                if stamps[i] == stamp:
                    poses[i] = pose
                else:
                    stamps.insert(i, stamp)
                    poses.insert(i, pose)
            cutoff = stamps[-1] - self.cache_time
            if stamps[0] < cutoff:
                old = bisect.bisect_left(stamps, cutoff)
                del stamps[:old]
                del poses[:old]

    def _check_no_loop(self, parent: str, child: str) -> None:
        """ValueError when ``child`` is ``parent`` or one of its ancestors (lock held)."""
        frame: str | None = parent
        while frame is not None:
            if frame == child:
                raise ValueError(
                    f"'{parent}' -> '{child}' would close a loop: '{child}' is already an "
                    f"ancestor of '{parent}'"
                )
            edge = self._edges.get(frame)
            frame = edge.parent if edge is not None else None

    def lookup(self, target: str, source: str, stamp: float) -> RigidTransform:
        """The transform mapping points in ``source`` into ``target`` at ``stamp``.

        Args:
            target: The frame the points are wanted in.
            source: The frame the points are in.
            stamp: Seconds; ``0.0`` asks for the latest time every edge of the chain has
                (tf2's latest common time).

        Returns:
            The transform, interpolated between the samples around ``stamp`` on each dynamic
            edge (a sample exactly at ``stamp`` as it is); static edges hold at every time.
            ``target == source`` gives the identity.

        Raises:
            TransformError: A frame is unknown, the frames are in separate trees, or ``stamp``
                lies outside an edge's history (no extrapolation); the text names the frames.
            ValueError: ``stamp`` is not finite.
        """
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"lookup stamp is not finite: {stamp}")
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return RigidTransform.identity()
        with self._lock:
            pose = self._resolve(target, source, stamp)
        # The scipy Rotation is built outside the lock: it is most of a lookup's cost.
        return RigidTransform._from_pose(pose)

    def can_transform(self, target: str, source: str, stamp: float) -> str:
        """``""`` when :meth:`lookup` would answer, else the reason it would not."""
        stamp = float(stamp)
        if not math.isfinite(stamp):
            return f"lookup stamp is not finite: {stamp}"
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return ""
        # Without building the answer's scipy Rotation: a listener may ask at every /tf message.
        try:
            with self._lock:
                self._resolve(target, source, stamp)
        except TransformError as exc:
            return str(exc)
        return ""

    def frames(self) -> list[str]:
        """Every frame named so far, sorted."""
        with self._lock:
            return sorted(self._frames)

    def newest_stamp(self) -> float | None:
        """The newest stamp of any dynamic edge (for "latest transform age"), or ``None``."""
        with self._lock:
            newest = [e.stamps[-1] for e in self._edges.values() if not e.static and e.stamps]
        return max(newest) if newest else None

    def clear(self) -> None:
        """Forget every frame and transform (e.g. when ROS time jumps back in a bag replay)."""
        with self._lock:
            self._edges.clear()
            self._frames.clear()

    # Lookup internals (lock held).

    def _ancestry(self, frame: str) -> list[str]:
        """``frame``, its parent, its parent's parent... up to its tree's root."""
        chain = [frame]
        edge = self._edges.get(frame)
        while edge is not None:
            chain.append(edge.parent)
            edge = self._edges.get(edge.parent)
        return chain

    def _unknown(self, frames: list[str]) -> TransformError:
        known = sorted(self._frames)
        shown = ", ".join(known[:_KNOWN_FRAMES_SHOWN]) + (
            ", ..." if len(known) > _KNOWN_FRAMES_SHOWN else ""
        )
        names = " and ".join(f"'{f}'" for f in frames)
        verb = "does" if len(frames) == 1 else "do"
        noun = "frame" if len(frames) == 1 else "frames"
        return TransformError(
            f"{noun} {names} {verb} not exist ({f'known: {shown}' if known else 'no frames known'})"
        )

    def _resolve(self, target: str, source: str, stamp: float) -> Pose:
        missing = [f for f in (target, source) if f not in self._frames]
        if missing:
            raise self._unknown(missing)
        up_from_source = self._ancestry(source)
        index = {frame: i for i, frame in enumerate(up_from_source)}
        up_from_target = [target]
        while up_from_target[-1] not in index:
            edge = self._edges.get(up_from_target[-1])
            if edge is None:
                raise TransformError(
                    f"no path from '{source}' to '{target}': they are in separate trees"
                )
            up_from_target.append(edge.parent)
        # The children whose edges lead up to the common ancestor, from each side.
        source_side = up_from_source[: index[up_from_target[-1]]]
        target_side = up_from_target[:-1]
        if stamp == 0.0:
            newest = [
                self._edges[c].stamps[-1]
                for c in (*source_side, *target_side)
                if not self._edges[c].static
            ]
            # All static: any time will do.
            stamp = min(newest) if newest else 0.0
        # ancestor <- source, and ancestor <- target, each composed edge by edge.
        from_source = _IDENTITY_POSE
        for child in source_side:
            from_source = _compose(self._sample(child, stamp), from_source)
        from_target = _IDENTITY_POSE
        for child in target_side:
            from_target = _compose(self._sample(child, stamp), from_target)
        return _compose(_invert(from_target), from_source)

    def _sample(self, child: str, stamp: float) -> Pose:
        """The pose of ``child``'s edge at ``stamp``."""
        edge = self._edges[child]
        if edge.static:
            return edge.poses[0]
        stamps = edge.stamps
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            return edge.poses[i]
        if i == len(stamps):
            asked, newest = _two_stamps(stamp, stamps[-1])
            raise TransformError(
                f"extrapolation into the future: asked {asked}, newest "
                f"'{edge.parent}' -> '{child}' is {newest}"
            )
        if i == 0:
            asked, oldest = _two_stamps(stamp, stamps[0])
            raise TransformError(
                f"extrapolation into the past: asked {asked}, oldest "
                f"'{edge.parent}' -> '{child}' is {oldest}"
            )
        before, after = stamps[i - 1], stamps[i]
        return _interpolate(edge.poses[i - 1], edge.poses[i], (stamp - before) / (after - before))
