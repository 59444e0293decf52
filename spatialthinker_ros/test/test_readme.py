"""README's tables stay true: parameters and ROS interfaces match the code."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NODE_SOURCE = ROOT / "spatialthinker_ros" / "spatialthinker_ros" / "node.py"


def _interface_names_in_code() -> set[str]:
    """Topic, service and action names the node creates (string literals in the calls)."""
    tree = ast.parse(NODE_SOURCE.read_text())
    names: set[str] = set()
    creators = {"create_publisher", "create_subscription", "create_service", "ActionServer"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in creators:
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    # Input topics are created from a table of (kind, type, topic, raw) tuples.
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and len(node.elts) == 4:
            first, _, topic, _ = node.elts
            if (
                isinstance(topic, ast.Constant)
                and isinstance(topic.value, str)
                and isinstance(first, ast.Constant)
                and first.value in ("depth", "camera_info")
            ):
                names.add(topic.value)
    return names


def _interface_names_in_readme() -> set[str]:
    text = README.read_text()
    section = text[text.index("### Topics, services, actions") : text.index("### Parameters")]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))


def test_readme_interface_table_matches_the_node() -> None:
    in_code = _interface_names_in_code()
    in_readme = _interface_names_in_readme()
    # The colour topic's two forms are chosen at run time from a conditional.
    in_code |= {"image", "image/compressed"}
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
