"""README's tables stay true: parameters and ROS interfaces match the code."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NODE_SOURCES = sorted((ROOT / "spatialthinker_ros" / "spatialthinker_ros" / "ros").glob("node*.py"))


def _interface_names_in_code() -> set[str]:
    """Topic, service and action names the node creates: string literals in the create calls
    of the node's modules, and the input topics of every transport (node_inputs' tables)."""
    from spatialthinker_ros.ros.node_inputs import DEPTH_TOPICS, IMAGE_TOPICS

    names: set[str] = set()
    creators = {"create_publisher", "create_subscription", "create_service", "ActionServer"}
    for source in NODE_SOURCES:
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in creators:
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        names.add(arg.value)
    names |= {topic for topic, _type in (*IMAGE_TOPICS.values(), *DEPTH_TOPICS.values())}
    names.add("camera_info")  # subscribed beside depth (node_inputs.CameraInputs.subscribe)
    return names


def _interface_names_in_readme() -> set[str]:
    text = README.read_text()
    section = text[text.index("### Topics, services, actions") : text.index("### Parameters")]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))


def test_readme_interface_table_matches_the_node() -> None:
    in_code = _interface_names_in_code()
    in_readme = _interface_names_in_readme()
    assert in_code == in_readme, (in_code - in_readme, in_readme - in_code)


def test_readme_parameter_table_is_generated_from_the_parameter_table() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    from gen_config import BEGIN, END, parameter_table

    text = README.read_text()
    table = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert table == parameter_table().strip(), "run tools/gen_config.py"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text[text.index("```bash") : text.index("```", text.index("```bash") + 7)]
    assert "make test" in first_block and "make demo" in first_block
    assert "make test" in (ROOT / ".ci" / "run").read_text()
