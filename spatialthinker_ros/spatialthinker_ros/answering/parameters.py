"""Every parameter of spatialthinker_node: name, default, description, constraints.

One table serves the node (which declares each entry with its description),
config/spatialthinker.yaml (whose keys must match it exactly, tested) and the
README's parameter table (generated from it, tested). ROS-free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spatialthinker_ros.core.backends import BACKEND_NAMES
from spatialthinker_ros.core.camera import MAX_DEPTH_M
from spatialthinker_ros.core.gravity import UP_POLICIES
from spatialthinker_ros.core.model_frame import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: Parameter name (dots for groups, e.g. ``openai.base_url``).
        default: Default value; its Python type is the parameter's type.
        description: What it does, shown by ``ros2 param describe``.
        choices: Allowed values for a string parameter (empty: any).
        minimum: Lowest allowed value for a number (None: unbounded).
        maximum: Highest allowed value for a number (None: unbounded). Every float must also
            be finite: NaN passes no comparison, so a bare ``value < minimum`` lets it through.
        read_only: True when it only takes effect at configure (model, backend...).
        zero_means_off: 0 is allowed too, besides ``minimum``..``maximum`` (e.g. ``rate_hz``).
    """

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    read_only: bool = False
    zero_means_off: bool = False

    def range_text(self) -> str:
        """The allowed range in words ('' for a parameter without one)."""
        if self.minimum is None and self.maximum is None:
            return ""
        low = "" if self.minimum is None else _number(self.minimum)
        high = "" if self.maximum is None else _number(self.maximum)
        text = f"{low} to {high}" if low and high else (f">= {low}" if low else f"<= {high}")
        return f"Range: {'0 (off) or ' if self.zero_means_off else ''}{text}."


