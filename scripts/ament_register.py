#!/usr/bin/env python3
"""Register an editable ament_python package in a prefix's ament index, as colcon would.

``pip install -e`` installs the Python package but leaves out setup.py's ``data_files`` (the
ament index resource marker, package.xml, launch/ and config/), so ``ament_index_python`` and
``ros2 launch`` do not find the package. This links every data file into the prefix, as
``colcon build --symlink-install`` does, so edits show at once like the editable code does.
The package's share directory is laid anew each time: files gone from the source go from it too.

    python scripts/ament_register.py --prefix .venv-jazzy spatialthinker_ros
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any
from unittest import mock


def data_files(package_dir: Path) -> list[tuple[str, list[str]]]:
    """The ``data_files`` that ``package_dir/setup.py`` passes to setup(), paths relative to it."""
    import setuptools

    captured: dict[str, Any] = {}
    previous = Path.cwd()
    os.chdir(package_dir)  # setup.py globs relative to its own directory, as colcon runs it
    try:
        with mock.patch.object(setuptools, "setup", lambda **kwargs: captured.update(kwargs)):
            runpy.run_path("setup.py", run_name="__main__")
    finally:
        os.chdir(previous)
    return [(destination, list(files)) for destination, files in captured.get("data_files", [])]


def register(package_dir: Path, prefix: Path) -> list[Path]:
    """Link ``package_dir``'s data files into ``prefix``; return the links made."""
    package_dir = package_dir.resolve()
    name = package_dir.name
    share = prefix / "share" / name
    if share.is_symlink() or share.is_file():
        share.unlink()
    elif share.exists():
        shutil.rmtree(share)
    links = []
    for destination, files in data_files(package_dir):
        target_dir = prefix / destination
        target_dir.mkdir(parents=True, exist_ok=True)
        for relative in files:
            source = package_dir / relative
            if not source.is_file():
                raise FileNotFoundError(f"{name}/setup.py names {relative}, which does not exist")
            link = target_dir / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
            links.append(link)
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / name
    if not marker.exists():
        raise RuntimeError(f"{name}/setup.py installs no ament index marker (resource/{name})")
    return links


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True, type=Path, help="install prefix (the venv)")
    parser.add_argument("package_dir", type=Path, help="directory of the package's setup.py")
    args = parser.parse_args(argv)
    links = register(args.package_dir, args.prefix.resolve())
    print(f"{args.package_dir.resolve().name}: {len(links)} files linked into {args.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
