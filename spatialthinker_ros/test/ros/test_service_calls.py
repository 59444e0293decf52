"""Service calls that survive a lost response (ros/service_calls.py), against a real server.

The lost response itself is Jazzy's Fast DDS dropping a reply when the server has not yet matched
the client (see the module docstring); here a server that answers its first call too late stands
in for it, so the retry path runs every time. The last test runs the race for real: fresh clients
calling a server in its own process at once after discovery, as a planner would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from lifecycle_msgs.srv import GetState
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from spatialthinker_ros.ros import service_calls

SERVICE = f"/service_calls_test_{os.getpid()}/get_state"


@pytest.fixture
def context() -> Iterator[rclpy.Context]:
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def _spun(node: Node, executor: SingleThreadedExecutor | MultiThreadedExecutor) -> threading.Thread:
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    return thread


class SlowFirstServer:
    """A get_state server whose first response comes after ``first_delay`` seconds, as late as
    a lost one for a client that waits less; every response says which call it answers."""

    def __init__(self, context: rclpy.Context, first_delay: float) -> None:
        self.calls = 0
        self.first_delay = first_delay
        self.node = rclpy.create_node("slow_first_server", context=context)
        self.node.create_service(
            GetState, SERVICE, self._serve, callback_group=ReentrantCallbackGroup()
        )
        self.executor = MultiThreadedExecutor(num_threads=2, context=context)
        self.thread = _spun(self.node, self.executor)

    def _serve(self, _request: GetState.Request, response: GetState.Response) -> GetState.Response:
        self.calls += 1
        call = self.calls
        if call == 1:
            time.sleep(self.first_delay)
        response.current_state.label = f"call {call}"
        return response

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(5)
        self.node.destroy_node()


@pytest.fixture
def client_node(context: rclpy.Context) -> Iterator[Node]:
    node = rclpy.create_node("service_calls_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    thread = _spun(node, executor)
    yield node
    executor.shutdown()
    thread.join(5)
    node.destroy_node()


def test_a_call_without_response_is_sent_again_and_the_late_response_dropped(
    context: rclpy.Context, client_node: Node
) -> None:
    server = SlowFirstServer(context, first_delay=3.0)
    try:
        client = client_node.create_client(GetState, SERVICE)
        response = service_calls.call(client, GetState.Request(), timeout=30, attempt_timeout=1.0)
        assert response.current_state.label == "call 2"
        time.sleep(3.0)  # the first call's response arrives now, for a request nobody waits on
        assert server.calls == 2
        # The client still works, and is answered for the new call, not with the stale reply.
        again = service_calls.call(client, GetState.Request(), timeout=30, attempt_timeout=1.0)
        assert again.current_state.label == "call 3"
    finally:
        server.close()


def test_a_call_that_must_not_repeat_is_sent_once_and_times_out_with_the_reason(
    context: rclpy.Context, client_node: Node
) -> None:
    server = SlowFirstServer(context, first_delay=4.0)
    try:
        client = client_node.create_client(GetState, SERVICE)
        with pytest.raises(service_calls.ServiceCallTimeout, match=rf"{SERVICE}.*1 attempt"):
            service_calls.call(client, GetState.Request(), timeout=1.5)
        assert server.calls == 1
    finally:
        server.close()


def test_a_service_that_never_appears_is_named(client_node: Node) -> None:
    client = client_node.create_client(GetState, "/nobody/get_state")
    with pytest.raises(service_calls.ServiceCallTimeout, match="/nobody/get_state not available"):
        service_calls.call(client, GetState.Request(), timeout=0.5, attempt_timeout=0.2)


SERVER = """
import sys, rclpy
from lifecycle_msgs.srv import GetState
rclpy.init()
node = rclpy.create_node("fresh_client_server")
def serve(request, response):
    response.current_state.label = "active"
    return response
node.create_service(GetState, sys.argv[1], serve)
print("ready", flush=True)
rclpy.spin(node)
"""


def test_fresh_clients_calling_at_once_after_discovery_are_all_answered(
    context: rclpy.Context,
) -> None:
    """The race itself: each planner creates a client and calls the moment the service is
    discovered, once, without retrying. With the shipped Fast DDS profile (conftest names it)
    the server waits for the new client's match instead of dropping the response."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, SERVICE], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lost = []
        for i in range(20):
            node = rclpy.create_node(f"fresh_client_{i}", context=context)
            executor = SingleThreadedExecutor(context=context)
            thread = _spun(node, executor)
            try:
                client = node.create_client(GetState, SERVICE)
                response = service_calls.call(client, GetState.Request(), timeout=30)
                assert response.current_state.label == "active"
            except service_calls.ServiceCallTimeout as error:
                lost.append(f"client {i}: {error}")
            finally:
                executor.shutdown()
                thread.join(5)
                node.destroy_node()
        assert not lost, lost
    finally:
        server.terminate()
        server.wait(10)


def test_the_shipped_profile_lets_responses_wait_for_the_match() -> None:
    import xml.etree.ElementTree as ElementTree

    profile = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_images.xml"
    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    # rmw_fastrtps gives a service's response writer the data writer profile named "service".
    writer = ElementTree.parse(profile).getroot().find("p:data_writer[@profile_name='service']", ns)
    assert writer is not None
    blocking = writer.find("p:qos/p:reliability/p:max_blocking_time", ns)
    assert blocking is not None
    seconds = (
        int(blocking.findtext("p:sec", "0", ns))
        + int(blocking.findtext("p:nanosec", "0", ns)) * 1e-9
    )
    # Fast DDS's default is 0.1 s: the race this profile is there to close.
    assert seconds >= 1.0
