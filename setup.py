"""ament_python package definition for fcn_perception.

The training/ folder at the repository root is installed as the subpackage
``fcn_perception.training`` (see ``package_dir``).
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fcn_perception"

runtime_packages = find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
training_packages = [f"{PACKAGE}.training"] + [
    f"{PACKAGE}.training.{p}" for p in find_packages(where="training")
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=runtime_packages + training_packages,
    package_dir={f"{PACKAGE}.training": "training"},
    package_data={PACKAGE: ["weights/*.safetensors", "weights/*.json", "data/*/*"],
                  f"{PACKAGE}.training": ["datasets/*.yaml", "splits/*.txt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.xml")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "pillow", "pyyaml", "tqdm"],
    zip_safe=False,
    maintainer="fcn_perception maintainers",
    maintainer_email="maintainers@fcn-perception.dev",
    description="FCN-8s segmentation and R-FCN detection nodes for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "fcn-perception = fcn_perception.cli:main",
            "segmentation_node = fcn_perception.ros.nodes:segmentation_main",
            "detection_node = fcn_perception.ros.nodes:detection_main",
            "perception_node = fcn_perception.ros.nodes:perception_main",
        ],
    },
)
