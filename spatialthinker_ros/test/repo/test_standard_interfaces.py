"""The venv's tf2_msgs and vision_msgs are wire-identical to the releases robots run.

The PyPI wheels lack both packages; `make venv` builds test-only stand-ins from
scripts/test_interfaces/ into the venv (a robot uses its system's packages, which package.xml
declares). Jazzy and later advertise every endpoint's RIHS01 type hash in discovery, so a
stand-in that differed from the release in a field name, type, nesting or bound would not be
the type a real tf2 broadcaster or detector publishes. These tests pin each installed hash to the
official one and send the messages between two processes over DDS.

Run as a script, this file is the second process (see `_peer`).
"""

# ruff: noqa: E501 - the official hashes stay whole, one per line, to compare and grep.

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest
import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

# tf2_msgs and vision_msgs are imported inside the tests: where the venv lacks them, each test
# fails naming what is missing (run make venv) instead of the whole module failing to collect.

# Computed from the release sources (vision_msgs 4.1.1, the Jazzy release of
# ros-perception/vision_msgs; tf2_msgs 0.36.4, ros2/geometry2 on Jazzy) with rosidl's own
# type description generator; the same with the Jazzy and the Kilted wheels.
OFFICIAL_HASHES = {
    "tf2_msgs/msg/TF2Error": "RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a",
    "tf2_msgs/msg/TFMessage": "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
    "vision_msgs/msg/BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "vision_msgs/msg/BoundingBox2DArray": "RIHS01_2464e82838009386d371b523211c21c91d74d313fcdd6788223c531d621cf691",
    "vision_msgs/msg/BoundingBox3D": "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "vision_msgs/msg/BoundingBox3DArray": "RIHS01_a81938db9576b10c2eecd7c5a5da3eac496efd00221b25ed051dfbc81fb56da6",
    "vision_msgs/msg/Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "vision_msgs/msg/Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "vision_msgs/msg/Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/Detection3D": "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "vision_msgs/msg/Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "vision_msgs/msg/LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "vision_msgs/msg/ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "vision_msgs/msg/ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "vision_msgs/msg/Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "vision_msgs/msg/Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "vision_msgs/msg/VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "vision_msgs/msg/VisionInfo": "RIHS01_95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
}
PACKAGES = sorted({name.split("/")[0] for name in OFFICIAL_HASHES})

PEER_NODE = "standard_interfaces_peer"
TF_TOPIC = "standard_interfaces/tf"
DETECTIONS_TOPIC = "standard_interfaces/detections_3d"
ECHO = "standard_interfaces/echo/"


