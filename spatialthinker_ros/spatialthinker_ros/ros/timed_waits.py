"""Requests waiting, in an executor coroutine, for something to arrive by a deadline: a colour
frame's late depth (``node_inputs``), TF catching up with an image's stamp (``tf_listener``).

Awaiting holds no executor thread. A timer, running only while some request waits, takes what
arrived (``poll``) and ends each wait whose condition holds or whose deadline has passed; ending
one wakes the executor, which resumes the coroutine at once.

The timer runs on the steady clock (:func:`steady_timer`), as every timer that bounds a wait
does: a node on simulated time (``use_sim_time``) would otherwise stop looking while ``/clock``
stands still (a paused bag, a simulator stopped), and its requests would wait for ever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

__all__ = ["TimedWaits", "steady_timer"]


def steady_timer(node: Node, period: float, callback: Callable[[], None]) -> Any:
    """A timer of ``node`` on the steady clock, in a callback group of its own, created
    cancelled (start it with ``reset()``): it fires whatever ``use_sim_time`` says."""
    timer = node.create_timer(
        period,
        callback,
        callback_group=MutuallyExclusiveCallbackGroup(),
        clock=Clock(clock_type=ClockType.STEADY_TIME),
    )
    timer.cancel()
    return timer


@dataclass(eq=False)
class _Wait:
    """One request's wait: until ``ready()`` or the wall-clock ``until``."""

    until: float
    ready: Callable[[], bool]
    done: threading.Event = field(default_factory=threading.Event)

    def __await__(self) -> Generator[None, None, None]:
        """Await the end of the wait in an executor coroutine without holding a thread."""
        while not self.done.is_set():
            yield


class TimedWaits:
    """The waits of one kind of input.

    Args:
        node: The node the timer belongs to (and whose executor is woken).
        period: How often, seconds, the timer looks while some request waits.
        poll: Takes what arrived (called by the timer before the waits are looked at).
    """

    def __init__(self, node: Node, period: float, poll: Callable[[], None]) -> None:
        self._node = node
        self._poll = poll
        self._waits: list[_Wait] = []
        self._lock = threading.Lock()
        self._timer = steady_timer(node, period, self._tick)  # runs only while requests wait

    async def wait(self, until: float, ready: Callable[[], bool]) -> None:
        """Await ``ready()`` (checked under this object's lock: keep it short) or the wall-clock
        time ``until``, whichever comes first."""
        wait = _Wait(until, ready)
        with self._lock:
            self._waits.append(wait)
            if self._timer.is_canceled():
                self._timer.reset()
                self._wake()  # the executor's wait in progress does not know the timer yet
        self.end()  # it may have come in between
        try:
            await wait
        finally:
            with self._lock:
                if wait in self._waits:
                    self._waits.remove(wait)

    def end(self, everything: bool = False) -> None:
        """End the waits whose condition holds or whose time is up (``everything``: all)."""
        now = time.time()
        ended = False
        with self._lock:
            for wait in list(self._waits):
                if everything or now >= wait.until or wait.ready():
                    wait.done.set()
                    self._waits.remove(wait)
                    ended = True
        if ended:
            self._wake()

    def _tick(self) -> None:
        with self._lock:
            if not self._waits:
                self._timer.cancel()
                return
        self._poll()
        self.end()

    def _wake(self) -> None:
        """Make the executor resume the coroutines that await (any thread)."""
        executor = self._node.executor
        if executor is not None:
            executor.wake()