def _number(value: float) -> str:
    """A bound as people write it: 16777216, not 1.67772e+07; 0.1, not 0.1000."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# Longest deadline a request may ask for (an hour: far beyond any answer's seconds).
MAX_TIMEOUT_S = 3600.0
# Largest image area the model may be given (4096 x 4096).
MAX_IMAGE_PIXELS = 4096 * 4096


PARAMETERS: tuple[ParamSpec, ...] = (
    # Lifecycle
    ParamSpec(
        "autostart", True, "Configure and activate on start-up, so a plain launch just works."
    ),
    # Model and backend
    ParamSpec(
        "backend",
        "transformers",
        "Inference backend: 'transformers' runs the model in this process; 'openai' calls an"
        " OpenAI-compatible server (vLLM, SGLang) shared by several robots.",
        choices=BACKEND_NAMES,
        read_only=True,
    ),
    ParamSpec(
        "model",
        "OX-PIXL/SpatialThinker-7B",
        "Hub id or local directory (transformers backend), or the served model name (openai).",
        read_only=True,
    ),
    ParamSpec(
        "device",
        "auto",
        "transformers backend: 'auto' (first CUDA GPU, else CPU), 'cuda:N' or 'cpu'.",
        read_only=True,
    ),
    ParamSpec(
        "dtype",
        "auto",
        "transformers backend: 'auto' (bfloat16 on CUDA, float32 on CPU), 'bfloat16',"
        " 'float16' or 'float32'.",
        choices=("auto", "bfloat16", "float16", "float32"),
        read_only=True,
    ),
    ParamSpec(
        "attn_implementation",
        "auto",
        "transformers backend: 'auto' (flash_attention_2 when installed, else sdpa), 'sdpa',"
        " 'flash_attention_2' or 'eager'.",
        choices=("auto", "sdpa", "flash_attention_2", "eager"),
        read_only=True,
    ),
    ParamSpec(
        "max_new_tokens",
        1024,
        "Most tokens the model may write per answer.",
        minimum=16,
        maximum=32768,
        read_only=True,
    ),
    ParamSpec(
        "stream",
        True,
        "Read the model's output while it is written: the scene graph (with 3D) is published"
        " on ~/scene_graph and in the action feedback as soon as </scene> is written, the"
        " feedback shows the stage and the text so far, and a cancel closes the openai stream."
        " false: one whole response (servers that cannot stream).",
        read_only=True,
    ),
    ParamSpec(
        "openai.base_url",
        "http://localhost:8000/v1",
        "openai backend: base URL of the OpenAI-compatible server.",
        read_only=True,
    ),
    ParamSpec(
        "openai.api_key_env",
        "OPENAI_API_KEY",
        "openai backend: name of the environment variable holding the API key (never the key).",
        read_only=True,
    ),
    ParamSpec(
        "openai.timeout",
        120.0,
        "openai backend: per-request timeout, seconds.",
        minimum=0.1,
        maximum=MAX_TIMEOUT_S,
        read_only=True,
    ),
    ParamSpec(
        "openai.max_retries",
        2,
        "openai backend: retries on connection errors and 5xx (with backoff).",
        minimum=0,
        maximum=10,
        read_only=True,
    ),
    ParamSpec(
        "openai.max_in_flight",
        4,
        "openai backend: requests sent to the server at once.",
        minimum=1,
        maximum=64,
        read_only=True,
    ),
    ParamSpec(
        "openai.image_format",
        "jpeg",
        "openai backend: how the image travels in the data URL.",
        choices=("jpeg", "png"),
        read_only=True,
    ),
    ParamSpec(
        "openai.jpeg_quality",
        90,
        "openai backend: JPEG quality.",
        minimum=1,
        maximum=100,
        read_only=True,
    ),
    # Model frame
    ParamSpec(
        "coordinate_policy",
        "resize",
        "'resize': the node resizes each frame to the size the model's processor would use and"
        " states that size (boxes exact); 'native': state the camera size and let the processor"
        " resize within min_pixels..max_pixels. 'native' is the authors' evaluation setup only"
        " while those bounds leave the frame alone (they used the checkpoint's 3136..12845056: a"
        " 1920x1080 frame went in at 1932x1092; with the default max_pixels it goes in at"
        " 1316x728); the node warns once, in the log and /diagnostics, when the size it states"
        " is not the size the model sees.",
        choices=("resize", "native"),
        read_only=True,
    ),
    ParamSpec(
        "min_pixels",
        DEFAULT_MIN_PIXELS,
        "Smallest image area given to the model (smaller frames are scaled up); at most"
        " max_pixels.",
        minimum=3136,
        maximum=MAX_IMAGE_PIXELS,
        read_only=True,
    ),
    ParamSpec(
        "max_pixels",
        DEFAULT_MAX_PIXELS,
        "Largest image area given to the model (larger frames are scaled down; fewer pixels,"
        " fewer visual tokens, faster answers).",
        minimum=3136,
        maximum=MAX_IMAGE_PIXELS,
        read_only=True,
    ),
    # Queue
    ParamSpec(
        "max_queue_size",
        16,
        "Requests waiting for the model; further requests are rejected at once with a reason.",
        minimum=1,
        maximum=1000,
        read_only=True,
    ),
    ParamSpec(
        "max_batch_size",
        4,
        "Pending requests answered together in one model call.",
        minimum=1,
        maximum=64,
        read_only=True,
    ),
    ParamSpec(
        "request_timeout",
        60.0,
        "Seconds before an unanswered request fails (requests may pass their own).",
        minimum=0.1,
        maximum=MAX_TIMEOUT_S,
    ),
    # Inputs
    ParamSpec(
        "cameras",
        [],
        "Names of the cameras this node serves, e.g. ['front', 'wrist']: each has its inputs"
        " under its name ('front/image', 'front/depth', 'front/camera_info', remappable), its"
        " own frame pairing, diagnostics, markers and debug image, and may override"
        " <name>.depth.scale, <name>.image_transport, <name>.depth_transport, <name>.sync_slop"
        " and <name>.sync_wait; one model serves them all. [] = one camera on 'image', 'depth'"
        " and 'camera_info'. Set at start-up (the params file); fixed for the node's life.",
    ),
    ParamSpec(
        "image_transport",
        "raw",
        "'raw': subscribe to 'image' (sensor_msgs/Image); 'compressed': subscribe to"
        " 'image/compressed' (sensor_msgs/CompressedImage, jpeg or png).",
        choices=("raw", "compressed"),
        read_only=True,
    ),
    ParamSpec(
        "depth_transport",
        "raw",
        "'raw': subscribe to 'depth' (sensor_msgs/Image, 16UC1/32FC1); 'compressedDepth':"
        " subscribe to 'depth/compressedDepth' (sensor_msgs/CompressedImage from"
        " image_transport's compressed_depth plugin, PNG; common over Wi-Fi).",
        choices=("raw", "compressedDepth"),
        read_only=True,
    ),
    ParamSpec(
        "max_image_size",
        4096,
        "Largest width and height (pixels) of a compressed colour frame; a larger one is"
        " refused from its header before decoding (a few hundred kB of PNG can claim"
        " gigabytes of pixels).",
        minimum=16,
        maximum=65535,
    ),
    ParamSpec(
        "use_depth",
        True,
        "Subscribe to 'depth' (16UC1 mm or 32FC1 m, registered to the colour image) and"
        " 'camera_info' and lift boxes to 3D; false answers in 2D only.",
        read_only=True,
    ),
    ParamSpec(
        "qos_reliability",
        "best_effort",
        "Reliability of the input subscriptions: 'best_effort' (sensor data; matches any"
        " publisher) or 'reliable' (only matches reliable publishers).",
        choices=("best_effort", "reliable"),
        read_only=True,
    ),
    ParamSpec(
        "qos_depth",
        2,
        "History depth of the input subscriptions.",
        minimum=1,
        maximum=100,
        read_only=True,
    ),
    ParamSpec(
        "max_frame_age",
        1.0,
        "Oldest colour frame a request may use, seconds (requests may pass their own).",
        minimum=0.001,
        maximum=MAX_TIMEOUT_S,
    ),
    ParamSpec(
        "sync_slop",
        0.05,
        "Largest stamp difference between the colour frame and the depth frame, seconds.",
        minimum=0.0,
        maximum=10.0,
    ),
    ParamSpec(
        "sync_wait",
        0.1,
        "Longest a request waits, seconds, for the depth frame of the newest colour frame when"
        " it is due (depth published after its colour, its lag measured), rather than answer"
        " from the newest older colour/depth pair; the wait holds no executor thread. 0: never"
        " wait.",
        minimum=0.0,
        maximum=1.0,
    ),
    ParamSpec(
        "future_stamp_tolerance",
        0.5,
        "How far a frame's stamp may lie ahead of the node's clock before it is refused.",
        minimum=0.0,
        maximum=MAX_TIMEOUT_S,
    ),
    ParamSpec(
        "frame_id",
        "",
        "Frame for the outputs when the camera leaves header.frame_id empty ('' = use the"
        " camera's).",
    ),
    # 3D lifting
    ParamSpec(
        "depth.shrink",
        0.1,
        "Box-edge margin, a fraction of the box size: depth samples count towards the"
        " object's depth from 0 at the box edge to fully at twice this inside.",
        minimum=0.0,
        maximum=0.45,
    ),
    ParamSpec(
        "depth.min_depth",
        0.1,
        "Nearest depth used, metres; below depth.max_depth.",
        minimum=0.001,
        maximum=MAX_DEPTH_M,
    ),
    ParamSpec(
        "depth.max_depth", 10.0, "Farthest depth used, metres.", minimum=0.01, maximum=MAX_DEPTH_M
    ),
    ParamSpec(
        "depth.min_valid_pixels",
        20,
        "Fewest valid depth pixels for a 3D estimate; fewer gives no 3D with a reason.",
        minimum=1,
        maximum=1_000_000,
    ),
    ParamSpec(
        "depth.min_size",
        0.02,
        "Smallest reported object extent, metres.",
        minimum=0.0,
        maximum=10.0,
    ),
    ParamSpec(
        "depth.scale",
        0.001,
        "Metres per unit of 16-bit depth (16UC1/mono16): 0.001 for millimetres, 0.0002 for"
        " TUM-style 1/5000 m, 0.0001 for 0.1 mm. 32FC1 depth is metres and ignores it.",
        minimum=1e-7,
        maximum=1.0,
    ),
    ParamSpec(
        "camera.rectified",
        False,
        "true: the colour/depth images are rectified (image_rect*): intrinsics from"
        " camera_info P, distortion D ignored. false: they are as the sensor took them"
        " (image_raw): K is used and a non-zero D is undone before back-projection.",
    ),
    # Depth-verified relations
    ParamSpec(
        "relations.up",
        "tf",
        "Where up is for checking above/below/on: 'tf' the z of gravity_frame from TF at the"
        " image's stamp, else as 'measured'; 'measured' from the depth's floors and"
        " table tops, searched within 45 deg of the camera's -y (the camera's -y when the"
        " frame shows too little of them); 'level': the camera's -y as it is; 'down': a"
        " camera looking straight down, searched around its -z.",
        choices=UP_POLICIES,
    ),
    # Robot frames (TF)
    ParamSpec(
        "target_frame",
        "",
        "TF frame to report every answer's 3D in (objects, up vector, markers), e.g."
        " 'base_link' or 'map', transformed at the colour image's stamp; a query's own"
        " target_frame overrides it. '' = the camera's optical frame. Without the transform the"
        " answer comes in the camera frame with a warning naming TF's reason.",
    ),
    ParamSpec(
        "gravity_frame",
        "",
        "A gravity-aligned TF frame (z up, REP 103: base_link on flat ground, odom, map) whose z"
        " is up for relations.up 'tf'. '' = none: up is measured from the depth.",
    ),
    ParamSpec(
        "tf_timeout",
        0.2,
        "Seconds a request waits for the transform at its image's stamp (to target_frame and"
        " gravity_frame) before answering without it; the wait holds no executor thread.",
        minimum=0.0,
        maximum=10.0,
    ),
    # Standard detections (vision_msgs)
    ParamSpec(
        "detections.publish_3d",
        True,
        "Publish ~/detections_3d (vision_msgs/Detection3DArray: objects with 3D, in the scene"
        " graph's frame) for every answer and streamed scene graph, while subscribed.",
    ),
    ParamSpec(
        "detections.publish_2d",
        True,
        "Publish ~/detections_2d (vision_msgs/Detection2DArray: every object's pixel box, in the"
        " image's frame) for every answer and streamed scene graph, while subscribed.",
    ),
    # Confidence
    ParamSpec(
        "confidence_temperature",
        1.0,
        "Temperature T applied to each answer's option probabilities (read from the model's own"
        " tokens): p_i proportional to exp(log p_i / T); T > 1 flattens, T < 1 sharpens, the"
        " choice never changes. 1: the model's own probabilities, which are not calibrated; set"
        " the value `spatialthinker eval --fit-temperature` fits on labelled data like yours.",
        minimum=0.05,
        maximum=20.0,
    ),
    ParamSpec(
        "min_confidence",
        0.0,
        "A multiple-choice answer whose confidence is below this (or could not be measured)"
        " gets a 'low confidence' warning; it is still returned. 0: off.",
        minimum=0.0,
        maximum=1.0,
    ),
    # Continuous mode
    ParamSpec(
        "rate_hz",
        0.0,
        "Continuous mode: ask 'continuous_question' on the latest frame at this rate"
        " (0 = off). Runs at low priority behind on-demand queries.",
        minimum=0.001,
        maximum=30.0,
        zero_means_off=True,
    ),
    ParamSpec("continuous_question", "", "Continuous mode: the standing question."),
    ParamSpec(
        "continuous_options",
        "",
        "Continuous mode: the options, separated by '|' (e.g. 'left|right'); '' for none.",
    ),
    ParamSpec(
        "continuous_cameras",
        "",
        "Continuous mode: the cameras asked in turn, of 'cameras', separated by ','"
        " (e.g. 'front,wrist'); '' = every camera.",
    ),
    # Limits and outputs
    ParamSpec(
        "max_question_chars",
        2000,
        "Longest accepted question; longer questions are refused with a reason.",
        minimum=1,
        maximum=100_000,
    ),
    ParamSpec(
        "question_rate_limit",
        10.0,
        "Most questions per second taken from the ~/question topic (bursts up to one second's"
        " worth); the rest are dropped and counted in /diagnostics, so a flooding publisher"
        " cannot starve the service and action callers.",
        minimum=0.1,
        maximum=1000.0,
    ),
    ParamSpec(
        "diagnostics_period",
        1.0,
        "Seconds between /diagnostics messages.",
        minimum=0.1,
        maximum=60.0,
        read_only=True,
    ),
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}

# Most cameras one node serves (a robot carries two to four).
MAX_CAMERAS = 16
# A camera's name: a topic-name token (its inputs live under it) and a parameter prefix.
_CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# What a per-camera override's value is when it inherits the node's parameter.
INHERIT: dict[type, Any] = {float: -1.0, str: ""}

#: What each camera of ``cameras`` may set for itself, as ``<camera>.<name>`` (read on
#: configure); the default inherits the node's parameter of the same name.
CAMERA_PARAMETERS: tuple[ParamSpec, ...] = tuple(
    ParamSpec(
        name,
        INHERIT[type(PARAMETERS_BY_NAME[name].default)],
        f"This camera's {name}; {'-1' if kind is float else chr(39) * 2} = the node's. Set"
        " at start-up.",
        choices=("", *PARAMETERS_BY_NAME[name].choices) if kind is str else (),
    )
    for name, kind in (
        ("depth.scale", float),
        ("image_transport", str),
        ("depth_transport", str),
        ("sync_slop", float),
        ("sync_wait", float),
    )
)
CAMERA_PARAMETERS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in CAMERA_PARAMETERS}


def check_cameras(names: Any) -> str | None:
    """Why ``names`` is not a usable ``cameras`` value; None when it is."""
    if not isinstance(names, list | tuple):
        return f"cameras must be a list of names, got {names!r}"
    if len(names) > MAX_CAMERAS:
        return f"cameras lists {len(names)} cameras; at most {MAX_CAMERAS}"
    for name in names:
        if not isinstance(name, str) or not _CAMERA_NAME.fullmatch(name):
            return (
                f"camera name {name!r} is not a name (a letter, then letters, digits or '_':"
                " it becomes a topic namespace and a parameter prefix)"
            )
    if len(set(names)) != len(names):
        return f"cameras lists a name twice: {list(names)}"
    return None


def split_camera_list(text: str) -> list[str]:
    """Camera names written as ``front,wrist``, ``front wrist`` or ``[front, wrist]``; '' gives
    none."""
    return text.replace("[", " ").replace("]", " ").replace(",", " ").split()


def check_continuous_cameras(text: str, cameras: Sequence[str]) -> str | None:
    """Why ``continuous_cameras`` (``text``) names a camera the node does not serve; None when
    every name is one of ``cameras``."""
    unknown = [name for name in split_camera_list(text) if name not in cameras]
    if not unknown:
        return None
    served = f"the cameras are {', '.join(cameras)}" if cameras else "'cameras' is empty"
    return f"continuous_cameras names {', '.join(map(repr, unknown))}: {served}"


def validate_camera_value(name: str, value: Any) -> str | None:
    """Check a per-camera override (``name`` without the camera prefix): the inheriting value,
    or one the node's parameter of that name accepts."""
    spec = CAMERA_PARAMETERS_BY_NAME[name]
    if value == spec.default:
        return None
    return validate(name, value)


