"""spatialthinker_node in a subprocess, as a robot runs it (cli layer: the demo, the tests'
harness and the benchmarks start the node with this).

The node runs as ``python -m spatialthinker_ros.ros.node --ros-args --params-file ...``: parameters
come from parameter files (the package's, and one written here from a dict) and ``-p`` overrides,
topics are remapped with ``-r``. Its output (stdout and stderr) goes to a log file that
:meth:`NodeProcess.log` reads, and is echoed live to a stream when asked (the demo shows model
download progress, which redraws with ``\\r``, so chunks are copied as they come, not lines).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["NodeProcess"]


class NodeProcess:
    """spatialthinker_node in a subprocess.

    Args:
        params: Parameter values written to a parameter file of their own (applied after
            ``params_files``).
        remaps: ``name -> target`` remappings (``image``, ``depth``, ``camera_info``, ``__ns``).
        env: Environment variables set over this process's.
        params_files: Parameter files applied first (e.g. the package's ``spatialthinker.yaml``).
        overrides: ``name:=value`` parameters given with ``-p`` (applied last).
        echo: Where to copy the node's output as it comes (None: only the log).

    Attributes:
        process: The ``subprocess.Popen`` of the node.
        params_file: The parameter file written from ``params``.
        log_path: The node's log file (gone after :meth:`stop`; :meth:`log` still answers).
    """

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        remaps: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        params_files: Sequence[str | Path] = (),
        overrides: Sequence[str] = (),
        echo: BinaryIO | None = None,
    ) -> None:
        import yaml

        self.final_log: str | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="spatialthinker_node_")
        self.params_file = Path(self._dir.name) / "params.yaml"
        self.params_file.write_text(
            yaml.safe_dump({"/**": {"ros__parameters": dict(params or {})}})
        )
        self.log_path = Path(self._dir.name) / "node.log"
        command = [sys.executable, "-m", "spatialthinker_ros.ros.node", "--ros-args"]
        for path in (*params_files, self.params_file):
            command += ["--params-file", str(path)]
        for override in overrides:
            command += ["-p", override]
        for name, target in (remaps or {}).items():
            command += ["-r", f"{name}:={target}"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._echo = echo
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self._pump = threading.Thread(target=self._copy_output, daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while chunk := os.read(stream.fileno(), 65536):
            self._log.write(chunk)
            self._log.flush()
            if self._echo is not None:
                self._echo.write(chunk)
                self._echo.flush()

    def log(self) -> str:
        """Everything the node printed so far (also after :meth:`stop`)."""
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_text(errors="replace")

    def configure_failure(self) -> str | None:
        """The reason the node gave for failing to configure, if it did."""
        match = re.search(r"cannot configure: (.*)", self.log())
        return match[1].strip() if match else None

    def stop(self, timeout: float = 20.0) -> int:
        """Interrupt the node as Ctrl-C would (kill it if it does not exit); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._pump.join(5)
        self._log.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        code = self.process.returncode
        self.final_log = self.log_path.read_text(errors="replace")
        self._dir.cleanup()
        return code
