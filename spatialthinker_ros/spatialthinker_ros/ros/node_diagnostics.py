"""The node's /diagnostics: what its inputs and its engine report, as DiagnosticStatus.

Plain functions of a snapshot the node takes, so the rules for OK / WARN / ERROR live in one
place and do not reach into the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from spatialthinker_ros.core.frame_buffer import TopicStats
from spatialthinker_ros.ros.ros_conversions import bounded

# Backend states that mean "able to answer".
HEALTHY_BACKEND_STATES = frozenset({"ready", "loaded", "ok", "idle", "busy", "running"})


def inputs_status(
    name: str,
    hardware_id: str,
    active: bool,
    now: float,
    topics: Sequence[tuple[str, TopicStats]],
    max_frame_age: float,
    questions_dropped: int,
    errors: Mapping[str, str],
) -> DiagnosticStatus:
    """The inputs' status: per topic rate, age and count; input errors; stale topics.

    Args:
        name: Status name.
        hardware_id: Status hardware id.
        active: Whether the node is active (inputs subscribed).
        now: Wall-clock time (the stats' clock).
        topics: ``(topic kind, its statistics)`` of every subscribed input.
        max_frame_age: A topic older than this is stale.
        questions_dropped: ~/question messages dropped by the rate limit.
        errors: Current input errors by kind (a copy).
    """
    values: list[KeyValue] = []
    stale = []
    for kind, stats in topics:
        age = now - stats.last_received if stats.last_received is not None else None
        values.append(KeyValue(key=f"{kind} rate (Hz)", value=f"{stats.rate_hz(now):.1f}"))
        values.append(
            KeyValue(key=f"{kind} age (s)", value="never" if age is None else f"{age:.2f}")
        )
        values.append(KeyValue(key=f"{kind} received", value=str(stats.count)))
        if age is None or age > max_frame_age:
            stale.append(kind)
    values.append(KeyValue(key="questions dropped (rate limit)", value=str(questions_dropped)))
    for kind, error in sorted(errors.items()):
        values.append(KeyValue(key=f"{kind} error", value=bounded(error, 512)))
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, values=values)
    if not active:
        status.level, status.message = DiagnosticStatus.OK, "inactive: inputs not subscribed"
    elif errors:
        status.level = DiagnosticStatus.WARN
        status.message = bounded("; ".join(sorted(errors.values())), 512)
    elif stale:
        status.level, status.message = DiagnosticStatus.WARN, f"no recent {', '.join(stale)}"
    else:
        status.level, status.message = DiagnosticStatus.OK, "receiving"
    return status


@dataclass(frozen=True)
class EngineSnapshot:
    """What the engine's status is made of.

    Attributes:
        lifecycle_state: ``active``, ``inactive`` or ``unconfigured``.
        backend: Backend name.
        model: Model name.
        backend_state: The node's view of the backend (``loading``, ``load failed: ...``) when
            no engine runs.
        stats: The engine's statistics (``InferenceEngine.stats()``), or None without one.
        frame_warning: The 'native' policy's size warning ("" when none).
        contradicted_last_min: Relations the depth contradicted in the last minute.
        contradicted_total: ... and since start.
        last_backend_error: The latest backend failure, until a request succeeds again.
    """

    lifecycle_state: str
    backend: str
    model: str
    backend_state: str
    stats: Mapping[str, Any] | None
    frame_warning: str
    contradicted_last_min: int
    contradicted_total: int
    last_backend_error: str | None


def engine_status(name: str, hardware_id: str, snap: EngineSnapshot) -> DiagnosticStatus:
    """The engine's status: lifecycle state, backend health, queue and latency figures."""
    values = [
        KeyValue(key="lifecycle state", value=snap.lifecycle_state),
        KeyValue(key="backend", value=snap.backend),
        KeyValue(key="model", value=bounded(snap.model, 512)),
    ]
    backend_state = snap.backend_state
    if snap.stats is not None:
        backend_state = str(snap.stats.get("backend_state", backend_state))
        for key, value in snap.stats.items():
            if key == "backend_state":
                continue
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            values.append(KeyValue(key=str(key), value=bounded(text, 512)))
    values.append(KeyValue(key="backend state", value=bounded(backend_state, 512)))
    if snap.frame_warning:
        values.append(KeyValue(key="model frame", value=bounded(snap.frame_warning, 512)))
    # The model's claims the depth refuted: a quality signal, not a fault of the node.
    values.append(
        KeyValue(key="relations contradicted (last min)", value=str(snap.contradicted_last_min))
    )
    values.append(KeyValue(key="relations contradicted", value=str(snap.contradicted_total)))
    if snap.last_backend_error:
        values.append(
            KeyValue(key="last backend error", value=bounded(snap.last_backend_error, 512))
        )
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, values=values)
    if snap.stats is None:
        level = DiagnosticStatus.WARN if "failed" in backend_state else DiagnosticStatus.OK
        status.level, status.message = level, bounded(f"backend {backend_state}", 512)
    elif snap.last_backend_error:
        # The backend loaded but its latest request failed (server down, 5xx, timeout).
        status.level = DiagnosticStatus.ERROR
        status.message = bounded(f"backend failing: {snap.last_backend_error}", 512)
    elif backend_state in HEALTHY_BACKEND_STATES:
        status.level, status.message = DiagnosticStatus.OK, f"backend {backend_state}"
    else:
        status.level = DiagnosticStatus.ERROR
        status.message = bounded(f"backend {backend_state}", 512)
    if snap.frame_warning and status.level == DiagnosticStatus.OK:
        status.level = DiagnosticStatus.WARN
        status.message = f"{status.message}; 'native' states a size the model does not see"
    return status
