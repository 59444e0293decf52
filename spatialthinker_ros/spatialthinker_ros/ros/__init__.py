"""The ROS 2 glue: the node, message conversions, the JSON rendering of answers, RViz markers,
diagnostics, the Fast DDS profile.
"""
