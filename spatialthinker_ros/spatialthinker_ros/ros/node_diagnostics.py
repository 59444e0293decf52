"""The node's /diagnostics: what its inputs and its engine report, as DiagnosticStatus.

Plain functions of a snapshot the node takes, so the rules for OK / WARN / ERROR live in one
place and do not reach into the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from spatialthinker_ros.core.frame_buffer import LOSS_WARN_SHARE, PairingReport, TopicStats
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
    pairing: PairingReport | None = None,
) -> DiagnosticStatus:
    """The inputs' status: per topic rate, age, count and frames lost in transport; colour/depth
    pairing; input errors; stale topics.

    WARN (after the input errors): a topic whose frames are mostly lost in transport (received
    far below its stamps' cadence), with the cause and the remedy; answers that lost 3D to the
    frames' timing; a topic gone quiet. A camera_info counts as recent once received: a latched
    one is published once.

    Args:
        name: Status name.
        hardware_id: Status hardware id.
        active: Whether the node is active (inputs subscribed).
        now: Wall-clock time (the stats' clock).
        topics: ``(topic kind, its statistics)`` of every subscribed input.
        max_frame_age: A topic older than this is stale.
        questions_dropped: ~/question messages dropped by the rate limit.
        errors: Current input errors by kind (a copy).
        pairing: The colour/depth pairing figures (None without depth).
    """
    values: list[KeyValue] = []
    stale = []
    warnings: list[str] = []
    for kind, stats in topics:
        age = now - stats.last_received if stats.last_received is not None else None
        values.append(KeyValue(key=f"{kind} rate (Hz)", value=f"{stats.rate_hz(now):.1f}"))
        values.append(
            KeyValue(key=f"{kind} age (s)", value="never" if age is None else f"{age:.2f}")
        )
        values.append(KeyValue(key=f"{kind} received", value=str(stats.count)))
        if kind == "camera_info":
            if age is None:
                stale.append(kind)
            continue
        if age is None or age > max_frame_age:
            stale.append(kind)
        cadence = stats.stamp_rate_hz(now)
        share = stats.delivered_share(now)
        values.append(KeyValue(key=f"{kind} stamp rate (Hz)", value=f"{cadence:.1f}"))
        values.append(
            KeyValue(
                key=f"{kind} frames delivered (%)",
                value="unknown" if share is None else f"{100 * share:.0f}",
            )
        )
        if share is not None and share < LOSS_WARN_SHARE and age is not None:
            warnings.append(_loss_warning(kind, stats.topic, share, cadence))
    values.append(KeyValue(key="questions dropped (rate limit)", value=str(questions_dropped)))
    if pairing is not None:
        values += _pairing_values(pairing)
        if pairing.timing_losses:
            warnings.append(_timing_warning(pairing))
    for kind, error in sorted(errors.items()):
        values.append(KeyValue(key=f"{kind} error", value=bounded(error, 512)))
    status = DiagnosticStatus(name=name, hardware_id=hardware_id, values=values)
    if not active:
        status.level, status.message = DiagnosticStatus.OK, "inactive: inputs not subscribed"
        return status
    if stale:
        warnings.append(f"no recent {', '.join(stale)}")
    if errors:
        warnings.insert(0, "; ".join(sorted(errors.values())))
    if warnings:
        status.level, status.message = DiagnosticStatus.WARN, bounded("; ".join(warnings), 1024)
    else:
        status.level, status.message = DiagnosticStatus.OK, "receiving"
    return status


def _loss_warning(kind: str, topic: str, share: float, cadence: float) -> str:
    """Frames lost in transport: what is seen, the likely cause and the remedy."""
    return (
        f"{kind} '{topic or kind}': only {100 * share:.0f}% of its frames arrive (about"
        f" {share * cadence:.1f} of the {cadence:.0f} per second its stamps say were sent): frames"
        " are lost in transport. Usual cause: Fast DDS's default shared-memory segment is"
        " smaller than a frame, so frames go over UDP fragments and best-effort QoS drops them."
        " Remedy: the shipped Fast DDS profile config/fastdds_large_images.xml in the camera"
        " driver's environment too (FASTRTPS_DEFAULT_PROFILES_FILE on Jazzy,"
        " FASTDDS_DEFAULT_PROFILES_FILE on Kilted), then restart the driver"
    )


def _timing_warning(pairing: PairingReport) -> str:
    """Answers without 3D because colour and depth did not line up in time."""
    lag = (
        f"depth arrives {1000 * pairing.lag_p50_s:.0f} ms (p50) / {1000 * pairing.lag_p90_s:.0f}"
        " ms (p90) after its colour"
        if pairing.lag_p50_s is not None and pairing.lag_p90_s is not None
        else "the colour-to-depth lag is not measured (no colour and depth frame stamped alike)"
    )
    return (
        f"{pairing.timing_losses} of {pairing.answers} recent answers lost 3D to timing"
        f" ({pairing.last_timing_reason}); {lag}: check that the driver stamps colour and depth"
        " alike, or raise sync_slop, sync_wait or max_frame_age"
    )


def _pairing_values(pairing: PairingReport) -> list[KeyValue]:
    def ms(value: float | None) -> str:
        return "unknown" if value is None else f"{1000 * value:.0f}"

    return [
        KeyValue(key="depth lag after colour p50 (ms)", value=ms(pairing.lag_p50_s)),
        KeyValue(key="depth lag after colour p90 (ms)", value=ms(pairing.lag_p90_s)),
        KeyValue(
            key="answers with depth (last min)", value=f"{pairing.with_depth} of {pairing.answers}"
        ),
        KeyValue(key="answers without 3D from timing (last min)", value=str(pairing.timing_losses)),
        KeyValue(
            key="waits for depth (last min)",
            value=f"{pairing.waits} ({pairing.waits_paid} got it, mean"
            f" {1000 * pairing.wait_mean_s:.0f} ms)",
        ),
    ]


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
