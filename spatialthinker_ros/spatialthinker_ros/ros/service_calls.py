"""Service calls that survive a lost response, for the node's own clients (ROS glue).

On Jazzy's Fast DDS (2.14) a service sends its response only once its response writer has
matched the client's response reader, and waits for that match at most the writer's
``max_blocking_time`` (100 ms by default) before it drops the response with ``failed to send
response (timeout): client will not receive response``. A client that calls right after
``wait_for_service`` on a loaded machine can therefore wait forever for a response that the
server already gave up on. The shipped Fast DDS profile lets the node wait longer for the match
(``config/fastdds_large_images.xml``); these helpers make the caller robust as well:

- :func:`call` sends again what is safe to send again (a read such as lifecycle ``get_state``,
  or a ``~/query``, which only reads the camera: asking twice costs a second inference, never a
  wrong state) when no response came within one attempt's wait;
- every wait is bounded and a timeout names the service and the likely cause.

The client's node must be spun by an executor on another thread (as the demo, the tools, the
tests and most planners do): these functions only wait on the futures.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.client import Client

__all__ = ["ServiceCallTimeout", "call", "wait_future"]


class ServiceCallTimeout(TimeoutError):
    """No response to a service call within the time given (the reason is the message)."""


def wait_future(future: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for an rclpy future spun by another thread; True if done."""
    done = threading.Event()
    future.add_done_callback(lambda _future: done.set())
    return done.wait(max(timeout, 0.0)) or future.done()


def call(
    client: Client,
    request: Any,
    timeout: float,
    attempt_timeout: float | None = None,
) -> Any:
    """Call ``client`` with ``request`` and return the response, sending again after a loss.

    Args:
        client: The service client (its node spun elsewhere).
        request: The request; sent again as it is after each attempt without a response, so
            it must be safe to repeat (a read, or a query).
        timeout: Seconds for everything: discovering the service and every attempt.
        attempt_timeout: Seconds one attempt waits for its response before the request is
            sent again; None: one attempt for the whole ``timeout`` (for calls that are not
            safe to repeat).

    Raises:
        ServiceCallTimeout: The service was not discovered, or no attempt got a response,
            within ``timeout``; the message names the service and says why.
    """
    deadline = time.monotonic() + timeout
    if not client.wait_for_service(timeout_sec=max(timeout, 0.0)):
        raise ServiceCallTimeout(f"service {client.srv_name} not available within {timeout:g} s")
    attempts = 0
    while True:
        left = deadline - time.monotonic()
        wait = left if attempt_timeout is None else min(attempt_timeout, left)
        future = client.call_async(request)
        attempts += 1
        if wait_future(future, wait):
            return future.result()
        # Forget the lost call: a late response to it is then dropped, not delivered twice.
        client.remove_pending_request(future)
        if attempt_timeout is None or deadline - time.monotonic() <= 0.0:
            raise ServiceCallTimeout(
                f"no response from {client.srv_name} within {timeout:g} s ({attempts} "
                "attempt(s)); the server may have dropped it (Jazzy's Fast DDS drops a response "
                "when the server has not yet matched this client: see README, calling the node)"
            )
