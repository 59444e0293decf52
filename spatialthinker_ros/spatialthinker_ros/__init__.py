"""spatialthinker_ros: SpatialThinker-7B as a ROS 2 perception node.

The package is four layers, one folder each; a module imports only from its own layer and the
layers below it (``test/repo/test_layers.py`` checks this):

* ``core``: ROS-free building blocks (numpy/torch): the prompt, the ``parsing`` of the model's
  output (also while it streams), the model frame, images, camera intrinsics and frame pairing,
  2D-to-3D lifting and the up direction, relation checks, annotated images, the inference
  engine and its ``backends``, and the synthetic scenes and tiny model that tests run on;
* ``answering``: ROS-free as well; the one pipeline from frames and a question to a typed answer
  with 3D, shared by the node and the offline tools, and the parameter table that configures it;
* ``ros``: the ROS 2 glue: the node, its camera inputs, service calls and diagnostics, message
  conversions, the JSON rendering of answers, RViz markers, the Fast DDS profile;
* ``cli``: the ``spatialthinker`` command line and its subcommands, file I/O, the node as a
  subprocess, the bundled sample.

``geometry`` at the top is the public facade over the core's 3D modules.
"""

__version__ = "0.1.0"
