"""Packaging for ovdense. Install with ``pip install -e ".[dev]"`` (see README.md)."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version_ns: dict = {}
exec((ROOT / "ovdense" / "version.py").read_text(), version_ns)

setup(
    name="ovdense",
    version=version_ns["__version__"],
    description="Dense open-vocabulary perception with CLIP: per-pixel and per-region recognition "
    "for any list of words.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ovdense", "ovdense.*"]),
    # Method presets are Python files; the tiny shapes-world CLIP ships its config and weights.
    package_data={
        "ovdense": [
            "configs/**/*.py",
            "data/classnames/*.txt",
            "assets/model_configs/*.json",
            "assets/weights/*.pt",
        ]
    },
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch>=2.24",
        "timm>=0.9",
        "segment-anything>=1.0",
        "opencv-python-headless>=4.8",
        "pycocotools>=2.0.7",
        "numpy>=1.24",
        "pillow>=10.0",
        "omegaconf>=2.3",
        "tqdm>=4.65",
        "scipy>=1.10",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "ruff>=0.4"],
    },
)
