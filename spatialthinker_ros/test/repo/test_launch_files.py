"""The launch file, the RViz config and setup.py agree with each other and with the node.

``launch`` / ``launch_ros`` are not installable in the test environment, so the launch file is
checked twice without them: statically with ``ast``, and by running
``generate_launch_description()`` against small recording stand-ins for the launch classes (which
catches name errors and wrong wiring that a static look would miss).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

PACKAGE_DIR = Path(__file__).resolve().parents[2]
LAUNCH_FILE = PACKAGE_DIR / "launch" / "spatialthinker.launch.py"
RVIZ_FILE = PACKAGE_DIR / "config" / "spatialthinker.rviz"
PARAMS_FILE = PACKAGE_DIR / "config" / "spatialthinker.yaml"
SETUP_FILE = PACKAGE_DIR / "setup.py"
PACKAGE_XML = PACKAGE_DIR / "package.xml"
PACKAGE = "spatialthinker_ros"

EXPECTED_ARGUMENTS = {
    "namespace": "",
    "params_file": None,  # the installed share path, checked separately
    "model": "OX-PIXL/SpatialThinker-7B",
    "backend": "transformers",
    "image_topic": "/camera/color/image_raw",
    "depth_topic": "/camera/aligned_depth_to_color/image_raw",
    "camera_info_topic": "/camera/color/camera_info",
    "target_frame": "",
    "cameras": "",
    "cameras_image_topic": "/{camera}/color/image_raw",
    "cameras_depth_topic": "/{camera}/aligned_depth_to_color/image_raw",
    "cameras_info_topic": "/{camera}/color/camera_info",
    "use_rviz": "false",
    "fastdds_profile": None,  # a substitution: the environment's profile, else the shipped one
}
PROFILE_NAMES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


# ---------------------------------------------------------------------------------------------
# Static view (ast)
# ---------------------------------------------------------------------------------------------


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls to ``name`` (``name(...)`` or ``x.name(...)``) anywhere in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                found.append(node)
    return found


def _kwargs(call: ast.Call) -> dict[str, ast.expr]:
    return {kw.arg: kw.value for kw in call.keywords if kw.arg}


def _constants(tree: ast.Module) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` assignments (e.g. ``PACKAGE``)."""
    constants = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value.value
    return constants


def _value(expr: ast.expr, tree: ast.Module) -> Any:
    """A literal, or a module-level constant referenced by name."""
    if isinstance(expr, ast.Name):
        return _constants(tree)[expr.id]
    return ast.literal_eval(expr)


def _registry_value(expr: ast.expr) -> Any:
    """A literal, or an expression over the backend registry's names (the launch file's
    backend choices come from it)."""
    from spatialthinker_ros.core.backends import BACKEND_NAMES

    code = compile(ast.Expression(expr), "<launch argument>", "eval")
    return eval(code, {"__builtins__": {}}, {"BACKEND_NAMES": BACKEND_NAMES, "list": list})


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


@pytest.fixture(scope="module")
def declared(launch_tree: ast.Module) -> dict[str, dict[str, ast.expr]]:
    arguments = {}
    for call in _calls(launch_tree, "DeclareLaunchArgument"):
        name = ast.literal_eval(call.args[0])
        assert name not in arguments, f"{name} declared twice"
        arguments[name] = _kwargs(call)
    return arguments


@pytest.fixture(scope="module")
def node_call(launch_tree: ast.Module) -> dict[str, ast.expr]:
    nodes = [
        _kwargs(call)
        for call in _calls(launch_tree, "LifecycleNode") + _calls(launch_tree, "Node")
        if _value(_kwargs(call)["package"], launch_tree) == PACKAGE
    ]
    assert len(nodes) == 1
    return nodes[0]


@pytest.fixture(scope="module")
def setup_kwargs() -> dict[str, Any]:
    """Run setup.py with ``setup()`` replaced, so its globs are evaluated for real."""
    import setuptools

    captured: dict[str, Any] = {}
    original = setuptools.setup
    cwd = Path.cwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(PACKAGE_DIR)
        exec(compile(SETUP_FILE.read_text(), str(SETUP_FILE), "exec"), {"__name__": "__main__"})
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    return captured


