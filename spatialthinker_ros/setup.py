"""Install spatialthinker_ros (ament_python)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spatialthinker_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (
            f"share/{PACKAGE}/config",
            glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"),
        ),
    ],
    # Real ranges for users on a system ROS install; this repository's own
    # environment pins exact versions in ../requirements/.
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6.0",
        "transformers>=4.52,!=5.4.*,!=5.5.0,!=5.5.1,!=5.5.2,!=5.5.3",
        "torch>=2.4",
        "torchvision>=0.19",
        "openai>=1.40",
        "rosbags>=0.10",
        "scipy>=1.10",
    ],
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100"]},
    zip_safe=True,
    maintainer="spatialthinker_ros maintainers",
    maintainer_email="maintainers@spatialthinker-ros.invalid",
    description="ROS 2 perception node for spatial questions with SpatialThinker-7B.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "spatialthinker_node = spatialthinker_ros.ros.node:main",
            "spatialthinker = spatialthinker_ros.cli.main:main",
        ],
    },
)
