"""Tests of ``spatialthinker parse``."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spatialthinker_ros.cli import main as cli
from spatialthinker_ros.cli import parse as parse_command


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, argv: list[str], data: bytes
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", _Stdin(data))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_prints_result_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, data_dir: Path
) -> None:
    text = (data_dir / "outputs" / "bbox_outside_image.txt").read_bytes()
    argv = ["parse", "--width", "640", "--height", "480", "--options", "behind,in front of"]
    code, out, err = _run(monkeypatch, capsys, argv, text)
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["objects"] == [{"id": "cup.1", "label": "cup", "bbox": [0.0, 400.0, 640.0, 480.0]}]
    assert (data["choice"], data["choice_index"], data["strict_format"]) == ("A", 0, True)
    # One key name for the flag in every tool's output (ask and replay print strict_format).
    assert "strict" not in data
    assert any("clipped" in w for w in data["warnings"])


def test_parse_without_size_or_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, data_dir: Path
) -> None:
    text = (data_dir / "outputs" / "bbox_outside_image.txt").read_bytes()
    code, out, _ = _run(monkeypatch, capsys, ["parse", "--compact"], text)
    assert code == 0
    assert out.count("\n") == 1
    data = json.loads(out)
    assert [o["bbox"] for o in data["objects"]] == [[-20, 400, 700, 520], [650, 10, 900, 100]]
    assert data["choice"] == "A"  # the letter is still read without options


def test_parse_survives_invalid_utf8(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = _run(monkeypatch, capsys, ["parse"], b"<answer>\xff(A) x</answer>")
    assert code == 0
    assert json.loads(out)["answer"] == "\ufffd(A) x"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["parse", "--width", "640"], "--width and --height must be given together"),
        (["parse", "--width", "abc", "--height", "4"], "not an integer"),
        (["parse", "--width", "0", "--height", "4"], "must be positive"),
        (["parse", "--options", "a,,b"], "empty option"),
        (["parse", "--bogus"], "unrecognized arguments"),
        (["nosuch"], "invalid choice"),
        ([], "required"),
    ],
)
def test_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, argv: list[str], fragment: str
) -> None:
    code, out, err = _run(monkeypatch, capsys, argv, b"")
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1 and fragment in err
    assert "Traceback" not in err


def test_unexpected_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk\nfull")

    monkeypatch.setattr("spatialthinker_ros.core.parsing.parse_output", boom)
    code, _, err = _run(monkeypatch, capsys, ["parse"], b"x")
    assert code == 1
    assert err == "spatialthinker: error: disk full\n"


def test_help_exits_zero(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(monkeypatch, capsys, ["parse", "--help"], b"")
    assert code == 0 and "--options" in out


def test_subcommands_are_registered_by_functions() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["parse"])
    assert args.func is parse_command.run_parse
    assert parse_command.add_parse_command in cli._COMMANDS


PACKAGE = Path(cli.__file__).parent
# The subcommand modules and what they share; the entry point only dispatches to them.
TOOL_MODULES = ("ask", "replay", "evaluate", "parse", "tiny_model")


def _package_imports(module: str) -> set[str]:
    """The package modules ``module`` imports (at the top or inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spatialthinker_"):
            names.add(node.module.removeprefix("spatialthinker_ros."))
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("spatialthinker_")}
    return names


def test_the_argument_helpers_are_a_leaf_and_nothing_imports_the_entry_point() -> None:
    # cli -> ask/replay/evaluate -> cli was a cycle; the helpers they share sit below them all.
    assert _package_imports("args") <= {"answering.parameters", "core.backends"}
    for module in (*TOOL_MODULES, "args", "files", "offline_pipeline"):
        assert "cli" not in _package_imports(module), module
    assert not (PACKAGE / "offline.py").exists()


def test_module_runs_as_a_program(data_dir: Path) -> None:
    text = (data_dir / "outputs" / "canonical_compact.txt").read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spatialthinker_ros.cli.main",
            "parse",
            "--options",
            "behind,in front of",
        ],
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["choice_index"] == 0
