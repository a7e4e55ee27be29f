"""Packaging for ovdense. Install with ``pip install -e ".[dev]"`` (see README.md)."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version_ns: dict = {}
exec((ROOT / "ovdense" / "version.py").read_text(), version_ns)
# Minimum versions: one source of truth, also checked by ``import ovdense`` (open_clip_torch,
# timm). Why each bound and how it was verified: docs/dependencies.md.
versions_ns: dict = {}
exec((ROOT / "ovdense" / "utils" / "versions.py").read_text(), versions_ns)

setup(
    name="ovdense",
    version=version_ns["__version__"],
    description="Dense open-vocabulary perception with CLIP: per-pixel and per-region recognition "
    "for any list of words.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=find_packages(include=["ovdense", "ovdense.*"]),
    # Method presets are Python files; the tiny shapes-world CLIP ships its config and weights;
    # py.typed marks the package as typed (PEP 561).
    package_data={
        "ovdense": [
            "py.typed",
            "configs/**/*.py",
            "integrations/mmseg/configs/**/*.py",
            "integrations/detectron2/configs/*.py",
            "data/classnames/*.txt",
            "assets/model_configs/*.json",
            "assets/weights/*.pt",
        ]
    },
    include_package_data=True,
    # One command with sub-commands (``ovdense demo``, ``ovdense eval``, ``ovdense prepare coco``,
    # ... ``ovdense --help`` lists them); ``python -m ovdense`` runs the same.
    entry_points={"console_scripts": ["ovdense=ovdense.cli:main"]},
    install_requires=versions_ns["requirements"](),
    extras_require={
        # ONNX export (ovdense export-onnx) and ONNX Runtime checks; the tests use them when
        # installed (pytest.importorskip)
        "onnx": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
        # SAM 2 automatic masks (ovdense.sam.mask_source.Sam2MaskSource, mask source "sam2")
        "sam2": ["sam2>=1.0"],
        # SAM 3 (ovdense.sam.sam3, preset sam3): Meta's sam3 package, plus what it imports
        # without declaring (psutil); its own pins (numpy<2.4, huggingface-hub<2) may change
        # those packages: README.md#sam-3 gives an install that keeps them. Not in CI.
        "sam3": ["sam3>=0.1.4", "einops>=0.8", "iopath>=0.1.10", "psutil"],
        # precision="int8" through torchao (else torch.ao's deprecated quantize_dynamic)
        "int8": ["torchao>=0.18"],
        # the official LVIS API, the reference tests/detection/test_lvis.py compares
        # ovdense.evaluation.lvis against (ovdense does not import it: 0.5.3 uses np.float)
        "lvis": ["lvis==0.5.3"],
        "dev": [
            "pytest>=7.4",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "onnx>=1.16",
            "onnxscript>=0.3",
            "onnxruntime>=1.18",
        ],
    },
)
