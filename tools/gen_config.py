"""Write config/spatialthinker.yaml from the node's parameter table.

Run after changing spatialthinker_ros/parameters.py; a test fails while the
YAML and the table disagree.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spatialthinker_ros"))

from spatialthinker_ros.parameters import PARAMETERS  # noqa: E402

OUT = ROOT / "spatialthinker_ros" / "config" / "spatialthinker.yaml"


def main() -> None:
    lines = [
        "# spatialthinker_node parameters (defaults). Generated from",
        "# spatialthinker_ros/parameters.py by tools/gen_config.py; copy and edit for your robot.",
        "/**:",
        "  ros__parameters:",
    ]
    for spec in PARAMETERS:
        for comment in textwrap.wrap(spec.description, 92):
            lines.append(f"    # {comment}")
        value = (
            json.dumps(spec.default)
            if not isinstance(spec.default, bool)
            else str(spec.default).lower()
        )
        lines.append(f"    {spec.name}: {value}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
