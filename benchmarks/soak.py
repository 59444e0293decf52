"""Soak test of spatialthinker_node under load (a script; a 30 s version runs in CI).

A camera process publishes 640x480 rgb8 + 16UC1 + camera_info at 30 Hz; the
node runs with the openai backend against a scripted test server (answering in
SpatialThinker format after a short delay, standing in for vLLM), continuous
mode on, and several service and action clients asking without pause. Checks:

- resident memory growth of the node <= 5% after warm-up;
- every request answered exactly once (an answer, or a failure with a reason);
  no call without a response (hung);
- no executor stall: /diagnostics keeps arriving at its period.

    .venv-jazzy/bin/python benchmarks/soak.py --duration 600
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from spatialthinker_ros.ros.fastdds import set_default_profile

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = ROOT / "spatialthinker_ros" / "test" / "fixtures"
sys.path.insert(0, str(FIXTURES_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(181, 230)))
# Jazzy's Fast DDS reads the profile from FASTRTPS_..., Kilted's from FASTDDS_...: name both.
set_default_profile(os.environ, ROOT / "spatialthinker_ros" / "config" / "fastdds_large_images.xml")

DIAGNOSTICS_PERIOD = 0.5
MIN_MEMORY_JUDGED_S = 300.0


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class Tally:
    """Outcomes of every call, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.request_ids: list[str] = []
        self.hung = 0

    def answered(self, request_id: str) -> None:
        with self.lock:
            self.outcomes["answered"] += 1
            self.request_ids.append(request_id)

    def failed(self, reason: str) -> None:
        with self.lock:
            self.outcomes["failed with a reason" if reason else "failed without a reason"] += 1
            self.reasons[reason.split(":")[0][:60]] += 1

    def no_response(self) -> None:
        with self.lock:
            self.hung += 1


def service_client(rig, tally: Tally, stop: threading.Event, index: int) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        try:
            response = rig.query(question=f"client {index} question {n}: which is nearer?", wait=60)
        except AssertionError:
            tally.no_response()
            continue
        if response.success:
            tally.answered(response.answer.request_id)
        else:
            tally.failed(response.message)


