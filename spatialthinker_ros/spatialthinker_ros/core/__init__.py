"""The ROS-free core (numpy/torch): prompt, parsing, model frame, images, camera, 3D lifting,
relation checks, the inference engine and its backends.
"""
