"""The package's layers, as its folders show them: core <- answering <- ros <- cli.

Every module of a layer imports only modules of its own layer or of layers below it, the import
graph has no cycle, and the core and answering layers import no ROS package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "spatialthinker_ros"
PACKAGE = "spatialthinker_ros"
LAYERS = ("core", "answering", "ros", "cli")
# Top-level modules: the public facade over the core.
TOP_LEVEL = {"geometry": "core", "__init__": "core"}
ROS_PACKAGES = (
    "rclpy",
    "sensor_msgs",
    "std_msgs",
    "geometry_msgs",
    "visualization_msgs",
    "diagnostic_msgs",
    "rcl_interfaces",
    "lifecycle_msgs",
    "spatialthinker_msgs",
    "builtin_interfaces",
    "action_msgs",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    return ".".join((PACKAGE, *parts)).removesuffix(".__init__")


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if parts[1] in LAYERS:
        return parts[1]
    return TOP_LEVEL[parts[1]]


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Package modules and third-party roots ``path`` imports (at any depth of the file, or
    only at its top level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module.startswith(PACKAGE):
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _package_imports(path: Path) -> set[str]:
    return {name for name in _imports(path) if name in MODULES and name != PACKAGE}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module: str) -> None:
    own = LAYERS.index(_layer(module))
    above = {
        imported
        for imported in _package_imports(MODULES[module])
        if LAYERS.index(_layer(imported)) > own
    }
    assert not above, f"{module} ({_layer(module)}) imports {sorted(above)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) in ("core", "answering")))
def test_core_and_answering_are_ros_free(module: str) -> None:
    """Importable without ROS: a function that builds a message for a ROS caller (images'
    numpy_to_image) imports the message type when it runs."""
    roots = {name.split(".")[0] for name in _imports(MODULES[module], top_level_only=True)}
    assert not roots & set(ROS_PACKAGES), f"{module} imports {sorted(roots & set(ROS_PACKAGES))}"


def test_the_import_graph_has_no_cycle() -> None:
    graph = {module: _package_imports(path) - {module} for module, path in MODULES.items()}
    # A package's __init__ importing its own modules is how a package is made, not a cycle.
    for module in graph:
        graph[module] = {m for m in graph[module] if not module.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [module, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_folder_is_a_layer() -> None:
    folders = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(LAYERS)
