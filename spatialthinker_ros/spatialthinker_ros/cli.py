"""The ``spatialthinker`` command line.

Each subcommand is registered by one ``_add_<name>_command(subparsers)`` function listed in
``_COMMANDS``; it sets ``func`` (``args -> exit status``) as the subparser's default. Later
subcommands (ask, replay, eval, tiny-model) plug in the same way.

Errors print one line to stderr and give a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

__all__ = ["build_parser", "main"]

PROG = "spatialthinker"


class CommandError(Exception):
    """A user-facing error: its message is printed as the one error line."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def options_list(value: str) -> list[str]:
    """``--options`` parser: comma-separated, no empty entries."""
    options = [part.strip() for part in value.split(",")]
    if not all(options):
        raise argparse.ArgumentTypeError(f"empty option in {value!r}")
    return options


def positive_int(value: str) -> int:
    """Argument parser for a positive integer."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def _add_parse_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "parse",
        help="parse model output from stdin and print it as JSON",
        description=(
            "Read SpatialThinker output text on stdin and print the parsed result (objects, "
            "relations, answer, choice, strict_format flag, warnings) as JSON."
        ),
    )
    parser.add_argument("--width", type=positive_int, help="stated image width (clips boxes)")
    parser.add_argument("--height", type=positive_int, help="stated image height")
    parser.add_argument(
        "--options",
        type=options_list,
        help="comma-separated multiple-choice options in order, e.g. 'behind,in front of'",
    )
    parser.add_argument("--compact", action="store_true", help="print one line of JSON")
    parser.set_defaults(func=_run_parse)


def _run_parse(args: argparse.Namespace) -> int:
    from spatialthinker_ros.parsing import parse_output

    if (args.width is None) != (args.height is None):
        raise CommandError("--width and --height must be given together")
    size = (args.width, args.height) if args.width is not None else None
    # Bytes, decoded leniently: model text with a broken byte must still parse.
    text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    result = parse_output(text, image_size=size, options=args.options)
    # The same key as `ask` and `replay` print: one name for one flag in every tool's output.
    data = {
        ("strict_format" if key == "strict" else key): value
        for key, value in result.to_dict().items()
    }
    indent = None if args.compact else 2
    sys.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
    return 0


def _add_ask_command(subparsers: argparse._SubParsersAction) -> None:
    # The offline commands live in their own modules (imported here, not at the top, because
    # they import CommandError from this module).
    from spatialthinker_ros.offline import add_ask_command

    add_ask_command(subparsers)


def _add_replay_command(subparsers: argparse._SubParsersAction) -> None:
    from spatialthinker_ros.replay import add_replay_command

    add_replay_command(subparsers)


def _add_eval_command(subparsers: argparse._SubParsersAction) -> None:
    from spatialthinker_ros.evaluate import add_eval_command

    add_eval_command(subparsers)


def _add_tiny_model_command(subparsers: argparse._SubParsersAction) -> None:
    from spatialthinker_ros.offline import add_tiny_model_command

    add_tiny_model_command(subparsers)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_parse_command,
    _add_ask_command,
    _add_replay_command,
    _add_eval_command,
    _add_tiny_model_command,
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
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one line, never a traceback
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
