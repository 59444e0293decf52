"""The ``spatialthinker`` command line: it only dispatches.

Each subcommand lives in its own module (``parse``, ``ask``, ``replay``, ``evaluate``,
``tiny_model``) whose ``add_<name>_command(subparsers)`` is listed in ``_COMMANDS``; it
sets ``func`` (``args -> exit status``) as the subparser's default. The argument helpers they
share are in :mod:`spatialthinker_ros.cli.args`, their files in
:mod:`spatialthinker_ros.cli.files`.

Errors print one line to stderr and give a non-zero exit status, never a traceback: 2 for a
usage error, a bad option or an unusable file (:class:`CommandError`, :class:`InputFileError`,
:class:`OutputFileError`), 1 for anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from spatialthinker_ros.cli.args import CommandError
from spatialthinker_ros.cli.ask import add_ask_command
from spatialthinker_ros.cli.evaluate import add_eval_command
from spatialthinker_ros.cli.files import InputFileError, OutputFileError
from spatialthinker_ros.cli.parse import add_parse_command
from spatialthinker_ros.cli.replay import add_replay_command
from spatialthinker_ros.cli.tiny_model import add_tiny_model_command

__all__ = ["build_parser", "main"]

PROG = "spatialthinker"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_parse_command,
    add_ask_command,
    add_replay_command,
    add_eval_command,
    add_tiny_model_command,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = _Parser(prog=PROG, description="SpatialThinker-7B tools for ROS 2.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit status.
    """
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2, already printed)
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1  # e.g. piped into `head`: nothing more to say
    except (CommandError, InputFileError, OutputFileError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line, never a traceback
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
