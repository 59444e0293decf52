"""The tools: the ``spatialthinker`` CLI and its subcommands, file I/O, the node as a subprocess
(demo, tests), the bundled sample.
"""
