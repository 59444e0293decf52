"""Launch spatialthinker_node on a camera, optionally with RViz (ROS 2 Jazzy LTS or Kilted).

Examples:
    ros2 launch spatialthinker_ros spatialthinker.launch.py
    ros2 launch spatialthinker_ros spatialthinker.launch.py backend:=openai use_rviz:=true
    ros2 launch spatialthinker_ros spatialthinker.launch.py namespace:=left \\
        image_topic:=/left/color/image_raw depth_topic:=/left/aligned_depth_to_color/image_raw \\
        camera_info_topic:=/left/color/camera_info
    ros2 launch spatialthinker_ros spatialthinker.launch.py cameras:=front,wrist

The node subscribes to the relative topics ``image``, ``depth`` and ``camera_info`` (remapped
here; with ``cameras`` each camera's ``<camera>/image``, ``<camera>/depth`` and
``<camera>/camera_info``, remapped by the ``cameras_*_topic`` patterns) and publishes
``~/scene_graph``, ``~/answer``, ``~/markers``, ``~/debug_image`` and ``/diagnostics``. It is
a lifecycle node that configures and activates itself (parameter ``autostart``, true by
default), so nothing has to be started by hand. On Ctrl-C it
deactivates, cleans up (the model leaves the GPU) and shuts down, publishing each transition on
``~/transition_event``.

The node gets a Fast DDS profile under the variable name its distribution's Fast DDS reads:
Jazzy's Fast DDS 2.14 reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``, Kilted's Fast DDS 3
``FASTDDS_DEFAULT_PROFILES_FILE`` (and logs the old name as deprecated); both when
``ROS_DISTRO`` is unset.
"""

from __future__ import annotations

import os
from typing import Any

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from spatialthinker_ros.answering.parameters import check_cameras, split_camera_list
from spatialthinker_ros.core.backends import BACKEND_NAMES
from spatialthinker_ros.ros.fastdds import PROFILE_VARIABLES, profile_variables

PACKAGE = "spatialthinker_ros"
# The arguments with each camera's topics; their defaults are the topics a RealSense or Orbbec
# driver started under the camera's name publishes.
CAMERA_TOPIC_ARGUMENTS = ("cameras_image_topic", "cameras_depth_topic", "cameras_info_topic")


def _installed(package: str) -> bool:
    try:
        get_package_share_directory(package)
    except PackageNotFoundError:
        return False
    return True


def camera_names(text: str) -> list[str]:
    """The ``cameras`` launch argument as names: ``front,wrist``, ``front wrist`` or
    ``[front, wrist]``; empty for one camera on the plain topics.

    Raises:
        ValueError: A name the node would refuse (its own rule), or a name given twice.
    """
    names = split_camera_list(text)
    problem = check_cameras(names)
    if problem:
        raise ValueError(f"launch argument cameras:={text!r}: {problem}")
    return names


