"""Shared pytest fixtures: ROS isolation, the offline tiny model, test data paths."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from spatialthinker_ros.ros.fastdds import set_default_profile

# ROS traffic stays on this machine and in a domain of this run's own, even
# when pytest is started without the Makefile. Set before any rclpy import.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The shipped Fast DDS profile (large shared-memory segments): without it most
# 640x480 frames are lost over best-effort QoS between processes (see README).
# Jazzy's Fast DDS reads it from FASTRTPS_..., Kilted's from FASTDDS_...: both are named.
_FASTDDS_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_images.xml"
set_default_profile(os.environ, _FASTDDS_PROFILE)

DATA_DIR = Path(__file__).parent / "data"
# The tests mirror the package (core/, answering/, ros/, cli/), with the end-to-end node tests in
# node/ and the repository's checks in repo/; what they share (the rig, the scripted server, the
# camera process, the real frames) lives in fixtures/ and is imported by module name.
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of committed test data."""
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5-VL with an offline tokenizer, built once per run."""
    from spatialthinker_ros.core.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def rig():
    """Camera + planner + observer in this process, one per test module (node_harness.Rig)."""
    from node_harness import DEMO_SCENE, Rig

    rig = Rig(DEMO_SCENE)
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def server():
    """The scripted OpenAI-compatible test server, answering in SpatialThinker format with
    boxes that frame the demo scene's objects (a stand-in for vLLM)."""
    from node_harness import DEMO_SCENE, scripted_reply
    from scripted_openai_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer(default_reply=scripted_reply(DEMO_SCENE)) as scripted:
        yield scripted


@pytest.fixture
def healthy_camera(rig):
    """The rig's camera back to healthy after each test that sets it to send bad input
    (use with ``pytestmark = pytest.mark.usefixtures("healthy_camera")``)."""
    yield
    rig.reset_camera()
