"""Run spatialthinker_node as a real subprocess and play camera and planner around it.

The node runs exactly as a robot runs it (``python -m spatialthinker_ros.ros.node
--ros-args --params-file ...``); this process publishes the synthetic RGB-D
scene at a steady rate, calls the node's service and action, and records what
the node publishes. Traffic stays on loopback in this run's ROS domain
(conftest sets ROS_AUTOMATIC_DISCOVERY_RANGE and ROS_DOMAIN_ID).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.action import ActionClient
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_msgs.msg import SceneGraph, SpatialAnswer
from spatialthinker_msgs.srv import Query
from spatialthinker_ros.core.images import numpy_to_image
from spatialthinker_ros.core.synthetic_scene import SyntheticScene, demo_scene
from spatialthinker_ros.tools import node_process

NODE = "/spatialthinker"
# The scene every end-to-end test shows the node (rendered once per process).
DEMO_SCENE = demo_scene()
# Which synthetic objects the scripted model "sees", with the ids it writes.
SCRIPTED_OBJECTS = {"red_box.1": 0, "green_box.1": 1, "white_pillar.1": 6}


def camera_info_for(scene: SyntheticScene, frame_id: str) -> CameraInfo:
    """CameraInfo of the scene's colour camera."""
    k = scene.intrinsics
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = k.width, k.height
    info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    return info


# What the scripted model says about SCRIPTED_OBJECTS by default (true of the demo scene).
SCRIPTED_RELATIONS = (
    ("red_box.1", "in front of", "green_box.1"),
    ("green_box.1", "left of", "white_pillar.1"),
)
SCRIPTED_THINK = "The red box is nearest, so it is in front of the green box."


def scripted_reply(
    scene: SyntheticScene,
    relations: tuple[tuple[str, str, str], ...] = SCRIPTED_RELATIONS,
    think: str = SCRIPTED_THINK,
) -> Callable[[dict], str]:
    """A scripted model: answers in SpatialThinker format with boxes framing the objects.

    The boxes are written in the frame the prompt states (read from its
    ``Image size: W x H`` line), as the real model does; ``relations`` and ``think`` are what
    it claims about them.
    """
    boxes = {object_id: scene.objects[i].bbox for object_id, i in SCRIPTED_OBJECTS.items()}
    return spatialthinker_reply(
        boxes,
        (scene.rgb.shape[1], scene.rgb.shape[0]),
        relations,
        think,
        observe="A red box close to the camera, a green box and a white pillar.",
        answer="(A) in front",
    )


def spatialthinker_reply(
    boxes: Mapping[str, tuple[float, float, float, float]],
    camera_size: tuple[int, int],
    relations: Iterable[tuple[str, str, str]],
    think: str,
    observe: str,
    answer: str,
) -> Callable[[dict], str]:
    """A scripted model answering in SpatialThinker format about any frame.

    Args:
        boxes: Object id -> ``(x0, y0, x1, y1)`` in camera pixels of a ``camera_size`` image;
            each reply states them in the frame its prompt states (its ``Image size: W x H``
            line), rounded to whole pixels there as the real model writes them.
        camera_size: ``(width, height)`` of the camera image the boxes are drawn on.
        relations: ``(subject, predicate, object)`` claims.
        think: The reasoning text.
        observe: The observation text.
        answer: The answer text, e.g. ``"(A) in front"``.
    """
    claims = ", ".join(
        f'{{"subject": "{s}", "predicate": "{p}", "object": "{o}"}}' for s, p, o in relations
    )

    def reply(body: dict[str, Any]) -> str:
        text = " ".join(
            part.get("text", "")
            for message in body.get("messages", [])
            for part in (message.get("content") if isinstance(message.get("content"), list) else [])
            if isinstance(part, dict)
        )
        match = re.search(r"Image size: (\d+) x (\d+)", text)
        width, height = (int(match[1]), int(match[2])) if match else camera_size
        sx, sy = width / camera_size[0], height / camera_size[1]
        objects = []
        for object_id, (x1, y1, x2, y2) in boxes.items():
            box = [round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)]
            objects.append(f'{{"id": "{object_id}", "bbox": {box}}}')
        scene_json = '{"objects": [' + ", ".join(objects) + '], "relationships": [' + claims + "]}"
        return (
            f"<observe> {observe} </observe>\n"
            f"<scene>\n{scene_json}\n</scene>\n"
            f"<think> {think} </think>\n"
            f"<answer> {answer} </answer>"
        )

    return reply


