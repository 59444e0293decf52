"""Naming a Fast DDS XML profile for every supported ROS 2 distribution (no rclpy import).

Fast DDS reads its default profile file from an environment variable whose name changed:
Jazzy's Fast DDS 2.14 reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``; Kilted's Fast DDS 3 reads
``FASTDDS_DEFAULT_PROFILES_FILE`` (its rmw_fastrtps still takes the old name, but logs that it is
deprecated at every start). So a profile is named under both, except where ``ROS_DISTRO`` says the
distribution's Fast DDS is 3.x, which gets the new name alone. Must run before the process (or the
child process it prepares an environment for) creates its first participant.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Kilted (Fast DDS 3.x) first, then Jazzy (Fast DDS 2.x).
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
# The distributions whose Fast DDS (2.x) reads only the old name.
FAST_DDS_2_DISTROS = frozenset({"humble", "iron", "jazzy"})


def profile_variables(distro: str) -> tuple[str, ...]:
    """The variable names to set a profile under for ``distro`` (``ROS_DISTRO``; empty when
    unknown): the new name alone for Fast DDS 3 (Kilted on), both for Fast DDS 2 or unknown."""
    if distro and distro not in FAST_DDS_2_DISTROS:
        return PROFILE_VARIABLES[:1]
    return PROFILE_VARIABLES


def set_default_profile(env: MutableMapping[str, str], profile: str | os.PathLike[str]) -> str:
    """Name ``profile`` for Fast DDS in ``env`` unless the user already named one.

    A profile the user set under either name wins and is copied to the names still unset, so it
    reaches Fast DDS on every distribution. The old name is left out only where ``ROS_DISTRO``
    names a distribution with Fast DDS 3 (Kilted on), which would warn about it. Returns the
    profile now in effect.
    """
    chosen = next((env[name] for name in PROFILE_VARIABLES if env.get(name)), str(profile))
    for name in profile_variables(env.get("ROS_DISTRO", "")):
        if not env.get(name):
            env[name] = chosen
    return chosen
