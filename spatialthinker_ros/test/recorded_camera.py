"""rosbags messages of a camera for the tests that write rosbag2 recordings (replay, and the
one-pipeline test): colour and depth Images, a compressedDepth frame, CameraInfo."""

from __future__ import annotations

import numpy as np
from rosbags.typesys import Stores, get_typestore

from spatialthinker_ros.core.images import encode_compressed_depth
from spatialthinker_ros.core.synthetic_scene import SyntheticScene

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
IMAGE_T, INFO_T = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
COMPRESSED_T = "sensor_msgs/msg/CompressedImage"


def header(t: float) -> object:
    """A std_msgs/Header stamped ``t`` seconds, frame ``cam``."""
    types = TYPESTORE.types
    stamp = types["builtin_interfaces/msg/Time"](sec=int(t), nanosec=round((t % 1) * 1e9))
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam")


def image_message(t: float, array: np.ndarray, encoding: str, broken: bool = False) -> object:
    """A sensor_msgs/Image of ``array``; ``broken``: its data cut to half (undecodable)."""
    height, width = array.shape[:2]
    data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    if broken:
        data = data[: data.size // 2]  # shorter than step * height: undecodable
    step = data.size // height if not broken else array.strides[0]
    return TYPESTORE.types[IMAGE_T](
        header=header(t),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data,
    )


def compressed_depth_message(t: float, depth_mm: np.ndarray) -> object:
    """The depth frame as image_transport's compressed_depth plugin sends it (16UC1 PNG)."""
    encoded = encode_compressed_depth(depth_mm, "16UC1")
    return TYPESTORE.types[COMPRESSED_T](
        header=header(t), format=encoded.format, data=np.frombuffer(bytes(encoded.data), np.uint8)
    )


def camera_info_message(t: float, scene: SyntheticScene) -> object:
    """The CameraInfo of ``scene``'s camera (plumb_bob, no distortion, no ROI)."""
    k = scene.intrinsics
    types = TYPESTORE.types
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    return types[INFO_T](
        header=header(t),
        height=k.height,
        width=k.width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1),
        p=np.array([k.fx, 0, k.cx, 0, 0, k.fy, k.cy, 0, 0, 0, 1, 0.0]),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
