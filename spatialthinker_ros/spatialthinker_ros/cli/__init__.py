"""The cli layer: the ``spatialthinker`` command and its subcommands, file I/O, the node as a
subprocess (demo, tests), the bundled sample.
"""
