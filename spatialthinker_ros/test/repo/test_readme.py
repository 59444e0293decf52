"""README and docs/ stay true: the interface table, the parameter table and the page links match
the code and the files."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
NODE_SOURCES = sorted((ROOT / "spatialthinker_ros" / "spatialthinker_ros" / "ros").glob("node*.py"))


def _interface_names_in_code() -> set[str]:
    """Topic, service and action names the node creates: string literals in the create calls
    of the node's modules, and the input topics of every transport (node_inputs' tables)."""
    from spatialthinker_ros.ros.node_inputs import DEPTH_TOPICS, IMAGE_TOPICS

    names: set[str] = set()
    creators = {
        "create_publisher",
        "create_lifecycle_publisher",
        "create_subscription",
        "create_service",
        "ActionServer",
    }
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


def test_the_parameter_page_is_generated_from_the_parameter_table() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from gen_config import BEGIN, END, parameter_table

    text = (DOCS / "parameters.md").read_text()
    table = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert table == parameter_table().strip(), "run scripts/gen_config.py"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text[text.index("```bash") : text.index("```", text.index("```bash") + 7)]
    assert "make test" in first_block and "make demo" in first_block
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_local_link_in_readme_and_docs_names_a_file_that_exists() -> None:
    pages = [README, *sorted(DOCS.glob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                missing.append(f"{page.name}: {target}")
    assert not missing, missing


def test_readme_stays_a_front_door() -> None:
    # Reference material lives in docs/; the README says what it is, how to start, and links.
    assert len(README.read_text().splitlines()) <= 320


def test_the_architecture_page_names_every_module_and_only_modules_that_exist() -> None:
    package = ROOT / "spatialthinker_ros" / "spatialthinker_ros"
    text = (DOCS / "architecture.md").read_text()
    layers_section = text[text.index("## The layers") : text.index("## One query's walk")]
    # The second column of the layers table: the modules (and sub-packages, with a slash).
    listed = {
        name
        for row in re.findall(r"^\|[^|]*\|([^|]*)\|", layers_section, flags=re.MULTILINE)
        for name in re.findall(r"`([a-z_]+)/?`", row)
    }
    modules = {
        (path.parent.name if path.name == "__init__.py" else path.stem)
        for path in package.glob("*/**/*.py")
        if path.parent != package and (path.name != "__init__.py" or path.parent.parent != package)
    }
    assert modules - listed == set(), "modules missing from docs/architecture.md"
    assert listed - modules == set(), "docs/architecture.md lists modules that do not exist"
    layers = {path.name for path in package.iterdir() if path.is_dir() and path.name[0] != "_"}
    for layer in layers:
        assert f"| `{layer}/`" in layers_section, f"layer {layer}/ missing"