def camera_values(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The node's parameter ``values`` as one camera sees them: each of its ``overrides``
    (by name without the prefix) that does not inherit replaces the node's value."""
    merged = dict(values)
    for name, value in overrides.items():
        if value != CAMERA_PARAMETERS_BY_NAME[name].default:
            merged[name] = value
    return merged


def validate(name: str, value: Any) -> str | None:
    """Check a value against its spec.

    Args:
        name: Parameter name.
        value: Proposed value.

    Returns:
        None when acceptable, else the reason it is not.
    """
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return None
    if name == "cameras":
        return check_cameras(value)
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)} (got {value!r})"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if not math.isfinite(value):
        return f"{name} must be a finite number (got {value!r})"
    if spec.zero_means_off and value == 0:
        return None
    too_low = spec.minimum is not None and value < spec.minimum
    too_high = spec.maximum is not None and value > spec.maximum
    if too_low or too_high:
        if spec.minimum is not None and spec.maximum is not None:
            allowed = f"between {_number(spec.minimum)} and {_number(spec.maximum)}"
        else:
            allowed = f">= {_number(spec.minimum)}" if too_low else f"<= {_number(spec.maximum)}"
        off = "0 (off) or " if spec.zero_means_off else ""
        return f"{name} must be {off}{allowed} (got {value!r})"
    return None


