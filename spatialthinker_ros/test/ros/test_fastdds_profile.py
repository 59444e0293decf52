"""The shipped Fast DDS profile reaches Fast DDS on this distribution, and 640x480 frames cross.

Jazzy's Fast DDS 2.14 reads the profile file only from FASTRTPS_DEFAULT_PROFILES_FILE, Kilted's
Fast DDS 3 from FASTDDS_DEFAULT_PROFILES_FILE; spatialthinker_ros.ros.fastdds names it for both.
Without the profile, frames larger than Fast DDS's 0.5 MB shared-memory segment go over UDP
fragments and best-effort QoS loses most of them. These tests run on whichever distribution the
venv has (`make test`, `make test ROS_DISTRO=kilted`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spatialthinker_ros.ros.fastdds import PROFILE_VARIABLES, set_default_profile

TEST_DIR = Path(__file__).resolve().parents[1]
PEER = TEST_DIR / "fixtures" / "image_peer.py"
PROFILE = TEST_DIR.parent / "config" / "fastdds_large_images.xml"
PROFILE_SEGMENT_BYTES = 16 * 1024 * 1024  # <segment_size> in the profile
CAMERA_RATE_HZ = 30.0
FRAMES = 90  # three seconds of a 30 Hz camera


def _bare_environment() -> dict[str, str]:
    """This run's environment (domain, discovery range) without any profile named."""
    env = dict(os.environ)
    for name in PROFILE_VARIABLES:
        env.pop(name, None)
    return env


def _profile_environment() -> dict[str, str]:
    env = _bare_environment()
    set_default_profile(env, PROFILE)
    return env


def _report(process: subprocess.Popen, timeout: float) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{process.args[2]} failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def _peer(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PEER), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_without_a_profile_fast_dds_keeps_its_small_segment() -> None:
    # The control for the segment check below: Fast DDS's default segment cannot hold a frame.
    report = _report(_peer(_bare_environment(), "segment"), timeout=60)
    assert 0 < report["segment_bytes"] < 640 * 480 * 3


def test_the_profile_reaches_fast_dds_in_both_processes_and_frames_arrive_at_camera_rate() -> None:
    env = _profile_environment()
    topic = f"profile_test_{os.getpid()}/image"
    listener = _peer(env, "listener", topic, str(FRAMES))
    camera = _peer(env, "camera", topic, str(FRAMES), str(CAMERA_RATE_HZ))
    try:
        sent = _report(camera, timeout=120)
        seen = _report(listener, timeout=120)
    finally:
        for process in (camera, listener):
            if process.poll() is None:
                process.kill()
                process.wait()

    for name, report in (("camera", sent), ("listener", seen)):
        assert report["segment_bytes"] >= PROFILE_SEGMENT_BYTES, (
            f"the {name} did not load the profile: largest shared-memory segment "
            f"{report['segment_bytes']} bytes"
        )
    assert seen["corrupt"] == 0
    rate = seen["received"] / sent["seconds"] if sent["seconds"] else 0.0
    # Shared memory carries whole frames: at most a rare frame lost to scheduling on a busy
    # machine, where UDP fragments lose most of them.
    assert seen["received"] >= 0.9 * FRAMES, (
        f"{seen['received']} of {FRAMES} frames arrived ({rate:.1f} Hz of {CAMERA_RATE_HZ:.0f} Hz)"
    )


NEW, OLD = "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # No distribution named (a bare venv): both names, each Fast DDS reads its own.
        ({}, {NEW: "p.xml", OLD: "p.xml"}),
        # Fast DDS 2 (Jazzy, and older): it reads only the old name.
        ({"ROS_DISTRO": "jazzy"}, {NEW: "p.xml", OLD: "p.xml"}),
        ({"ROS_DISTRO": "humble"}, {NEW: "p.xml", OLD: "p.xml"}),
        # Fast DDS 3 (Kilted on): the new name alone; the old one would log a deprecation.
        ({"ROS_DISTRO": "kilted"}, {NEW: "p.xml"}),
        ({"ROS_DISTRO": "rolling"}, {NEW: "p.xml"}),
        # A profile the user named under either name wins and reaches the other name too.
        ({NEW: "mine.xml"}, {NEW: "mine.xml", OLD: "mine.xml"}),
        ({OLD: "mine.xml"}, {NEW: "mine.xml", OLD: "mine.xml"}),
        ({"ROS_DISTRO": "kilted", OLD: "mine.xml"}, {NEW: "mine.xml", OLD: "mine.xml"}),
        ({NEW: "a.xml", OLD: "b.xml"}, {NEW: "a.xml", OLD: "b.xml"}),
        # An empty value counts as unset.
        ({NEW: ""}, {NEW: "p.xml", OLD: "p.xml"}),
    ],
)
def test_set_default_profile_names_the_profile_for_each_fast_dds(
    given: dict[str, str], expected: dict[str, str]
) -> None:
    env = dict(given)
    chosen = set_default_profile(env, "p.xml")
    assert {name: env[name] for name in PROFILE_VARIABLES if name in env} == expected
    assert chosen == expected[NEW]
    assert env.get("ROS_DISTRO") == given.get("ROS_DISTRO")
