"""Burst benchmark of spatialthinker_node: many callers at the same moment (issue 17, High 1).

A robot fleet's planners do not take turns. Three phases against the node (openai backend,
scripted loopback server answering after ``--server-delay`` seconds, 10 Hz synthetic RGB-D
camera in this process):

1. ``--clients`` separate service clients call ``~/query`` at the same moment;
2. ``--goals`` separate action clients send a goal at the same moment, twice: with rclpy's
   default client QoS (depth 10) and with depth 100. rmw_fastrtps delivers every reply of a
   service to every client of it, each keeping its own, so 20 goal replies sent within a few
   milliseconds can push a client's own reply out of a depth-10 history before it is taken:
   such a goal was accepted by the node (it is in the action's status) but its client never
   hears. Only clients with a deeper history are certain to hear every reply;
3. sustained load: ``--sustained`` service calls ``--interval`` seconds apart while
   ``/diagnostics`` stamps and lifecycle ``get_state`` round trips are recorded.

Every call must end in an answer or a refusal with a reason ("queue full ..."); every goal
must be accepted or rejected. Prints the figures (docs/hardening.md records them):

    .venv/bin/python benchmarks/burst.py
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from spatialthinker_ros.ros.fastdds import set_default_profile

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = ROOT / "spatialthinker_ros" / "test" / "fixtures"
sys.path.insert(0, str(FIXTURES_DIR))

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(131, 180)))
# Jazzy's Fast DDS reads the profile from FASTRTPS_..., Kilted's from FASTDDS_...: name both.
set_default_profile(os.environ, ROOT / "spatialthinker_ros" / "config" / "fastdds_large_images.xml")

QUESTION = "Is the red box in front of or behind the green box?"


def _reason(message: str) -> str:
    return message.split(":")[0].split("(")[0].strip()[:50]


def _outcomes(responses: list[Any]) -> Counter[str]:
    """Counts of ~/query responses: answered, refused (by reason) and never answered."""
    outcomes: Counter[str] = Counter()
    for response in responses:
        if response is None:
            outcomes["no response"] += 1
        elif response.success:
            outcomes["answered"] += 1
        else:
            outcomes[f"refused: {_reason(response.message)}"] += 1
    return outcomes


def service_burst(rig: Any, count: int, wait: float) -> Counter[str]:
    """``count`` separate clients call ~/query at once; outcome counts."""
    from node_harness import wait_all

    from spatialthinker_msgs.srv import Query

    with rig.side_node("burst_clients") as side:
        clients = [side.create_client(Query, "/spatialthinker/query") for _ in range(count)]
        for client in clients:
            assert client.wait_for_service(timeout_sec=20.0), "service not discovered"
        time.sleep(1.0)  # let every client's reader match the server's writer
        request = Query.Request(question=QUESTION, options=["in front", "behind"])
        started = time.monotonic()
        responses = wait_all([c.call_async(request) for c in clients], wait)
        elapsed = time.monotonic() - started
    outcomes = _outcomes(responses)
    outcomes["_seconds"] = round(elapsed, 1)
    return outcomes


def goal_burst(rig: Any, count: int, wait: float, depth: int) -> Counter[str]:
    """``count`` separate action clients send a goal at once; acceptance and result counts."""
    import rclpy
    from node_harness import wait_all
    from rclpy.action import ActionClient
    from rclpy.qos import QoSProfile

    from spatialthinker_msgs.action import Query as QueryAction

    # On a node of their own that joins the spinning executor only when complete: an action
    # client added to a node while an executor spins it can be waited on half-built.
    node = rclpy.create_node(f"burst_action_clients_{depth}", context=rig.context)
    qos = QoSProfile(depth=depth)
    clients = [
        ActionClient(
            node,
            QueryAction,
            "/spatialthinker/query",
            goal_service_qos_profile=qos,
            result_service_qos_profile=qos,
            cancel_service_qos_profile=qos,
        )
        for _ in range(count)
    ]
    rig.executor.add_node(node)
    for client in clients:
        assert client.wait_for_server(timeout_sec=20.0), "action server not discovered"
    time.sleep(1.0)
    goal = QueryAction.Goal(question=QUESTION, options=["in front", "behind"])
    handles = wait_all([c.send_goal_async(goal) for c in clients], 30.0)
    outcomes: Counter[str] = Counter()
    accepted = [h for h in handles if h is not None and h.accepted]
    outcomes["goals accepted"] = len(accepted)
    outcomes["goals rejected"] = sum(1 for h in handles if h is not None and not h.accepted)
    outcomes["goals never answered"] = sum(1 for h in handles if h is None)
    results = wait_all([h.get_result_async() for h in accepted], wait)
    for result in results:
        if result is None:
            outcomes["result: none"] += 1
        elif result.result.success:
            outcomes["result: answered"] += 1
        else:
            outcomes[f"result: {_reason(result.result.message)}"] += 1
    rig.executor.remove_node(node)
    for client in clients:
        client.destroy()
    node.destroy_node()
    return outcomes


def sustained(rig: Any, calls: int, interval: float, wait: float) -> dict[str, Any]:
    """Calls ``interval`` apart; diagnostics gaps and get_state round trips meanwhile."""
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.srv import GetState
    from node_harness import wait_all

    from spatialthinker_msgs.srv import Query

    stamps: list[float] = []
    state_times: list[float] = []
    with rig.side_node("burst_sustained") as side:
        side.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda msg: stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9),
            100,
        )
        client = side.create_client(Query, "/spatialthinker/query")
        assert client.wait_for_service(timeout_sec=20.0)
        deadline = time.monotonic() + 10.0
        while not stamps and time.monotonic() < deadline:  # the subscription has matched
            time.sleep(0.05)
        request = Query.Request(question=QUESTION, options=["in front", "behind"])
        stop = threading.Event()

        def poll_state() -> None:
            while not stop.is_set():
                started = time.monotonic()
                future = rig.get_state.call_async(GetState.Request())
                if wait_all([future], 30.0)[0] is not None:
                    state_times.append(time.monotonic() - started)
                time.sleep(0.2)

        poller = threading.Thread(target=poll_state, daemon=True)
        poller.start()
        wall_started = time.time()
        futures = []
        for _ in range(calls):
            futures.append(client.call_async(request))
            time.sleep(interval)
        responses = wait_all(futures, wait)
        wall_ended = time.time()
        stop.set()
        poller.join(35)
    window = sorted(t for t in stamps if wall_started <= t <= wall_ended)
    gaps = [b - a for a, b in itertools.pairwise(window)]
    outcomes = _outcomes(responses)
    return {
        "outcomes": outcomes,
        "diagnostics max gap (s)": max(gaps) if gaps else float("inf"),
        "get_state max (s)": max(state_times) if state_times else float("inf"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=34, help="service clients at once")
    parser.add_argument("--goals", type=int, default=20, help="action goals at once")
    parser.add_argument("--sustained", type=int, default=130, help="calls in the sustained run")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between them")
    parser.add_argument("--server-delay", type=float, default=1.0, help="scripted model seconds")
    args = parser.parse_args()

    from node_harness import NodeProcess, Rig, scripted_reply
    from scripted_openai_server import ScriptedOpenAIServer

    from spatialthinker_ros.core.synthetic_scene import demo_scene

    scene = demo_scene()
    request_timeout = 30.0
    wait = request_timeout + 30.0
    failures = []
    with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
        server.delay_s = args.server_delay
        node = NodeProcess(
            {
                "backend": "openai",
                "model": "burst",
                "openai.base_url": server.base_url,
                "openai.max_in_flight": 4,
                "max_queue_size": 16,
                "max_batch_size": 4,
                "request_timeout": request_timeout,
                "max_frame_age": 5.0,
                "diagnostics_period": 0.5,
            }
        )
        rig = Rig(scene, rate_hz=10.0)
        try:
            rig.wait_for_node()
            time.sleep(2.0)
            print(f"Burst: openai backend, scripted model {args.server_delay:g} s, queue 16,")
            print("  batch 4, 4 HTTP requests in flight, camera 10 Hz 640x480 RGB-D")
            print("| phase | outcome | count |")
            print("|---|---|---|")
            burst = service_burst(rig, args.clients, wait)
            seconds = burst.pop("_seconds")
            for outcome, count in sorted(burst.items()):
                print(f"| {args.clients} service calls at once | {outcome} | {count} |")
            print(f"| {args.clients} service calls at once | seconds until the last | {seconds} |")
            if burst["no response"]:
                failures.append("service calls without a response")
            for depth in (10, 100):
                goals = goal_burst(rig, args.goals, wait, depth)
                label = f"{args.goals} action goals at once, client depth {depth}"
                for outcome, count in sorted(goals.items()):
                    print(f"| {label} | {outcome} | {count} |")
                # Depth 10 is reported, not judged: its losses are in the clients (above).
                if depth > 10 and (goals["goals never answered"] or goals["result: none"]):
                    failures.append("goals without an answer")
            if args.sustained:
                figures = sustained(rig, args.sustained, args.interval, wait)
                label = f"{args.sustained} calls {args.interval * 1000:g} ms apart"
                for outcome, count in sorted(figures.pop("outcomes").items()):
                    print(f"| {label} | {outcome} | {count} |")
                    if outcome == "no response":
                        failures.append("sustained calls without a response")
                for name, value in figures.items():
                    print(f"| {label} | {name} | {value:.2f} |")
            if node.process.poll() is not None:
                failures.append("the node exited")
        finally:
            rig.close()
            code = node.stop()
    if code != 0:
        failures.append(f"node exit status {code}")
    print("result:", "PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
