"""The editable install is in the venv's ament index, with its share files, as colcon would do.

`make venv` runs scripts/ament_register.py after `pip install -e`, which leaves setup.py's
data_files out; without it `get_package_share_directory` (and `ros2 launch`) cannot find the
package in the repository's own venv.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE_DIR = ROOT / "spatialthinker_ros"
PACKAGE = "spatialthinker_ros"


def _register_module():
    spec = importlib.util.spec_from_file_location(
        "ament_register", ROOT / "scripts" / "ament_register.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ament_register = _register_module()


def test_the_venv_ament_index_finds_the_package_and_its_share_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    # The venv is the ROS prefix; the Makefile exports it as AMENT_PREFIX_PATH.
    monkeypatch.setenv("AMENT_PREFIX_PATH", sys.prefix)
    assert Path(get_package_prefix(PACKAGE)) == Path(sys.prefix)
    share = Path(get_package_share_directory(PACKAGE))
    assert share == Path(sys.prefix) / "share" / PACKAGE
    for relative in (
        "package.xml",
        "launch/spatialthinker.launch.py",
        "config/spatialthinker.yaml",
    ):
        installed = share / relative
        assert installed.is_file(), f"{installed} missing: run make venv"
        # Linked, as colcon --symlink-install does: edits in the checkout show at once.
        assert installed.samefile(PACKAGE_DIR / relative)


def test_every_data_file_of_setup_py_is_installed() -> None:
    for destination, files in ament_register.data_files(PACKAGE_DIR):
        for relative in files:
            installed = Path(sys.prefix) / destination / Path(relative).name
            assert installed.is_file(), f"{installed} missing: run make venv"
            assert installed.samefile(PACKAGE_DIR / relative)


def test_register_links_data_files_and_drops_stale_ones(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    stale = prefix / "share" / PACKAGE / "launch" / "removed.launch.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# a launch file since deleted from the checkout\n")

    links = ament_register.register(PACKAGE_DIR, prefix)

    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    assert marker in links and marker.samefile(PACKAGE_DIR / "resource" / PACKAGE)
    assert (prefix / "share" / PACKAGE / "config" / "fastdds_large_images.xml").samefile(
        PACKAGE_DIR / "config" / "fastdds_large_images.xml"
    )
    assert not stale.exists()
    # Registering again (make venv after a change) leaves the same links.
    assert sorted(ament_register.register(PACKAGE_DIR, prefix)) == sorted(links)


def test_register_refuses_a_data_file_that_does_not_exist(tmp_path: Path) -> None:
    package = tmp_path / "demo_pkg"
    (package / "resource").mkdir(parents=True)
    (package / "resource" / "demo_pkg").touch()
    (package / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='demo_pkg', data_files=[\n"
        "    ('share/ament_index/resource_index/packages', ['resource/demo_pkg']),\n"
        "    ('share/demo_pkg', ['package.xml']),\n"
        "])\n"
    )
    with pytest.raises(FileNotFoundError, match=r"package\.xml"):
        ament_register.register(package, tmp_path / "prefix")
