"""A short soak of the running node under load (the full 10-minute run is benchmarks/soak.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[3] / "benchmarks" / "soak.py"


def test_short_soak_answers_every_call_and_keeps_diagnostics_flowing() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "30", "--rate", "15"],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ),
    )
    summary = result.stdout
    assert result.returncode == 0, summary + result.stderr[-3000:]
    assert "result: PASS" in summary
    assert "| calls without a response | 0 |" in summary
    answered = int(summary.split("| calls answered | ")[1].split(" |")[0])
    assert answered > 20, summary
