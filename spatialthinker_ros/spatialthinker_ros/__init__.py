"""spatialthinker_ros: SpatialThinker-7B as a ROS 2 perception node.

The modules that do not import rclpy (prompt, parsing, model_frame, images,
camera, lifting, engine, backends) form the ROS-free core; ``node`` is the
ROS glue around it.
"""

__version__ = "0.1.0"
