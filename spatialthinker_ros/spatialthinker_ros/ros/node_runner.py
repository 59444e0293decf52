"""Running a lifecycle node as a process: spin, and on SIGINT/SIGTERM walk the lifecycle down.

rclpy's own signal handlers would shut the context down at once, before the node could
deactivate, clean up (free the GPU) and shut down with ``transition_event`` observers seeing each
step. So the executor spins in a thread, and a signal only tells the main thread to run those
transitions while the executor still serves; a second Ctrl-C quits at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def run(node_factory: Callable[[], Node], threads: int, args: list[str] | None = None) -> None:
    """Create the node, spin it until SIGINT or SIGTERM, then shut it down in order.

    The node has, beside rclpy's Node, ``autostart()`` (the start-up transitions),
    ``shut_down_gracefully()`` (the lifecycle walked down) and ``close()``.

    Raises:
        BaseException: What a callback raised inside the executor (the process then exits with
            a failure status).
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node: Any = node_factory()
    executor = MultiThreadedExecutor(num_threads=threads)
    executor.add_node(node)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    errors: list[BaseException] = []
    spinning = threading.Event()
    spinning.set()
    spinner = threading.Thread(
        target=_spin, args=(executor, spinning, stop, errors), name="executor"
    )
    spinner.start()
    try:
        node.autostart()
        while not stop.wait(1.0):  # a timed wait: signal handlers run in this thread
            pass
        node.shut_down_gracefully()
    finally:
        node.close()
        # rclpy's Executor.shutdown does not wait for the callbacks already in the thread pool:
        # one finishing after it (a diagnostics tick) fails on the destroyed guard condition,
        # and rclpy prints "exception was never retrieved" at exit. So stop taking work first,
        # let the pool finish what it holds, then shut the executor down.
        spinning.clear()
        spinner.join(10.0)
        pool = getattr(executor, "_executor", None)
        if pool is not None:
            pool.shutdown(wait=True)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    if errors:
        raise errors[0]


def _spin(
    executor: MultiThreadedExecutor,
    spinning: threading.Event,
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    """Execute callbacks while ``spinning`` is set (then the pool's work can be awaited)."""
    try:
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except BaseException as error:
        errors.append(error)
    finally:
        stop.set()  # the context went away (or the executor failed): exit too
