"""Security properties that need no running node.

(The API key's path through a running node, header only and never in logs or diagnostics,
is tested in test_hardening_faults.py.)
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from spatialthinker_ros.parameters import PARAMETERS
from spatialthinker_ros.parsing import parse_output
from spatialthinker_ros.tool_files import output_path


def test_no_parameter_can_hold_a_secret() -> None:
    # The only key-related setting names an environment variable; no parameter takes a key.
    names = [spec.name for spec in PARAMETERS]
    assert [n for n in names if "key" in n or "token" in n.replace("tokens", "")] == [
        "openai.api_key_env"
    ]
    assert all("secret" not in n and "password" not in n for n in names)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_cli_output_files_never_leave_the_output_folder(tmp_path_factory, name: str) -> None:
    root = tmp_path_factory.mktemp("out")
    path = output_path(root, name)
    assert path.parent == Path(root).resolve()
    assert not path.name.startswith(".")


def test_known_escape_attempts_stay_inside(tmp_path: Path) -> None:
    for name in ("../../etc/passwd", "/etc/passwd", "..", "a/../../b", "~/.ssh/id_rsa", "\x00x"):
        path = output_path(tmp_path / "out", name)
        assert path.parent == (tmp_path / "out").resolve(), name


def test_model_output_is_only_ever_data() -> None:
    # Python and shell in the scene are parsed as text (or rejected), never executed.
    marker = Path("/tmp/spatialthinker_should_not_exist")
    text = (
        "<scene>{'objects': [__import__('os').system('touch /tmp/spatialthinker_should_not_exist')]"
        ", 'relationships': []}</scene><answer> (A) x </answer>"
    )
    result = parse_output(text, options=["x", "y"])
    assert not marker.exists()
    assert result.objects == []
    assert result.warnings