@pytest.fixture(autouse=True)
def _ament_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv is the ROS prefix when pytest runs without the Makefile's AMENT_PREFIX_PATH.

    A prefix that is set (the Makefile's, or a sourced ROS install) is kept: then these tests
    check whichever packages that environment really uses.
    """
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.environ.get("AMENT_PREFIX_PATH") or sys.prefix)


def _share_dir(package: str) -> Path:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return Path(get_package_share_directory(package))
    except PackageNotFoundError:
        pytest.fail(
            f"{package} is not in the ament index of AMENT_PREFIX_PATH="
            f"{os.environ['AMENT_PREFIX_PATH']!r}: run make venv"
        )


def _installed_hash(type_name: str) -> str:
    """The RIHS01 hash of an installed message, from its generated type description."""
    package, _, name = type_name.split("/")
    description = _share_dir(package) / "msg" / f"{name}.json"
    assert description.is_file(), f"{description} missing: {type_name} is not installed"
    hashes = {
        entry["type_name"]: entry["hash_string"]
        for entry in json.loads(description.read_text())["type_hashes"]
    }
    return hashes[type_name]


@pytest.mark.parametrize("type_name", sorted(OFFICIAL_HASHES))
def test_installed_type_hash_is_the_official_one(type_name: str) -> None:
    assert _installed_hash(type_name) == OFFICIAL_HASHES[type_name]


@pytest.mark.parametrize("package", PACKAGES)
def test_the_installed_package_has_exactly_the_release_messages(package: str) -> None:
    installed = {
        f"{package}/msg/{path.stem}" for path in (_share_dir(package) / "msg").glob("*.json")
    }
    assert installed == {name for name in OFFICIAL_HASHES if name.startswith(f"{package}/")}


def test_tf_message_hash_equals_rosbags_official_definition() -> None:
    # rosbags' typestore carries the released tf2_msgs definitions (what bags of real robots
    # are read with), an independent source for the one type every TF user shares.
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    for type_name in ("tf2_msgs/msg/TFMessage", "tf2_msgs/msg/TF2Error"):
        assert store.hash_rihs01(type_name) == OFFICIAL_HASHES[type_name]
        assert _installed_hash(type_name) == store.hash_rihs01(type_name)


def test_tf2_error_constants_are_the_releases() -> None:
    # RIHS01 hashes fields only (names, types, nesting), not constants: these are checked
    # against the released definition in rosbags' typestore instead.
    from rosbags.typesys import Stores, get_typestore
    from tf2_msgs.msg import TF2Error

    constants, _ = get_typestore(Stores.ROS2_JAZZY).fielddefs["tf2_msgs/msg/TF2Error"]
    assert len(constants) == 7
    for name, _type, value in constants:
        assert getattr(TF2Error, name) == value, name


def _colcon_visible_packages(workspace: Path) -> dict[str, Path]:
    """Package name -> folder of every package.xml a colcon build of `workspace` would find.

    Follows colcon's discovery rules that matter here: a folder holding a COLCON_IGNORE (or
    AMENT_IGNORE / CATKIN_IGNORE) marker is skipped with everything under it, and so are hidden
    folders (the venvs are hidden) and a package's own subfolders.
    """
    found: dict[str, Path] = {}
    for folder, subfolders, files in os.walk(workspace):
        if {"COLCON_IGNORE", "AMENT_IGNORE", "CATKIN_IGNORE"} & set(files):
            subfolders.clear()
            continue
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if "package.xml" in files:
            name = ElementTree.parse(Path(folder) / "package.xml").getroot().findtext("name")
            found[name] = Path(folder)
            subfolders.clear()
    return found


def test_the_stand_ins_stay_out_of_a_colcon_workspace() -> None:
    # On a robot the repository is a colcon workspace: a stand-in it built would shadow the
    # system's tf2_msgs or vision_msgs for everything sourced after it.
    root = Path(__file__).resolve().parents[3]
    stand_ins = root / "scripts" / "test_interfaces"
    for package in PACKAGES:
        assert (stand_ins / package / "package.xml").is_file()
    visible = _colcon_visible_packages(root)
    assert {"spatialthinker_msgs", "spatialthinker_ros"} <= set(visible)
    assert not set(PACKAGES) & set(visible), visible


def _latched() -> QoSProfile:
    """Reliable, transient local (as /tf_static): a late-matching reader still gets the sample."""
    return QoSProfile(
        depth=1,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )


def make_tf() -> Any:
    """A TFMessage with a static mount and a moving base, every field set to a distinct value."""
    from tf2_msgs.msg import TFMessage

    mount = TransformStamped()
    mount.header.frame_id = "base_link"
    mount.header.stamp.sec, mount.header.stamp.nanosec = 17, 250_000_000
    mount.child_frame_id = "camera_link"
    mount.transform.translation.x, mount.transform.translation.z = 0.1, 1.2
    # 30 degrees pitch down about y.
    mount.transform.rotation.y, mount.transform.rotation.w = 0.25881904510252074, 0.9659258262890683
    odom = TransformStamped()
    odom.header.frame_id = "odom"
    odom.header.stamp.sec, odom.header.stamp.nanosec = 18, 5
    odom.child_frame_id = "base_link"
    odom.transform.translation.x, odom.transform.translation.y = 3.5, -0.75
    odom.transform.rotation.z, odom.transform.rotation.w = 0.6, 0.8
    return TFMessage(transforms=[mount, odom])


def tf_summary(message: Any) -> list:
    """Plain data of a TFMessage, to compare across processes."""
    return [
        [
            t.header.frame_id,
            t.header.stamp.sec,
            t.header.stamp.nanosec,
            t.child_frame_id,
            [t.transform.translation.x, t.transform.translation.y, t.transform.translation.z],
            [
                t.transform.rotation.x,
                t.transform.rotation.y,
                t.transform.rotation.z,
                t.transform.rotation.w,
            ],
        ]
        for t in message.transforms
    ]


def make_detections() -> Any:
    """A Detection3DArray of two objects, with hypotheses, poses, covariances and boxes."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    array = Detection3DArray()
    array.header.frame_id = "camera_color_optical_frame"
    array.header.stamp.sec, array.header.stamp.nanosec = 42, 123_456_789
    for index, (label, score, z) in enumerate((("mug", 0.875, 0.9), ("shelf", 0.5, 2.25))):
        detection = Detection3D(id=f"{label}.{index + 1}")
        detection.header = array.header
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = label
        hypothesis.hypothesis.score = score
        hypothesis.pose.pose.position.x, hypothesis.pose.pose.position.z = -0.125 * index, z
        hypothesis.pose.pose.orientation.w = 1.0
        hypothesis.pose.covariance = [float(i) / 64.0 for i in range(36)]
        detection.results = [hypothesis]
        detection.bbox.center = hypothesis.pose.pose
        detection.bbox.size.x, detection.bbox.size.y = 0.08 + index, 0.1
        detection.bbox.size.z = 0.12
        array.detections.append(detection)
    return array