def test_every_argument_is_declared_with_a_description(declared) -> None:
    assert set(declared) == set(EXPECTED_ARGUMENTS)
    for name, kwargs in declared.items():
        assert "description" in kwargs, name
        description = ast.literal_eval(kwargs["description"])
        assert isinstance(description, str) and len(description) > 15, name


def test_argument_defaults_and_choices(declared) -> None:
    for name, default in EXPECTED_ARGUMENTS.items():
        if default is not None:
            assert _registry_value(declared[name]["default_value"]) == default, name
    assert _registry_value(declared["backend"]["choices"]) == ["transformers", "openai"]
    assert ast.literal_eval(declared["use_rviz"]["choices"]) == ["true", "false"]
    for kwargs in declared.values():
        if "choices" in kwargs:
            default = _registry_value(kwargs["default_value"])
            assert default in _registry_value(kwargs["choices"])


def test_executable_is_a_console_script_of_setup_py(node_call, setup_kwargs) -> None:
    executable = ast.literal_eval(node_call["executable"])
    scripts = {
        entry.split("=")[0].strip() for entry in setup_kwargs["entry_points"]["console_scripts"]
    }
    assert executable == "spatialthinker_node"
    assert executable in scripts
    assert ast.literal_eval(node_call["name"]) == "spatialthinker"


def test_referenced_config_files_exist(launch_tree: ast.Module) -> None:
    referenced = set()
    for call in _calls(launch_tree, "join"):
        parts = [a.value for a in call.args if isinstance(a, ast.Constant)]
        if parts[:1] == ["config"]:
            referenced.add("/".join(parts[1:]))
    assert referenced == {"spatialthinker.yaml", "spatialthinker.rviz", "fastdds_large_images.xml"}
    for name in referenced:
        assert (PACKAGE_DIR / "config" / name).is_file(), f"config/{name} missing"


def test_launch_and_config_files_are_installed(setup_kwargs) -> None:
    installed: dict[str, set[str]] = {}
    for destination, files in setup_kwargs["data_files"]:
        installed.setdefault(destination, set()).update(files)
    share = f"share/{PACKAGE}"
    assert "launch/spatialthinker.launch.py" in installed[f"{share}/launch"]
    assert "config/spatialthinker.rviz" in installed[f"{share}/config"]
    assert "config/spatialthinker.yaml" in installed[f"{share}/config"]


# ---------------------------------------------------------------------------------------------
# Running generate_launch_description() against recording stand-ins
# ---------------------------------------------------------------------------------------------


class _Recorded:
    """Stand-in for a launch class: keeps its positional and keyword arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


class _Context:
    """Stand-in for a launch context: the launch arguments' values."""

    def __init__(self, launch_configurations: dict[str, Any]) -> None:
        self.launch_configurations = launch_configurations


class _LaunchConfiguration(_Recorded):
    def perform(self, context: _Context) -> str:
        return context.launch_configurations[self.args[0]]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LaunchConfiguration) and self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)


def _config(name: str) -> _LaunchConfiguration:
    return _LaunchConfiguration(name)


