"""Launch spatialthinker_node on a camera, optionally with RViz.

Examples:
    ros2 launch spatialthinker_ros spatialthinker.launch.py
    ros2 launch spatialthinker_ros spatialthinker.launch.py backend:=openai use_rviz:=true
    ros2 launch spatialthinker_ros spatialthinker.launch.py namespace:=left \\
        image_topic:=/left/color/image_raw depth_topic:=/left/aligned_depth_to_color/image_raw \\
        camera_info_topic:=/left/color/camera_info

The node subscribes to the relative topics ``image``, ``depth`` and ``camera_info`` (remapped
here) and publishes ``~/scene_graph``, ``~/answer``, ``~/markers``, ``~/debug_image`` and
``/diagnostics``. It is a lifecycle node that configures and activates itself (parameter
``autostart``, true by default), so nothing has to be started by hand.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "spatialthinker_ros"


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments, the node and the optional RViz window.

    Returns:
        The launch description.
    """
    share = get_package_share_directory(PACKAGE)
    default_params = os.path.join(share, "config", "spatialthinker.yaml")
    rviz_config = os.path.join(share, "config", "spatialthinker.rviz")

    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    model = LaunchConfiguration("model")
    backend = LaunchConfiguration("backend")
    image_topic = LaunchConfiguration("image_topic")
    depth_topic = LaunchConfiguration("depth_topic")
    camera_info_topic = LaunchConfiguration("camera_info_topic")
    use_rviz = LaunchConfiguration("use_rviz")

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
            default_value="transformers",
            choices=["transformers", "openai"],
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
            "use_rviz",
            default_value="false",
            choices=["true", "false"],
            description="Also start RViz with config/spatialthinker.rviz (markers, debug image)."
            " Its topics are those of the empty namespace (/spatialthinker/...).",
        ),
    ]

    node = LifecycleNode(
        package=PACKAGE,
        executable="spatialthinker_node",
        name="spatialthinker",
        namespace=namespace,
        # Launch arguments come last so they win over the params file.
        parameters=[params_file, {"model": model, "backend": backend}],
        remappings=[
            ("image", image_topic),
            # Remapping 'image' does not touch 'image/compressed': ROS 2 remaps whole names.
            ("image/compressed", [image_topic, "/compressed"]),
            ("depth", depth_topic),
            ("camera_info", camera_info_topic),
        ],
        output="screen",
        emulate_tty=True,
    )

    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", rviz_config],
        condition=IfCondition(use_rviz),
        output="screen",
    )

    return LaunchDescription([*arguments, node, rviz])