def input_remappings(camera: str, image: str, depth: str, info: str) -> list[tuple[str, str]]:
    """The node's input names of ``camera`` ("" for the single camera) remapped to its colour,
    depth and camera-info topics, transports included: ROS 2 remaps whole names, so ``image``
    does not carry ``image/compressed`` along."""
    prefix = f"{camera}/" if camera else ""
    return [
        (f"{prefix}image", image),
        (f"{prefix}image/compressed", f"{image}/compressed"),
        (f"{prefix}depth", depth),
        (f"{prefix}depth/compressedDepth", f"{depth}/compressedDepth"),
        (f"{prefix}camera_info", info),
    ]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments, the node and the optional RViz window.

    Returns:
        The launch description.
    """
    share = get_package_share_directory(PACKAGE)
    default_params = os.path.join(share, "config", "spatialthinker.yaml")
    rviz_config = os.path.join(share, "config", "spatialthinker.rviz")
    shipped_profile = os.path.join(share, "config", "fastdds_large_images.xml")

    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    model = LaunchConfiguration("model")
    backend = LaunchConfiguration("backend")
    image_topic = LaunchConfiguration("image_topic")
    depth_topic = LaunchConfiguration("depth_topic")
    camera_info_topic = LaunchConfiguration("camera_info_topic")
    use_rviz = LaunchConfiguration("use_rviz")
    fastdds_profile = LaunchConfiguration("fastdds_profile")
    # The user's own profile (under either name) wins over the shipped one.
    profile_default = EnvironmentVariable(
        PROFILE_VARIABLES[0],
        default_value=EnvironmentVariable(PROFILE_VARIABLES[1], default_value=shipped_profile),
    )

    arguments = [
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of the node (one per camera when running several).",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="YAML file with the node's parameters (see config/spatialthinker.yaml).",
        ),
        DeclareLaunchArgument(
            "model",
            default_value="OX-PIXL/SpatialThinker-7B",
            description="Hub id or local directory (transformers backend), or the served model"
            " name (openai backend). Overrides the params file.",
        ),
        DeclareLaunchArgument(
            "backend",
            default_value=BACKEND_NAMES[0],
            choices=list(BACKEND_NAMES),
            description="'transformers' runs the model in the node's process; 'openai' calls an"
            " OpenAI-compatible server (vLLM, SGLang). Overrides the params file.",
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="/camera/color/image_raw",
            description="Colour image topic (sensor_msgs/Image), remapped to the node's 'image'."
            " With image_transport 'compressed' the node reads '<image_topic>/compressed'.",
        ),
        DeclareLaunchArgument(
            "depth_topic",
            default_value="/camera/aligned_depth_to_color/image_raw",
            description="Depth image registered to the colour image (16UC1 mm or 32FC1 m),"
            " remapped to the node's 'depth'.",
        ),
        DeclareLaunchArgument(
            "camera_info_topic",
            default_value="/camera/color/camera_info",
            description="Camera info of the colour image, remapped to the node's 'camera_info'.",
        ),
        DeclareLaunchArgument(
            "target_frame",
            default_value="",
            description="Frame every answer's 3D is reported in, e.g. base_link (over the params"
            " file when given) and RViz's fixed frame. Empty: the params file's target_frame.",
        ),
        DeclareLaunchArgument(
            "cameras",
            default_value="",
            description="Several cameras on one model: their names, e.g. 'front,wrist' (sets the"
            " node's cameras parameter, over the params file, and remaps each camera's inputs by"
            " the cameras_*_topic patterns). Empty: one camera on image_topic, depth_topic and"
            " camera_info_topic, or the params file's cameras.",
        ),
        DeclareLaunchArgument(
            "cameras_image_topic",
            default_value="/{camera}/color/image_raw",
            description="With cameras: each camera's colour image topic, {camera} replaced by"
            " its name.",
        ),
        DeclareLaunchArgument(
            "cameras_depth_topic",
            default_value="/{camera}/aligned_depth_to_color/image_raw",
            description="With cameras: each camera's registered depth topic, {camera} replaced"
            " by its name.",
        ),
        DeclareLaunchArgument(
            "cameras_info_topic",
            default_value="/{camera}/color/camera_info",
            description="With cameras: each camera's camera info topic, {camera} replaced by"
            " its name.",
        ),
        DeclareLaunchArgument(
            "use_rviz",
            default_value="false",
            choices=["true", "false"],
            description="Also start RViz with config/spatialthinker.rviz (markers, debug image)."
            " Its topics are those of the empty namespace (/spatialthinker/...).",
        ),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=profile_default,
            description="Fast DDS XML profile for the node, set as"
            " FASTRTPS_DEFAULT_PROFILES_FILE (Jazzy) and FASTDDS_DEFAULT_PROFILES_FILE (Kilted;"
            " the new name alone there)."
            " Default: the profile your environment names, else the shipped"
            " config/fastdds_large_images.xml (16 MB shared-memory segments: 640x480 frames"
            " are not lost between processes; give the camera driver the same profile).",
        ),
    ]

    def launch_node(context: Any) -> list[LifecycleNode]:
        # The camera list decides how many remappings there are: known only at launch time.
        names = camera_names(LaunchConfiguration("cameras").perform(context))
        overrides = {
            "model": ParameterValue(model, value_type=str),
            "backend": ParameterValue(backend, value_type=str),
        }
        target_frame = LaunchConfiguration("target_frame").perform(context)
        if target_frame:
            overrides["target_frame"] = ParameterValue(target_frame, value_type=str)
        remappings = input_remappings(
            "", *(topic.perform(context) for topic in (image_topic, depth_topic, camera_info_topic))
        )
        if names:
            # (An empty list cannot be passed: ROS 2's parameter YAML refuses it.)
            overrides["cameras"] = names
            patterns = [
                LaunchConfiguration(name).perform(context) for name in CAMERA_TOPIC_ARGUMENTS
            ]
            for name in names:
                topics = (pattern.replace("{camera}", name) for pattern in patterns)
                remappings += input_remappings(name, *topics)
        node = LifecycleNode(
            package=PACKAGE,
            executable="spatialthinker_node",
            name="spatialthinker",
            namespace=namespace,
            # Launch arguments come last so they win over the params file. Typed as strings:
            # a value YAML reads as a number (model:=123) would otherwise stop the node.
            parameters=[params_file, overrides],
            remappings=remappings,
            output="screen",
            emulate_tty=True,
            additional_env={
                name: fastdds_profile
                for name in profile_variables(os.environ.get("ROS_DISTRO", ""))
            },
        )
        return [node]

    def launch_rviz(context: Any) -> list[Node | LogInfo]:
        if not _installed("rviz2"):
            # A missing rviz2 would fail the launch halfway, with the node already running.
            message = (
                "use_rviz:=true but rviz2 is not installed (sudo apt install"
                " ros-$ROS_DISTRO-rviz2): running the node without RViz"
            )
            return [LogInfo(msg=message, condition=IfCondition(use_rviz))]
        rviz_arguments = ["-d", rviz_config]
        target_frame = LaunchConfiguration("target_frame").perform(context)
        if target_frame:
            rviz_arguments += ["-f", target_frame]  # the answers' frame, over the config's
        rviz = Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=rviz_arguments,
            condition=IfCondition(use_rviz),
            output="screen",
        )
        return [rviz]

    return LaunchDescription(
        [*arguments, OpaqueFunction(function=launch_node), OpaqueFunction(function=launch_rviz)]
    )