class _Equal(_Recorded):
    """A recorded value that compares by its arguments (substitutions, parameter values)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.args == other.args and self.kwargs == other.kwargs

    def __hash__(self) -> int:
        return hash(type(self).__name__)


class _EnvironmentVariable(_Equal):
    pass


class _ParameterValue(_Equal):
    pass


def _describe(
    share: Path, installed: set[str], arguments: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run generate_launch_description(), and its opaque functions as ``ros2 launch`` would with
    ``arguments`` over the declared defaults; packages not in ``installed`` are not found."""
    classes = {
        name: type(name, (_Recorded,), {})
        for name in (
            "LaunchDescription",
            "DeclareLaunchArgument",
            "IfCondition",
            "LogInfo",
            "OpaqueFunction",
        )
    }
    classes["LifecycleNode"] = type("LifecycleNode", (_Recorded,), {})
    classes["Node"] = type("Node", (_Recorded,), {})
    modules = {
        "launch": {"LaunchDescription": classes["LaunchDescription"]},
        "launch.actions": {
            "DeclareLaunchArgument": classes["DeclareLaunchArgument"],
            "LogInfo": classes["LogInfo"],
            "OpaqueFunction": classes["OpaqueFunction"],
        },
        "launch.conditions": {"IfCondition": classes["IfCondition"]},
        "launch.substitutions": {
            "LaunchConfiguration": _LaunchConfiguration,
            "EnvironmentVariable": _EnvironmentVariable,
        },
        "launch_ros": {},
        "launch_ros.actions": {"LifecycleNode": classes["LifecycleNode"], "Node": classes["Node"]},
        "launch_ros.parameter_descriptions": {"ParameterValue": _ParameterValue},
    }
    saved = {name: sys.modules.get(name) for name in modules}
    import ament_index_python.packages as ament_packages

    def share_directory(package: str) -> str:
        if package not in installed:
            raise ament_packages.PackageNotFoundError(package)
        return str(share / package)

    original_share = ament_packages.get_package_share_directory
    try:
        for name, attributes in modules.items():
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            sys.modules[name] = module
        ament_packages.get_package_share_directory = share_directory
        spec = importlib.util.spec_from_file_location("spatialthinker_launch", LAUNCH_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.generate_launch_description()
    finally:
        ament_packages.get_package_share_directory = original_share
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous

    assert type(result).__name__ == "LaunchDescription"
    actions: dict[str, list[_Recorded]] = {}
    for action in result.args[0]:
        actions.setdefault(type(action).__name__, []).append(action)
    values = {a.args[0]: a.kwargs["default_value"] for a in actions["DeclareLaunchArgument"]}
    context = _Context({**values, **(arguments or {})})
    for opaque in actions.get("OpaqueFunction", []):
        for action in opaque.kwargs["function"](context):
            actions.setdefault(type(action).__name__, []).append(action)
    return {"actions": actions, "share": share / PACKAGE}


@pytest.fixture(scope="module")
def description(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Actions built by the launch file (rviz2 installed), keyed by class name (lists)."""
    return _describe(tmp_path_factory.mktemp("share"), {PACKAGE, "rviz2"})


def test_launch_description_runs_and_declares_arguments_first(description) -> None:
    actions = description["actions"]
    assert len(actions["DeclareLaunchArgument"]) == len(EXPECTED_ARGUMENTS)
    params = next(a for a in actions["DeclareLaunchArgument"] if a.args[0] == "params_file")
    assert params.kwargs["default_value"] == str(
        description["share"] / "config/spatialthinker.yaml"
    )


def test_node_wiring(description) -> None:
    (node,) = description["actions"]["LifecycleNode"]
    kwargs = node.kwargs
    assert kwargs["package"] == PACKAGE
    assert kwargs["executable"] == "spatialthinker_node"
    assert kwargs["name"] == "spatialthinker"
    assert kwargs["namespace"] == _config("namespace")
    # Launch arguments after the file, so that they override it; typed as strings, so that
    # model:=123 (which YAML reads as a number) does not stop the node.
    assert kwargs["parameters"] == [
        _config("params_file"),
        {
            "model": _ParameterValue(_config("model"), value_type=str),
            "backend": _ParameterValue(_config("backend"), value_type=str),
        },
    ]
    remaps = dict(kwargs["remappings"])
    image, depth = EXPECTED_ARGUMENTS["image_topic"], EXPECTED_ARGUMENTS["depth_topic"]
    assert remaps == {
        "image": image,
        "depth": depth,
        "camera_info": EXPECTED_ARGUMENTS["camera_info_topic"],
        # Transports have names of their own (ROS 2 remaps whole names).
        "image/compressed": f"{image}/compressed",
        "depth/compressedDepth": f"{depth}/compressedDepth",
    }
    assert kwargs["output"] == "screen"
    assert kwargs["emulate_tty"] is True


def _node_topics(camera: str) -> set[str]:
    """The input names the node subscribes to for ``camera`` ("": the single camera), every
    transport."""
    from spatialthinker_ros.ros.node_inputs import DEPTH_TOPICS, IMAGE_TOPICS

    names = [topic for topic, _type in (*IMAGE_TOPICS.values(), *DEPTH_TOPICS.values())]
    return {f"{camera}/{name}" if camera else name for name in [*names, "camera_info"]}


@pytest.mark.parametrize("given", ["front,wrist", "front wrist", "[front, wrist]"])
def test_cameras_argument_sets_the_list_and_remaps_every_camera_s_inputs(
    tmp_path: Path, given: str
) -> None:
    actions = _describe(tmp_path, {PACKAGE}, {"cameras": given})["actions"]
    (node,) = actions["LifecycleNode"]
    overrides = node.kwargs["parameters"][1]
    assert overrides["cameras"] == ["front", "wrist"]
    remaps = dict(node.kwargs["remappings"])
    # Every name the node subscribes to for each camera is remapped, to that camera's topics.
    for camera in ("front", "wrist"):
        assert _node_topics(camera) <= set(remaps), sorted(remaps)
        assert remaps[f"{camera}/image"] == f"/{camera}/color/image_raw"
        assert remaps[f"{camera}/image/compressed"] == f"/{camera}/color/image_raw/compressed"
        assert remaps[f"{camera}/depth"] == f"/{camera}/aligned_depth_to_color/image_raw"
        assert (
            remaps[f"{camera}/depth/compressedDepth"]
            == f"/{camera}/aligned_depth_to_color/image_raw/compressedDepth"
        )
        assert remaps[f"{camera}/camera_info"] == f"/{camera}/color/camera_info"


def test_topics_and_cameras_topic_patterns_are_arguments(tmp_path: Path) -> None:
    arguments = {
        "image_topic": "/robot/rgb/image",
        "depth_topic": "/robot/depth/image",
        "camera_info_topic": "/robot/rgb/info",
        "cameras": "head",
        "cameras_image_topic": "/robot/{camera}_rgb/image",
        "cameras_depth_topic": "/robot/{camera}_depth/image",
        "cameras_info_topic": "/robot/{camera}_rgb/info",
    }
    (node,) = _describe(tmp_path, {PACKAGE}, arguments)["actions"]["LifecycleNode"]
    remaps = dict(node.kwargs["remappings"])
    assert remaps["head/image"] == "/robot/head_rgb/image"
    assert remaps["head/depth"] == "/robot/head_depth/image"
    assert remaps["head/camera_info"] == "/robot/head_rgb/info"
    # The single camera's topics are arguments too, its transports following them.
    assert remaps["image"] == "/robot/rgb/image"
    assert remaps["image/compressed"] == "/robot/rgb/image/compressed"
    assert remaps["depth/compressedDepth"] == "/robot/depth/image/compressedDepth"
    assert remaps["camera_info"] == "/robot/rgb/info"


def test_without_cameras_the_params_file_keeps_its_list(description) -> None:
    # No 'cameras' override (ROS 2's parameter YAML cannot carry an empty list): the params
    # file's list, or the single camera, stays.
    (node,) = description["actions"]["LifecycleNode"]
    assert "cameras" not in node.kwargs["parameters"][1]
    assert {name for name, _topic in node.kwargs["remappings"]} == _node_topics("")


@pytest.mark.parametrize(
    ("given", "problem"),
    [("front,front", "twice"), ("front,2nd", "2nd"), ("front-left", "front-left")],
)
def test_a_camera_name_the_node_would_refuse_stops_the_launch_naming_it(
    tmp_path: Path, given: str, problem: str
) -> None:
    with pytest.raises(ValueError, match="cameras") as raised:
        _describe(tmp_path, {PACKAGE}, {"cameras": given})
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("distro", "names"),
    [
        # Jazzy's Fast DDS 2.14 reads only FASTRTPS_...; unknown: both.
        ("jazzy", PROFILE_NAMES),
        ("", PROFILE_NAMES),
        # Kilted's Fast DDS 3 reads FASTDDS_... and logs the old name as deprecated.
        ("kilted", PROFILE_NAMES[:1]),
    ],
)
def test_fastdds_profile_reaches_the_node_under_the_names_its_fast_dds_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, distro: str, names: tuple[str, ...]
) -> None:
    monkeypatch.setenv("ROS_DISTRO", distro)
    (node,) = _describe(tmp_path, {PACKAGE, "rviz2"})["actions"]["LifecycleNode"]
    assert node.kwargs["additional_env"] == {name: _config("fastdds_profile") for name in names}


def test_fastdds_profile_argument_defaults_to_the_environment_s_then_the_shipped(
    description,
) -> None:
    (argument,) = [
        a for a in description["actions"]["DeclareLaunchArgument"] if a.args[0] == "fastdds_profile"
    ]
    shipped = str(description["share"] / "config" / "fastdds_large_images.xml")
    # The profile the user's environment names wins; else the shipped one.
    assert argument.kwargs["default_value"] == _EnvironmentVariable(
        PROFILE_NAMES[0],
        default_value=_EnvironmentVariable(PROFILE_NAMES[1], default_value=shipped),
    )
    assert (PACKAGE_DIR / "config" / "fastdds_large_images.xml").is_file()


def test_rviz2_missing_gives_a_clear_message_not_a_failed_launch(tmp_path: Path) -> None:
    actions = _describe(tmp_path, {PACKAGE})["actions"]
    assert "Node" not in actions  # no rviz2 process to fail
    (message,) = actions["LogInfo"]
    assert "rviz2 is not installed" in message.kwargs["msg"]
    assert message.kwargs["condition"].args == (_config("use_rviz"),)
    assert len(actions["LifecycleNode"]) == 1  # the node itself is launched as usual


def test_rviz2_is_an_exec_depend() -> None:
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(PACKAGE_XML).getroot()
    assert "rviz2" in {element.text for element in root.iter("exec_depend")}


def test_rviz_only_when_asked(description) -> None:
    (rviz,) = description["actions"]["Node"]
    assert rviz.kwargs["package"] == "rviz2"
    assert rviz.kwargs["arguments"] == [
        "-d",
        str(description["share"] / "config" / "spatialthinker.rviz"),
    ]
    condition = rviz.kwargs["condition"]
    assert type(condition).__name__ == "IfCondition"
    assert condition.args == (_config("use_rviz"),)


# ---------------------------------------------------------------------------------------------
# RViz config
# ---------------------------------------------------------------------------------------------


def test_target_frame_argument_sets_the_node_s_and_rviz_s_fixed_frame(tmp_path: Path) -> None:
    described = _describe(tmp_path, {PACKAGE, "rviz2"}, {"target_frame": "base_link"})
    (node,) = described["actions"]["LifecycleNode"]
    assert node.kwargs["parameters"][1]["target_frame"] == _ParameterValue(
        "base_link", value_type=str
    )
    (rviz,) = described["actions"]["Node"]
    config = str(described["share"] / "config" / "spatialthinker.rviz")
    assert rviz.kwargs["arguments"] == ["-d", config, "-f", "base_link"]


def test_without_target_frame_the_params_file_s_stays(description) -> None:
    (node,) = description["actions"]["LifecycleNode"]
    assert "target_frame" not in node.kwargs["parameters"][1]


def test_rviz_config_matches_the_node_outputs(node_call) -> None:
    config = yaml.safe_load(RVIZ_FILE.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"
    displays = {d["Class"]: d for d in manager["Displays"]}
    assert {
        "rviz_default_plugins/Grid",
        "rviz_default_plugins/TF",
        "rviz_default_plugins/MarkerArray",
        "rviz_default_plugins/Image",
    } <= set(displays)
    # The node publishes ~/markers and ~/debug_image: /<name>/... in the default namespace.
    node_name = ast.literal_eval(node_call["name"])
    markers = displays["rviz_default_plugins/MarkerArray"]
    assert markers["Topic"]["Value"] == f"/{node_name}/markers"
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == f"/{node_name}/debug_image"
    # The marker namespace shown must be the one markers.py uses by default.
    from spatialthinker_ros.ros.markers import scene_graph_markers

    assert "spatialthinker" in markers["Namespaces"]
    assert scene_graph_markers.__kwdefaults__["namespace"] == "spatialthinker"
    for display in displays.values():
        assert display["Enabled"] is True


def test_node_publishes_the_topics_rviz_shows() -> None:
    published = set()
    for node_file in sorted((PACKAGE_DIR / "spatialthinker_ros" / "ros").glob("node*.py")):
        tree = ast.parse(node_file.read_text(), filename=str(node_file))
        published |= {
            call.args[1].value
            for creator in ("create_publisher", "create_lifecycle_publisher")
            for call in _calls(tree, creator)
            if len(call.args) >= 2 and isinstance(call.args[1], ast.Constant)
        }
    assert {"~/markers", "~/debug_image"} <= published


def test_launch_overrides_do_not_change_the_params_file_defaults(declared) -> None:
    # model and backend from the launch line always win over the params file, so their launch
    # defaults must equal the file's values: a plain launch runs what the shipped file says.
    document = yaml.safe_load(PARAMS_FILE.read_text())
    parameters = next(iter(document.values()))["ros__parameters"]
    for name in ("model", "backend"):
        assert _registry_value(declared[name]["default_value"]) == parameters[name], name
