"""The transforms one image needs from TF, looked up at its stamp: where its answer's 3D is
reported (a target frame) and which way is up (a gravity frame's z). ROS-free.

The node (``ros/tf_listener``, fed by /tf and /tf_static) and ``spatialthinker replay`` (fed by
the bag's own /tf and /tf_static) and ``spatialthinker ask`` (a camera pose given on the command
line) all ask here, so an answer's 3D is the same whichever way it was made. A transform TF does
not have never loses the answer: it is reported in the camera frame, with a warning naming the
missing link and TF's reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialthinker_ros.answering.pipeline import Frames
from spatialthinker_ros.core.gravity import UpEstimate, tf_up
from spatialthinker_ros.core.transforms import (
    Placement,
    RigidTransform,
    TransformBuffer,
    TransformError,
)

# Said instead of TF's reason when the images name no frame.
NO_CAMERA_FRAME = "the camera's images have no frame_id (set the frame_id parameter)"


def keep_tf_message(buffer: TransformBuffer, message: Any, static: bool) -> list[str]:
    """Add a ``tf2_msgs/msg/TFMessage`` (an rclpy message or a rosbags one: the same fields) to
    ``buffer``; what ``/tf`` (``static=False``) and ``/tf_static`` (``static=True``) carry.

    Returns:
        Why each transform that was refused was refused (a broken publisher's NaN, zero
        quaternion or loop); the others are kept.
    """
    refused = []
    for item in message.transforms:
        t, q = item.transform.translation, item.transform.rotation
        stamp = item.header.stamp.sec + item.header.stamp.nanosec * 1e-9
        try:
            buffer.set_transform(
                item.header.frame_id,
                item.child_frame_id,
                stamp,
                (t.x, t.y, t.z),
                (q.x, q.y, q.z, q.w),
                static=static,
            )
        except ValueError as error:
            refused.append(str(error))
    return refused


@dataclass(frozen=True)
class FrameTransforms:
    """What TF gives one image.

    Attributes:
        placement: The camera frame into the target frame at the image's stamp; None for the
            camera frame (none asked for, or TF did not have it: see ``warnings``).
        up: Up from TF (the gravity frame's z in the camera frame), or None.
        up_failure: Why up is not from TF when a gravity frame was asked for ("" otherwise).
        warnings: What the answer must say (a target frame TF did not have).
    """

    placement: Placement | None = None
    up: UpEstimate | None = None
    up_failure: str = ""
    warnings: tuple[str, ...] = ()

    def applied_to(self, frames: Frames) -> Frames:
        """``frames`` with these transforms: the pipeline reports and judges by them."""
        return dataclasses.replace(
            frames,
            placement=self.placement,
            tf_up=self.up,
            tf_up_failure=self.up_failure,
            warnings=(*frames.warnings, *self.warnings),
        )


@dataclass(frozen=True)
class FrameRequest:
    """The lookups one image needs: ``(target, source)`` pairs, each None when not needed.

    Attributes:
        place: Target frame <- camera frame (the placement).
        gravity: Camera frame <- gravity frame (its z is up).
    """

    place: tuple[str, str] | None
    gravity: tuple[str, str] | None

    @classmethod
    def of(cls, camera_frame: str, target_frame: str, gravity_frame: str) -> FrameRequest:
        """The lookups for an image in ``camera_frame`` ("" target or gravity: not needed;
        a leading '/' is dropped, as tf2 does)."""
        target_frame, gravity_frame = target_frame.lstrip("/"), gravity_frame.lstrip("/")
        place = None
        if target_frame and target_frame != camera_frame:
            place = (target_frame, camera_frame)
        gravity = (camera_frame, gravity_frame) if gravity_frame else None
        return cls(place, gravity)

    @property
    def lookups(self) -> tuple[tuple[str, str], ...]:
        """Every ``(target, source)`` needed."""
        return tuple(pair for pair in (self.place, self.gravity) if pair is not None)


def look_up(
    buffer: TransformBuffer,
    request: FrameRequest,
    stamp: float,
    on_failure: Callable[[str], None] | None = None,
) -> FrameTransforms:
    """The image's transforms at ``stamp`` from ``buffer`` as it is now (no waiting).

    Args:
        buffer: The TF tree.
        request: What the image needs (:meth:`FrameRequest.of`).
        stamp: The image's stamp, seconds.
        on_failure: Told ``"'<source>' to '<target>': <reason>"`` for each failed lookup.
    """

    def lookup(target: str, source: str) -> tuple[RigidTransform | None, str]:
        # The target and gravity frames are never empty here: an empty one is the camera's.
        reason = "" if target and source else NO_CAMERA_FRAME
        if not reason:
            try:
                return buffer.lookup(target, source, stamp), ""
            except TransformError as error:
                reason = str(error)
        if on_failure is not None:
            on_failure(f"'{source}' to '{target}': {reason}")
        return None, reason

    placement, up, up_failure, warnings = None, None, "", []
    if request.place is not None:
        target, source = request.place
        transform, reason = lookup(target, source)
        if transform is None:
            warnings.append(
                f"no transform from '{source}' to '{target}': {reason}; answered in the camera"
                f" frame '{source}'"
            )
        else:
            placement = Placement(target, transform)
    if request.gravity is not None:
        camera, frame = request.gravity
        transform, reason = lookup(camera, frame)
        if transform is None:
            up_failure = f"no transform from '{frame}' to '{camera}': {reason}"
        else:
            up = tf_up(transform.rotate(np.array([0.0, 0.0, 1.0])), frame)
    return FrameTransforms(placement, up, up_failure, tuple(warnings))