def action_client(rig, tally: Tally, stop: threading.Event) -> None:
    from spatialthinker_msgs.action import Query as QueryAction

    goal = QueryAction.Goal(question="Which box is larger?", options=["green box", "red box"])
    n = 0
    while not stop.is_set():
        n += 1
        try:
            handle = rig.wait_future(rig.action_client.send_goal_async(goal), 30)
            if n % 5 == 0:  # every fifth goal is cancelled by its client
                rig.wait_future(handle.cancel_goal_async(), 30)
            result = rig.wait_future(handle.get_result_async(), 60).result
        except AssertionError:
            tally.no_response()
            continue
        if result.success:
            tally.answered(result.answer.request_id)
        else:
            tally.failed(result.message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--service-clients", type=int, default=3)
    parser.add_argument("--action-clients", type=int, default=1)
    parser.add_argument("--continuous-hz", type=float, default=2.0)
    parser.add_argument("--server-delay", type=float, default=0.2, help="scripted model seconds")
    args = parser.parse_args()

    from bench_node import PREFIX
    from diagnostic_msgs.msg import DiagnosticArray
    from node_harness import NodeProcess, Rig, scripted_reply
    from script_process import ScriptProcess
    from scripted_openai_server import ScriptedOpenAIServer

    from spatialthinker_ros.core.synthetic_scene import demo_scene

    scene = demo_scene()
    remaps = {"image": "/bench/image", "depth": "/bench/depth", "camera_info": "/bench/camera_info"}
    tally = Tally()
    stop = threading.Event()
    with ScriptedOpenAIServer(default_reply=scripted_reply(scene)) as server:
        server.delay_s = args.server_delay
        node = NodeProcess(
            {
                "backend": "openai",
                "model": "soak",
                "openai.base_url": server.base_url,
                "rate_hz": args.continuous_hz,
                "continuous_question": "Is the red box in front of the green box?",
                "continuous_options": "yes|no",
                "max_queue_size": 8,
                "request_timeout": 20.0,
                "diagnostics_period": DIAGNOSTICS_PERIOD,
            },
            remaps=remaps,
        )
        # test/fixtures/camera_process.py, publishing on /bench/*
        camera = ScriptProcess("camera_process.py", PREFIX, str(args.rate))
        rig = Rig(scene, rate_hz=0.001)
        rig.camera_on = False
        diagnostics_times: list[float] = []
        rig.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            # The node's own publish stamps: what the node did, not when this busy
            # process got round to reading it.
            lambda msg: diagnostics_times.append(
                msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            ),
            10,
        )
        memory: list[tuple[float, float]] = []
        exit_code = 1
        try:
            rig.wait_for_node()
            time.sleep(2.0)
            threads = [
                threading.Thread(target=service_client, args=(rig, tally, stop, i), daemon=True)
                for i in range(args.service_clients)
            ]
            threads += [
                threading.Thread(target=action_client, args=(rig, tally, stop), daemon=True)
                for _ in range(args.action_clients)
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            while time.monotonic() - started < args.duration:
                memory.append((time.monotonic() - started, rss_mb(node.process.pid)))
                if node.process.poll() is not None:
                    print(f"the node exited during the soak (status {node.process.returncode})")
                    print(node.log()[-6000:])
                    break
                time.sleep(min(5.0, args.duration / 20))
            stop.set()
            for thread in threads:
                thread.join(90)
            still_running = sum(thread.is_alive() for thread in threads)
            elapsed = time.monotonic() - started
            continuous = sum(1 for a in rig.answers if a.request_id.startswith("continuous-"))

            # RSS swings by tens of MB as Python and glibc reuse freed frames, so growth
            # compares the medians of the first and last thirds after warm-up, not two samples.
            warm = [rss for t, rss in memory if t >= min(60.0, 0.2 * args.duration)]
            third = max(1, len(warm) // 3)
            early, late = statistics.median(warm[:third]), statistics.median(warm[-third:])
            growth = (late - early) / early if warm else 0.0
            judge_memory = args.duration >= MIN_MEMORY_JUDGED_S
            wall_started = time.time() - elapsed
            window = sorted(
                t for t in diagnostics_times if wall_started <= t <= wall_started + elapsed
            )
            gaps = [b - a for a, b in itertools.pairwise(window)]
            max_gap = max(gaps) if gaps else float("inf")
            duplicates = len(tally.request_ids) - len(set(tally.request_ids))
            unexplained = tally.outcomes["failed without a reason"]
            checks = {
                "memory growth after warm-up <= 5%"
                + ("" if judge_memory else " (not judged: run shorter than 5 min)"): (
                    growth <= 0.05 or not judge_memory
                ),
                "no call without a response": tally.hung == 0 and still_running == 0,
                "each request answered once (no duplicate ids)": duplicates == 0,
                "every failure has a reason": unexplained == 0,
                f"diagnostics every {DIAGNOSTICS_PERIOD:g} s, max gap <= 3x": max_gap
                <= 3 * DIAGNOSTICS_PERIOD,
                "node still running": node.process.poll() is None,
            }
            print(f"Soak summary: {elapsed:.0f} s, camera {args.rate:g} Hz 640x480 RGB-D,")
            print(
                f"  {args.service_clients} service + {args.action_clients} action clients,"
                f" continuous mode {args.continuous_hz:g} Hz, scripted model {args.server_delay} s"
            )
            print("| measure | value |")
            print("|---|---|")
            print(f"| calls answered | {tally.outcomes['answered']} |")
            print(f"| calls failed with a reason | {tally.outcomes['failed with a reason']} |")
            for reason, count in tally.reasons.most_common(4):
                print(f"| - {reason} | {count} |")
            print(f"| calls without a response | {tally.hung + still_running} |")
            print(f"| continuous answers published | {continuous} |")
            rss = f"{early:.0f} / {late:.0f} MB"
            print(f"| node RSS, median of first / last third after warm-up | {rss} |")
            print(f"| RSS growth after warm-up | {100 * growth:+.2f} % |")
            print(f"| diagnostics messages, max gap | {len(window)}, {max_gap:.2f} s |")
            step = max(1, len(memory) // 12)
            series = ", ".join(f"{t:.0f}s {rss:.0f}" for t, rss in memory[::step])
            print(f"  node RSS (MB) over time: {series}")
            for name, ok in checks.items():
                print(f"  [{'ok' if ok else 'FAIL'}] {name}")
            passed = all(checks.values()) and tally.outcomes["answered"] > 0
            print("result:", "PASS" if passed else "FAIL")
            exit_code = 0 if passed else 1
        finally:
            stop.set()
            rig.close()
            camera.close()
            node.stop()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