def detections_summary(message: Any) -> dict:
    """Plain data of a Detection3DArray, to compare across processes."""

    def pose(p: Any) -> list:
        return [
            p.position.x,
            p.position.y,
            p.position.z,
            p.orientation.x,
            p.orientation.y,
            p.orientation.z,
            p.orientation.w,
        ]

    return {
        "header": [message.header.frame_id, message.header.stamp.sec, message.header.stamp.nanosec],
        "detections": [
            {
                "id": d.id,
                "frame_id": d.header.frame_id,
                "results": [
                    [
                        r.hypothesis.class_id,
                        r.hypothesis.score,
                        pose(r.pose.pose),
                        [float(c) for c in r.pose.covariance],
                    ]
                    for r in d.results
                ],
                "center": pose(d.bbox.center),
                "size": [d.bbox.size.x, d.bbox.size.y, d.bbox.size.z],
            }
            for d in message.detections
        ],
    }


def _peer() -> int:
    """The second process: echo what arrives on the two topics, until stdin closes.

    Prints one JSON line with the summaries of what it received.
    """
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    rclpy.init()
    node = rclpy.create_node(PEER_NODE)
    seen: dict[str, Any] = {}
    for key, kind, topic, summary in (
        ("tf", TFMessage, TF_TOPIC, tf_summary),
        ("detections", Detection3DArray, DETECTIONS_TOPIC, detections_summary),
    ):
        echo = node.create_publisher(kind, ECHO + key, _latched())

        def on_message(
            message: Any, key: str = key, echo: Any = echo, summary: Any = summary
        ) -> None:
            seen[key] = summary(message)
            # The received instance itself goes back: deserialised here, serialised again.
            echo.publish(message)

        node.create_subscription(kind, topic, on_message, _latched())
    # Stay until the test has the echoes (it closes our stdin), so the latched echoes reach
    # it however late it matches; the deadline only keeps an orphan from living forever.
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    deadline = time.monotonic() + 120.0
    while not done.is_set() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(seen), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if len(seen) == 2 else 1


def test_tf_and_detections_round_trip_between_processes() -> None:
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("standard_interfaces_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    echoes: dict[str, Any] = {}
    both = threading.Event()

    def on_echo(key: str, summary: Any) -> Any:
        def callback(message: Any) -> None:
            echoes[key] = summary(message)
            if len(echoes) == 2:
                both.set()

        return callback

    node.create_subscription(TFMessage, ECHO + "tf", on_echo("tf", tf_summary), _latched())
    node.create_subscription(
        Detection3DArray,
        ECHO + "detections",
        on_echo("detections", detections_summary),
        _latched(),
    )
    node.create_publisher(TFMessage, TF_TOPIC, _latched()).publish(make_tf())
    node.create_publisher(Detection3DArray, DETECTIONS_TOPIC, _latched()).publish(make_detections())
    peer = subprocess.Popen(
        [sys.executable, __file__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Generous: a loaded CI machine starts the peer's interpreter slowly.
        assert both.wait(90.0), f"echoes received: {sorted(echoes)}"
        # What the peer advertises in discovery: the hash compiled into its type support.
        advertised = {
            topic: {
                str(info.topic_type_hash)
                for info in node.get_publishers_info_by_topic(ECHO + topic)
                if info.node_name == PEER_NODE
            }
            for topic in ("tf", "detections")
        }
        out, err = peer.communicate(input="", timeout=60)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.communicate()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5)
    assert peer.returncode == 0, err
    received = json.loads(out.strip().splitlines()[-1])
    assert received == {
        "tf": tf_summary(make_tf()),
        "detections": detections_summary(make_detections()),
    }
    assert echoes == received
    assert advertised == {
        "tf": {OFFICIAL_HASHES["tf2_msgs/msg/TFMessage"]},
        "detections": {OFFICIAL_HASHES["vision_msgs/msg/Detection3DArray"]},
    }


if __name__ == "__main__":
    sys.exit(_peer())