# Pairs that must keep their order: (lower, upper, strictly below).
ORDERED_PAIRS = (("depth.min_depth", "depth.max_depth", True), ("min_pixels", "max_pixels", False))


def validate_all(values: Mapping[str, Any]) -> str | None:
    """Check every value and the pairs that depend on each other.

    Args:
        values: Every parameter's value (the current ones with any proposed changes applied).

    Returns:
        None when acceptable, else the first reason it is not.
    """
    for name, value in values.items():
        reason = validate(name, value)
        if reason:
            return reason
    if "continuous_cameras" in values:
        reason = check_continuous_cameras(
            str(values["continuous_cameras"]), list(values.get("cameras") or [])
        )
        if reason:
            return reason
    for lower, upper, strict in ORDERED_PAIRS:
        if lower in values and upper in values:
            low, high = values[lower], values[upper]
            if low >= high if strict else low > high:
                relation = "below" if strict else "at most"
                return f"{lower} ({low:g}) must be {relation} {upper} ({high:g})"
    return None


def describe(name: str) -> str:
    """A parameter's description as ``ros2 param describe`` shows it: what it does, its
    choices or range, and whether it applies only on configure."""
    spec = PARAMETERS_BY_NAME[name]
    text = spec.description
    if spec.choices:
        text += f" Choices: {', '.join(spec.choices)}."
    if spec.range_text():
        text += f" {spec.range_text()}"
    if spec.read_only:
        text += " Applied on configure."
    return text


def split_options(text: str) -> list[str]:
    """Split a '|'-separated option string; '' gives no options."""
    return [part.strip() for part in text.split("|")] if text.strip() else []
