"""The node's cameras: one :class:`~spatialthinker_ros.ros.node_inputs.CameraInputs` per name in
the ``cameras`` parameter (each with its topics under its name, its own pairing, input errors and
``/diagnostics`` status, and its ``<name>.*`` parameters), or one unnamed camera on ``image``,
``depth`` and ``camera_info`` when the parameter is empty. One model serves them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from spatialthinker_ros.answering.parameters import (
    CAMERA_PARAMETERS,
    camera_values,
    check_cameras,
    validate_camera_value,
)
from spatialthinker_ros.answering.pipeline import RequestRejected
from spatialthinker_ros.ros.node_diagnostics import inputs_status
from spatialthinker_ros.ros.node_inputs import CameraInputs
from spatialthinker_ros.ros.ros_conversions import bounded

__all__ = ["Cameras"]

# The input subscriptions' parameters, in CameraInputs.subscribe's order.
_SUBSCRIBE_PARAMETERS = (
    "qos_reliability",
    "qos_depth",
    "image_transport",
    "depth_transport",
    "use_depth",
)


class Cameras:
    """The cameras of a node, made once (the ``cameras`` parameter is fixed for its life).

    A ``cameras`` value the parameter rules refuse leaves one unnamed camera; configure then
    fails with the reason (``validate_all``).

    Args:
        node: The node (its ``cameras`` parameter is declared).
        node_errors: The node's own input errors: the single unnamed camera's errors.
    """

    def __init__(self, node: Node, node_errors: dict[str, str]) -> None:
        self._node = node
        names = list(node.get_parameter("cameras").value or [])
        self.names: list[str] = [] if check_cameras(names) else names
        for name in self.names:
            for spec in CAMERA_PARAMETERS:
                node.declare_parameter(
                    f"{name}.{spec.name}",
                    spec.default,
                    ParameterDescriptor(description=spec.description, read_only=True),
                )
        self.errors: dict[str, dict[str, str]] = {
            name: {} if name else node_errors for name in self.names or [""]
        }
        self.inputs: dict[str, CameraInputs] = {
            name: CameraInputs(node, errors, name) for name, errors in self.errors.items()
        }

    def overrides(self, camera: str) -> dict[str, Any]:
        """A camera's own parameters (by name without its prefix); none for the unnamed one."""
        if not camera:
            return {}
        return {
            spec.name: self._node.get_parameter(f"{camera}.{spec.name}").value
            for spec in CAMERA_PARAMETERS
        }

    def values(self, camera: str, node_values: Mapping[str, Any]) -> dict[str, Any]:
        """The node's parameter values as ``camera`` sees them (its overrides applied)."""
        return camera_values(node_values, self.overrides(camera))

    def problem(self) -> str | None:
        """Why a camera's own parameter is refused (None when every one is fine)."""
        for camera in self.names:
            for name, value in self.overrides(camera).items():
                reason = validate_camera_value(name, value)
                if reason:
                    return f"camera '{camera}': {reason}"
        return None

    def get(self, camera: str) -> CameraInputs:
        """A request's camera: ``camera`` by name, "" the only or first one.

        Raises:
            RequestRejected: An unknown name, with the cameras there are.
        """
        if not camera:
            return next(iter(self.inputs.values()))
        inputs = self.inputs.get(camera) if self.names else None
        if inputs is None:
            known = (
                ", ".join(self.names)
                if self.names
                else "none by name (parameter cameras is empty): ask with camera ''"
            )
            raise RequestRejected(f"unknown camera '{bounded(camera, 64)}'; cameras: {known}")
        return inputs

    def chosen(self, cameras: Sequence[str]) -> list[CameraInputs]:
        """The cameras named (each once, in order), or every camera for none.

        Raises:
            RequestRejected: An unknown name.
        """
        return [self.get(name) for name in dict.fromkeys(cameras)] or list(self.inputs.values())

    def subscribe(self, node_values: Mapping[str, Any]) -> None:
        """Subscribe every camera's inputs with its own settings."""
        for camera, inputs in self.inputs.items():
            values = self.values(camera, node_values)
            inputs.subscribe(*(values[name] for name in _SUBSCRIBE_PARAMETERS))

    def stop(self) -> None:
        """Unsubscribe every camera and forget its frames."""
        for inputs in self.inputs.values():
            inputs.stop()

    def drain(self) -> None:
        """Take what waits in every camera's subscriptions."""
        for inputs in self.inputs.values():
            inputs.drain()

    def statuses(
        self,
        node_name: str,
        hardware_id: str,
        active: bool,
        now: float,
        use_depth: bool,
        max_frame_age: float,
        questions_dropped: int,
        node_errors: Mapping[str, str],
        extra: Sequence[KeyValue] = (),
    ) -> list[DiagnosticStatus]:
        """One ``inputs`` status per camera (``<node>: inputs``, or ``<node>: <camera>
        inputs``); the node's own errors and ``extra`` values (TF's) on each."""
        statuses = []
        for camera, inputs in self.inputs.items():
            status = inputs_status(
                f"{node_name}: {camera + ' ' if camera else ''}inputs",
                hardware_id,
                active,
                now,
                inputs.topic_stats(use_depth),
                max_frame_age,
                questions_dropped,
                {**node_errors, **self.errors[camera]},  # a copy: other threads update them
                inputs.frames.pairing_report(now) if use_depth else None,
            )
            status.values.extend(extra)
            statuses.append(status)
        return statuses