# Where the rig's camera publishes (the node's inputs are remapped here by default).
TEST_REMAPS = {
    "image": "/test_cam/image",
    "depth": "/test_cam/depth",
    "camera_info": "/test_cam/camera_info",
}


class NodeProcess(node_process.NodeProcess):
    """spatialthinker_node in a subprocess with a params file, listening to the rig's camera."""

    def __init__(
        self,
        params: dict[str, Any],
        remaps: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(params, remaps or TEST_REMAPS, env)


def openai_params(base_url: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of a node on the openai backend as the end-to-end tests run it, ``extra``
    added or replacing (e.g. ``{"model": "faults", "openai.timeout": 1.5}``)."""
    params: dict[str, Any] = {
        "backend": "openai",
        "model": "test",
        "openai.base_url": base_url,
        "openai.max_retries": 0,
        "request_timeout": 20.0,
        # Generous: a loaded 2-core CI machine can stall the test camera for a moment.
        "max_frame_age": 3.0,
        "diagnostics_period": 0.2,
    }
    params.update(extra or {})
    return params


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for a server started later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_node(
    rig: Rig,
    params: dict[str, Any],
    remaps: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[NodeProcess]:
    """Start the node, wait until it is active, and on exit check that it stops cleanly.

    Raises:
        AssertionError: With the node's log, when it never becomes active, dies while in
            use, or does not exit with status 0.
    """
    process = NodeProcess(params, remaps, env)
    try:
        rig.wait_for_node(timeout)
    except AssertionError:
        process.stop()
        raise AssertionError(process.log()) from None
    try:
        yield process
        assert process.process.poll() is None, "node died:\n" + process.log()[-4000:]
    finally:
        code = process.stop()
    assert code == 0, process.log()


def wait_all(futures: list[Any], wait: float) -> list[Any]:
    """Results of rclpy futures spun elsewhere (the rig's or a side node's executor); None for
    any not done within ``wait`` seconds in all."""
    done = threading.Semaphore(0)
    for future in futures:
        future.add_done_callback(lambda _f: done.release())
    deadline = time.monotonic() + wait
    for _ in futures:
        if not done.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            break
    return [f.result() if f.done() else None for f in futures]


def still_serving(rig: Rig, node: NodeProcess, wait: float = 30.0) -> None:
    """After a bad input or a fault: with a healthy camera, the node (still running) answers
    a good request, in 3D."""
    rig.reset_camera()
    rig.settle()
    assert node.process.poll() is None, "node died:\n" + node.log()[-4000:]
    # The bad frames may still be the newest the node holds while good ones are on their way
    # (a loaded machine delays delivery): good frames must be answered within a few seconds.
    deadline = time.monotonic() + 10.0
    response = rig.query(wait=wait)
    while not (response.success and response.answer.scene_graph.objects[0].has_3d):
        if time.monotonic() > deadline:
            break
        rig.settle()
        response = rig.query(wait=wait)
    assert response.success, f"node stopped serving: {response.message}"
    obj = response.answer.scene_graph.objects[0]
    assert obj.has_3d, obj.no_3d_reason


class Rig:
    """Camera + planner + observer in this process, talking to the node over DDS."""

    def __init__(self, scene: SyntheticScene | None = None, rate_hz: float = 10.0) -> None:
        self.scene = scene or demo_scene()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("test_rig", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.frame_id = "camera_color_optical_frame"
        self._image_pub = self.node.create_publisher(
            Image, "/test_cam/image", qos_profile_sensor_data
        )
        self._depth_pub = self.node.create_publisher(
            Image, "/test_cam/depth", qos_profile_sensor_data
        )
        self._info_pub = self.node.create_publisher(
            CameraInfo, "/test_cam/camera_info", qos_profile_sensor_data
        )
        self.query_client = self.node.create_client(Query, f"{NODE}/query")
        self.action_client = ActionClient(self.node, QueryAction, f"{NODE}/query")
        self.change_state = self.node.create_client(ChangeState, f"{NODE}/change_state")
        self.get_state = self.node.create_client(GetState, f"{NODE}/get_state")
        self.question_pub = self.node.create_publisher(String, f"{NODE}/question", 10)
        self.answers: list[SpatialAnswer] = []
        self.graphs: list[SceneGraph] = []
        self.markers: list[MarkerArray] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.debug_images: list[Image] = []
        self._lock = threading.Lock()
        self.node.create_subscription(SpatialAnswer, f"{NODE}/answer", self._keep(self.answers), 10)
        self.node.create_subscription(
            SceneGraph, f"{NODE}/scene_graph", self._keep(self.graphs), 10
        )
        self.node.create_subscription(MarkerArray, f"{NODE}/markers", self._keep(self.markers), 10)
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._keep(self.diagnostics), 10
        )
        self.node.create_subscription(
            Image, f"{NODE}/debug_image", self._keep(self.debug_images), 2
        )
        # What the camera sends; tests change these to inject bad input.
        self.colour_override: Callable[[], Image] | None = None
        self.depth_override: Callable[[], Image] | None = None
        self.send_depth = True
        self.send_info = True
        self.info_override: CameraInfo | None = None
        self.stamp_offset = 0.0
        self.camera_on = True
        self.published = 0
        self._depth_msg = numpy_to_image(self.scene.depth_mm, "16UC1")
        self._colour_msg = numpy_to_image(self.scene.rgb, "rgb8")
        self._info = camera_info_for(self.scene, self.frame_id)
        self.node.create_timer(1.0 / rate_hz, self._publish_frame)
        # What escaped a callback of the rig's executor (named when a wait runs out).
        self.spin_errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        """Spin the rig until close; an exception raised inside the executor is kept and
        spinning goes on (otherwise the camera and every later response would stop silently,
        and each later test would fail on a timeout that does not name the cause)."""
        while True:
            try:
                self.executor.spin()
                return
            except ExternalShutdownException:
                return
            except Exception as error:  # kept, and named by wait_future
                self.spin_errors.append(error)

    @contextlib.contextmanager
    def side_node(self, name: str) -> Iterator[Node]:
        """A node of the rig's context on its own executor thread, for the publishers, timers
        and clients a test adds and removes.

        Why not on the rig's node: destroying an entity while the rig's executor waits on it
        (a publisher's QoS event handles are in the wait set) can raise inside the spin and
        stop the camera. The side node is destroyed only after its executor has stopped.
        """
        node = rclpy.create_node(name, context=self.context)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        try:
            yield node
        finally:
            executor.shutdown()
            thread.join(5)
            node.destroy_node()

    def _keep(self, store: list) -> Callable[[Any], None]:
        def keep(msg: Any) -> None:
            with self._lock:
                store.append(msg)

        return keep

    def _publish_frame(self) -> None:
        if not self.camera_on:
            return
        now = self.node.get_clock().now().nanoseconds * 1e-9 + self.stamp_offset
        sec = int(np.floor(now))
        stamp = {"sec": sec, "nanosec": int((now - sec) * 1e9)}

        def stamped(msg: Any) -> Any:
            msg.header.stamp.sec, msg.header.stamp.nanosec = stamp["sec"], stamp["nanosec"]
            msg.header.frame_id = self.frame_id
            return msg

        colour = self.colour_override() if self.colour_override else self._colour_msg
        self._image_pub.publish(stamped(colour))
        if self.send_depth:
            depth = self.depth_override() if self.depth_override else self._depth_msg
            self._depth_pub.publish(stamped(depth))
        if self.send_info:
            self._info_pub.publish(stamped(self.info_override or self._info))
        self.published += 1  # frames sent with the current setting (see settle)

    # ----------------------------------------------------------------- planner

    def wait_for_node(self, timeout: float = 60.0) -> None:
        """Wait until the node's query service is up and it is active."""
        assert self.query_client.wait_for_service(timeout_sec=timeout), "node never came up"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lifecycle_state() == "active":
                return
            time.sleep(0.2)
        raise AssertionError(f"node not active after {timeout} s: {self.lifecycle_state()}")

    def query(
        self,
        question: str = "Is the red box in front of or behind the green box?",
        options: list[str] | None = None,
        timeout: float = 0.0,
        max_frame_age: float = 0.0,
        wait: float = 60.0,
    ) -> Query.Response:
        """Call ~/query and wait for its response."""
        request = Query.Request(
            question=question,
            options=["in front", "behind"] if options is None else options,
            timeout=timeout,
            max_frame_age=max_frame_age,
        )
        future = self.query_client.call_async(request)
        return self.wait_future(future, wait)

    def wait_future(self, future: Any, wait: float) -> Any:
        """Block until an rclpy future (spun by the rig's or a side node's executor) is done."""
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(wait) and not future.done():
            raise AssertionError(
                f"no response within {wait} s"
                + (
                    f" (the rig's executor raised: {self.spin_errors!r})"
                    if self.spin_errors
                    else ""
                )
            )
        return future.result()

    def action(
        self, goal: QueryAction.Goal, wait: float = 30.0, accept_wait: float | None = None
    ) -> QueryAction.Result:
        """Send one ~/query action goal and wait for its result (every wait bounded: the
        goal's acceptance ``accept_wait``, by default ``wait``, and its result ``wait``)."""
        assert self.action_client.wait_for_server(timeout_sec=10.0)
        send = self.action_client.send_goal_async(goal)
        handle = self.wait_future(send, wait if accept_wait is None else accept_wait)
        assert handle.accepted, "goal rejected instead of answered with a reason"
        return self.wait_future(handle.get_result_async(), wait).result

    def transition(self, transition_id: int) -> bool:
        """Ask the node for a lifecycle transition; True when it succeeded."""
        assert self.change_state.wait_for_service(timeout_sec=10.0)
        future = self.change_state.call_async(
            ChangeState.Request(transition=Transition(id=transition_id))
        )
        return bool(self.wait_future(future, 120.0).success)

    def lifecycle_state(self) -> str:
        if not self.get_state.wait_for_service(timeout_sec=10.0):
            return "unknown"
        future = self.get_state.call_async(GetState.Request())
        return self.wait_future(future, 10.0).current_state.label

    def latest(self, store: list, predicate: Callable[[Any], bool], wait: float = 10.0) -> Any:
        """Wait for a received message that satisfies ``predicate``; the newest one."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._lock:
                found = [m for m in store if predicate(m)]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError("expected message never arrived")

    def settle(self, seconds: float = 0.5) -> None:
        """Let a few frames of the current camera setting reach the node: ``seconds``, and at
        least three publications of the camera (a loaded machine can hold back the rig's own
        timer, and then a bare sleep ends before anything new was sent)."""
        start = self.published
        deadline = time.monotonic() + 10.0
        time.sleep(seconds)
        while self.camera_on and self.published < start + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # the last one's way over loopback

    def reset_camera(self) -> None:
        """Back to a healthy camera: the scene's frames, depth and camera_info, stamped now."""
        self.colour_override = self.depth_override = self.info_override = None
        self.send_depth = self.send_info = self.camera_on = True
        self.stamp_offset = 0.0

    def engine_status(
        self, predicate: Callable[[Any], bool], after: int = 0, wait: float = 10.0
    ) -> Any:
        """The newest engine DiagnosticStatus satisfying ``predicate``, among the /diagnostics
        arrays received after the first ``after`` (bounded wait)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._lock:
                arrays = self.diagnostics[after:]
            for array in reversed(arrays):
                for status in array.status:
                    if status.name.endswith("engine") and predicate(status):
                        return status
            time.sleep(0.05)
        raise AssertionError(f"no engine diagnostics like that within {wait} s")

    def close(self) -> None:
        self.executor.shutdown()
        self.action_client.destroy()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5)
