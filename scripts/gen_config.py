"""Write config/spatialthinker.yaml and docs/parameters.md's table from the node's parameter table.

Run after changing spatialthinker_ros/spatialthinker_ros/answering/parameters.py; tests fail while
the YAML or docs/parameters.md disagree with the table.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spatialthinker_ros"))

from spatialthinker_ros.answering.parameters import (  # noqa: E402
    CAMERA_PARAMETERS,
    PARAMETERS,
)

OUT = ROOT / "spatialthinker_ros" / "config" / "spatialthinker.yaml"
PARAMETERS_DOC = ROOT / "docs" / "parameters.md"
BEGIN, END = "<!-- parameters:begin -->", "<!-- parameters:end -->"


def yaml_value(value: object) -> str:
    """A default as YAML writes it (true/false, quoted strings, numbers)."""
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


def parameter_table() -> str:
    """The parameter table of docs/parameters.md (Markdown)."""
    rows = ["| parameter | default | description |", "|---|---|---|"]
    for spec in PARAMETERS:
        default = yaml_value(spec.default)
        text = spec.description.replace("|", "\\|")
        if spec.choices:
            text += f" Choices: {', '.join(f'`{c}`' for c in spec.choices)}."
        if spec.range_text():
            text += f" {spec.range_text()}"
        if spec.read_only:
            text += " *Applied on configure.*"
        rows.append(f"| `{spec.name}` | `{default}` | {text} |")
    for spec in CAMERA_PARAMETERS:  # declared per name in `cameras`
        text = spec.description.replace("|", "\\|")
        if spec.choices:
            text += f" Choices: {', '.join(f'`{c}`' for c in spec.choices if c)}."
        rows.append(f"| `<camera>.{spec.name}` | `{yaml_value(spec.default)}` | {text} |")
    return "\n".join(rows)


def update_parameters_doc() -> None:
    text = PARAMETERS_DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    PARAMETERS_DOC.write_text(text[:start] + "\n" + parameter_table() + "\n" + text[end:])
    print(f"updated {PARAMETERS_DOC.relative_to(ROOT)}")


def main() -> None:
    lines = [
        "# spatialthinker_node parameters (defaults). Generated from answering/parameters.py",
        "# by scripts/gen_config.py; copy and edit for your robot.",
        "/**:",
        "  ros__parameters:",
    ]
    for spec in PARAMETERS:
        for comment in textwrap.wrap(spec.description, 92):
            lines.append(f"    # {comment}")
        if spec.default == []:
            # ROS 2's YAML parameter parser refuses an empty sequence (its type is unknown), and
            # a launch with this file would fail: the node's own default applies instead.
            lines.append(f"    # {spec.name}: [front, wrist]   (default: none, [])")
        else:
            lines.append(f"    {spec.name}: {yaml_value(spec.default)}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    update_parameters_doc()


if __name__ == "__main__":
    main()
