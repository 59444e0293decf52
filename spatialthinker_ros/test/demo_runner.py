"""Run ``tools/demo.py`` (the ``make demo`` path) as a subprocess, for the demo tests and the
one-pipeline test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tools" / "demo.py"


def run_demo(args: list[str], timeout: float = 120.0, **env: str) -> subprocess.CompletedProcess:
    """``tools/demo.py args`` from the repository root, ``env`` added to this environment."""
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        cwd=ROOT,
    )
