"""Load, parameters and lifecycle through the running node (hardening round 2, issue 17): what
an adversarial probe broke.

- Bursts: 34 separate clients calling ``~/query`` at the same moment and 20 action goals sent at
  once must each end in an answer or a refusal with a reason (the default service QoS lost most
  of them), and calls that wait must not hold executor threads: while more calls wait than the
  old executor had threads, lifecycle ``get_state`` and ``/diagnostics`` are still served.
- Parameters: ``rate_hz`` 1e-10 (killed the node) and inf (a zero-period timer), NaN and
  out-of-range values, runtime changes that used to be accepted and ignored, and a bad value at
  start-up (the lifecycle said "unconfigured" while the node answered as active).
- A failure inside on_activate leaves the node inactive, and configure retries build no second
  engine (in-process, with the failure injected).
- A ``~/question`` flood is rate-limited and counted in ``/diagnostics``.
- SIGINT walks the lifecycle down (deactivate, cleanup, shutdown), seen on ``transition_event``.

Every wait is bounded; no assertion is about speed (orderings only: "before the first answer").
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rclpy
from lifecycle_msgs.msg import State, TransitionEvent
from lifecycle_msgs.msg import Transition as LifecycleTransition
from lifecycle_msgs.srv import GetState
from node_harness import NODE, Rig, openai_params, running_node, wait_all
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile
from std_msgs.msg import String

from spatialthinker_msgs.action import Query as QueryAction
from spatialthinker_msgs.srv import Query

QUESTION = "Is the red box in front of or behind the green box?"
BOUND = 60.0  # longest any single wait may take before the call counts as lost


def _params(server: Any, **extra: Any) -> dict[str, Any]:
    return openai_params(
        server.base_url,
        {
            "model": "load-parameters-lifecycle",
            "openai.max_in_flight": 4,
            "max_queue_size": 16,
            "max_batch_size": 4,
            "request_timeout": 30.0,
            "max_frame_age": 5.0,
            **extra,
        },
    )


class Peer:
    """A node of this test's own on the rig's executor: many clients, parameter calls, events.

    Its clients are made before the node joins the spinning executor: an action client added to
    a node while an executor spins it can be waited on half-built.
    """

    def __init__(self, rig: Rig, services: int = 0, actions: int = 0) -> None:
        self.rig = rig
        self.node = rclpy.create_node(f"hardening2_peer_{id(self)}", context=rig.context)
        # Deep client histories: rmw_fastrtps delivers every reply of a service to every client
        # of it (each keeps its own), so 20+ replies within milliseconds could push a client's
        # own reply out of rclpy's default depth of 10. That loss would be the test clients',
        # not the node's (benchmarks/burst.py shows both).
        qos = QoSProfile(depth=100)
        self.clients = [
            self.node.create_client(Query, f"{NODE}/query", qos_profile=qos)
            for _ in range(services)
        ]
        self.action_clients = [
            ActionClient(
                self.node,
                QueryAction,
                f"{NODE}/query",
                goal_service_qos_profile=qos,
                result_service_qos_profile=qos,
            )
            for _ in range(actions)
        ]
        self.set_parameters = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        self.get_state = self.node.create_client(GetState, f"{NODE}/get_state")
        self.events: list[TransitionEvent] = []
        self.node.create_subscription(
            TransitionEvent, f"{NODE}/transition_event", self.events.append, 50
        )
        rig.executor.add_node(self.node)

    def close(self) -> None:
        self.rig.executor.remove_node(self.node)
        for client in self.action_clients:
            client.destroy()
        self.node.destroy_node()

    def set(self, name: str, value: Any) -> tuple[bool, str]:
        """``ros2 param set``: (successful, reason)."""
        assert self.set_parameters.wait_for_service(timeout_sec=10.0)
        if isinstance(value, bool):
            typed = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            typed = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        else:
            typed = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=typed)])
        future = self.set_parameters.call_async(request)
        (result,) = self.rig.wait_future(future, 20.0).results
        return result.successful, result.reason


@pytest.fixture
def peer(rig) -> Iterator[Peer]:
    made: list[Peer] = []

    def make(services: int = 0, actions: int = 0) -> Peer:
        made.append(Peer(rig, services, actions))
        return made[-1]

    yield make
    for item in made:
        item.close()


# ---------------------------------------------------------------------------------------------
# High 1: bursts
# ---------------------------------------------------------------------------------------------


def test_34_clients_at_once_each_get_an_answer_or_queue_full(server, rig, peer) -> None:
    server.delay_s = 1.0  # long enough for the queue to fill: some calls must be refused
    burst = peer(services=34)
    try:
        with running_node(rig, _params(server)) as process:
            for client in burst.clients:
                assert client.wait_for_service(timeout_sec=20.0)
            time.sleep(1.0)  # every client's reply reader matched
            request = Query.Request(question=QUESTION, options=["in front", "behind"])
            responses = wait_all([c.call_async(request) for c in burst.clients], BOUND)
            lost = sum(1 for r in responses if r is None)
            answered = [r for r in responses if r is not None and r.success]
            refused = [r.message for r in responses if r is not None and not r.success]
            assert lost == 0, f"{lost} of 34 calls never answered:\n{process.log()[-3000:]}"
            assert answered, "no call answered"
            # The queue holds 16 and a batch of 4 runs: the rest are refused at once, with why.
            assert all(message.startswith("queue full") for message in refused), refused
            assert len(answered) + len(refused) == 34
    finally:
        server.delay_s = 0.0


def test_20_goals_at_once_are_each_accepted_and_answered(server, rig, peer) -> None:
    server.delay_s = 0.3
    burst = peer(actions=20)
    try:
        with running_node(rig, _params(server)) as process:
            for client in burst.action_clients:
                assert client.wait_for_server(timeout_sec=20.0)
            time.sleep(1.0)
            goal = QueryAction.Goal(question=QUESTION, options=["in front", "behind"])
            handles = wait_all([c.send_goal_async(goal) for c in burst.action_clients], BOUND)
            unanswered = sum(1 for h in handles if h is None)
            assert unanswered == 0, f"{unanswered} of 20 goals never accepted or rejected"
            assert all(h.accepted for h in handles)  # refusals come as results, with reasons
            results = wait_all([h.get_result_async() for h in handles], BOUND)
            assert all(r is not None for r in results), process.log()[-3000:]
            for result in results:
                assert result.result.success or result.result.message.startswith("queue full")
            assert any(r.result.success for r in results)
    finally:
        server.delay_s = 0.0


def test_waiting_calls_hold_no_executor_thread(server, rig, peer) -> None:
    # 32 calls can wait at once (4 batches of 4 in flight + 16 queued), more than the 24
    # threads the executor used to have, each parked by one waiting call: lifecycle services
    # and /diagnostics starved. Now get_state and diagnostics are served while all of them
    # wait, before the first one is answered.
    server.delay_s = 4.0
    burst = peer(services=32)
    try:
        with running_node(rig, _params(server)):
            for client in burst.clients:
                assert client.wait_for_service(timeout_sec=20.0)
            time.sleep(1.0)
            request = Query.Request(question=QUESTION, options=["in front", "behind"])
            futures = [c.call_async(request) for c in burst.clients]
            first_answer: list[float] = []  # answers only: "queue full" comes back at once
            for future in futures:
                future.add_done_callback(
                    lambda f: f.result().success and first_answer.append(time.monotonic())
                )
            time.sleep(1.0)  # the node has taken the calls; the server holds them 4 s
            diagnostics_before = len(rig.diagnostics)
            state = rig.wait_future(burst.get_state.call_async(GetState.Request()), BOUND)
            state_answered = time.monotonic()
            assert state.current_state.label == "active"
            rig.latest(rig.diagnostics, lambda _m: len(rig.diagnostics) > diagnostics_before + 2)
            diagnostics_flowing = time.monotonic()
            assert not first_answer or min(first_answer) > max(state_answered, diagnostics_flowing)
            responses = wait_all(futures, BOUND)
            assert all(r is not None for r in responses)
            assert all(r.success or r.message.startswith("queue full") for r in responses)
    finally:
        server.delay_s = 0.0


# ---------------------------------------------------------------------------------------------
# High 3 and Medium 6: parameters
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def serving(server, rig):
    """One node for the runtime parameter cases (stopped before the next test starts its own)."""
    with running_node(rig, _params(server)) as process:
        rig.settle(1.0)  # frames reach the new subscriptions
        yield process


class TestRuntimeParameters:
    """`ros2 param set` on an active node."""

    @pytest.mark.parametrize(
        ("name", "value", "reason"),
        [
            ("rate_hz", 1e-10, "rate_hz must be 0 (off) or between 0.001 and 30"),
            ("rate_hz", math.inf, "rate_hz must be a finite number"),
            ("max_frame_age", math.nan, "max_frame_age must be a finite number"),
            ("depth.min_size", math.nan, "depth.min_size must be a finite number"),
            ("request_timeout", math.nan, "request_timeout must be a finite number"),
            ("depth.shrink", 0.5, "depth.shrink must be between 0 and 0.45"),
            ("depth.min_depth", 0.0, "depth.min_depth must be between 0.001 and 1000"),
            ("depth.max_depth", math.inf, "depth.max_depth must be a finite number"),
            ("depth.min_depth", 20.0, "depth.min_depth (20) must be below depth.max_depth (10)"),
            ("openai.timeout", 3.0, "openai.timeout is applied on configure"),
            ("max_new_tokens", 64, "max_new_tokens is applied on configure"),
        ],
    )
    def test_bad_parameter_values_are_refused_with_a_reason(
        self, serving, rig, peer, name, value, reason
    ) -> None:
        client = peer()
        successful, message = client.set(name, value)
        assert not successful
        assert reason in message, message
        assert serving.process.poll() is None, serving.log()[-3000:]
        response = rig.query(wait=30)
        assert response.success, response.message

    def test_good_runtime_changes_still_apply(self, serving, rig, peer) -> None:
        client = peer()
        assert client.set("rate_hz", 2.0) == (True, "")
        # Continuous mode needs a question; the timer runs (its complaint reaches diagnostics).
        rig.latest(
            rig.diagnostics,
            lambda m: any(
                v.key == "continuous error" and "continuous_question is empty" in v.value
                for s in m.status
                for v in s.values
            ),
        )
        assert client.set("rate_hz", 0.0) == (True, "")
        assert client.set("depth.min_depth", 0.2) == (True, "")
        assert client.set("depth.min_depth", 0.1) == (True, "")

    def test_depth_parameters_apply_to_the_next_answer(self, serving, rig, peer) -> None:
        # Was accepted and ignored: the lifting kept the values of configure time. Every object
        # of the demo scene is beyond 0.3 m, so with depth.max_depth 0.3 none has 3D.
        client = peer()
        try:
            assert client.set("depth.max_depth", 0.3) == (True, "")
            response = rig.query(wait=30)
            assert response.success, response.message
            (obj, *_) = response.answer.scene_graph.objects
            assert not obj.has_3d and "0.1..0.3 m" in obj.no_3d_reason, obj.no_3d_reason
        finally:
            assert client.set("depth.max_depth", 10.0) == (True, "")
        response = rig.query(wait=30)
        assert response.success and response.answer.scene_graph.objects[0].has_3d


def test_bad_value_at_startup_leaves_a_consistent_unconfigured_node(server, rig, peer) -> None:
    from node_harness import NodeProcess

    node = NodeProcess(_params(server, rate_hz=1e-10))
    client = peer()
    try:
        assert rig.query_client.wait_for_service(timeout_sec=30.0), node.log()
        status = rig.engine_status(lambda s: "configure failed" in s.message, wait=30.0)
        assert "rate_hz must be 0 (off) or between 0.001 and 30 (got 1e-10)" in status.message
        assert rig.lifecycle_state() == "unconfigured"
        assert any(v.key == "lifecycle state" and v.value == "unconfigured" for v in status.values)
        response = rig.query(wait=30)
        assert not response.success
        assert "node is not active (lifecycle state 'unconfigured')" in response.message
        # Configure retries refuse again, each with the reason, and build nothing.
        threads = _threads(node.process.pid)
        for _ in range(3):
            assert not rig.transition(LifecycleTransition.TRANSITION_CONFIGURE)
        assert _threads(node.process.pid) == threads
        # Fixed at runtime, the node configures and answers.
        assert client.set("rate_hz", 0.0) == (True, "")
        assert rig.transition(LifecycleTransition.TRANSITION_CONFIGURE)
        assert rig.transition(LifecycleTransition.TRANSITION_ACTIVATE)
        rig.settle()
        response = rig.query(wait=30)
        assert response.success, response.message
    finally:
        assert node.stop() == 0, node.log()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def _settled_thread_count(baseline: int | None = None, wait: float = 10.0) -> int:
    """Threads of this process once those of a stopped engine are gone (bounded wait)."""
    deadline = time.monotonic() + wait
    while baseline is not None and threading.active_count() > baseline:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return threading.active_count()


def _inputs_subscribed(node: Any) -> bool:
    return any(s.topic_name.endswith(("/image", "/depth")) for s in node.subscriptions)


def test_a_failing_activation_leaves_the_node_inactive_and_retries_leak_no_engine(
    server,
) -> None:
    # In-process: nothing a client can send makes a transition fail any more, so the failure
    # is injected. The lifecycle must then say what the node is, and no engine (its worker
    # threads; with transformers, a loaded model) may outlive a failed transition.
    from spatialthinker_ros.ros.node import SpatialThinkerNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = SpatialThinkerNode(
            context=context,
            parameter_overrides=[
                rclpy.parameter.Parameter(name, value=value)
                for name, value in _params(server, autostart=False).items()
            ],
        )
        try:
            baseline = _settled_thread_count()
            original_start = node._continuous.start

            def failing_start() -> None:
                raise RuntimeError("injected")

            for _ in range(3):
                node.trigger_configure()
                assert threading.active_count() > baseline  # an engine runs
                node._continuous.start = failing_start
                node.trigger_activate()
                assert node._state_machine.current_state[1] == "inactive"
                assert node._state_label() == "inactive"
                assert not _inputs_subscribed(node)
                node._continuous.start = original_start
                node.trigger_cleanup()
                assert _settled_thread_count(baseline) == baseline, "an engine outlived cleanup"
            # An exception in a transition (here: deactivate) takes the lifecycle back to
            # unconfigured through on_error, which must stop the inputs and the engine too.
            node.trigger_configure()
            node.trigger_activate()
            assert _inputs_subscribed(node)
            stop_inputs = node._stop_inputs

            def failing_once() -> None:
                node._stop_inputs = stop_inputs
                raise RuntimeError("injected")

            node._stop_inputs = failing_once
            node.trigger_deactivate()
            assert node._state_machine.current_state[1] == "unconfigured"
            assert node._state_label() == "unconfigured"
            assert not _inputs_subscribed(node)
            assert _settled_thread_count(baseline) == baseline, "on_error left the engine running"
            node.trigger_configure()  # a retry after the error: one engine again
            assert node._state_machine.current_state[1] == "inactive"
            node.trigger_cleanup()
            assert _settled_thread_count(baseline) == baseline
        finally:
            node.close()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


# ---------------------------------------------------------------------------------------------
# Low 10: ~/question flood
# ---------------------------------------------------------------------------------------------


def test_question_flood_is_rate_limited_and_counted(server, rig) -> None:
    with running_node(rig, _params(server, question_rate_limit=2.0)) as process:
        for index in range(300):
            rig.question_pub.publish(String(data=f"flood {index}: which box is nearer?"))
            if index % 50 == 0:
                time.sleep(0.05)
        message = rig.latest(
            rig.diagnostics,
            lambda m: any(
                v.key == "questions dropped (rate limit)" and int(v.value) > 0
                for s in m.status
                for v in s.values
            ),
            wait=20.0,
        )
        (dropped,) = [
            int(v.value)
            for s in message.status
            for v in s.values
            if v.key == "questions dropped (rate limit)"
        ]
        assert dropped > 0
        assert "question_rate_limit" in process.log()
        response = rig.query(wait=30)
        assert response.success, response.message


# ---------------------------------------------------------------------------------------------
# Launch section: SIGINT walks the lifecycle down
# ---------------------------------------------------------------------------------------------


def test_sigint_deactivates_cleans_up_and_shuts_down(server, rig, peer) -> None:
    observer = peer()
    with running_node(rig, _params(server)) as process:
        rig.settle(1.0)
        response = rig.query(wait=30)
        assert response.success, response.message
        deadline = time.monotonic() + 10.0
        while not observer.node.count_publishers(f"{NODE}/transition_event"):
            assert time.monotonic() < deadline, "transition_event never matched"
            time.sleep(0.1)
        time.sleep(0.5)
        mark = len(observer.events)  # the start-up transitions, if they were seen, end here
    # running_node stopped the node with SIGINT and checked it exited with status 0.
    deadline = time.monotonic() + 10.0
    while len(observer.events) < mark + 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    goals = [event.goal_state.id for event in observer.events[mark:]]
    assert goals == [
        State.TRANSITION_STATE_DEACTIVATING,
        State.PRIMARY_STATE_INACTIVE,
        State.TRANSITION_STATE_CLEANINGUP,
        State.PRIMARY_STATE_UNCONFIGURED,
        State.TRANSITION_STATE_SHUTTINGDOWN,
        State.PRIMARY_STATE_FINALIZED,
    ], process.log()[-3000:]
