"""The built-in benchmarks (validation splits) in their mmseg / CAT-Seg layouts.

Registered on ``import ovdense.data``. Paths are relative to the data root (``--data-root`` or
``$OVDENSE_DATASETS``); ``datasets/README.md`` says how to get each layout.

========================  ==========================================================  =======
name                      layout under the data root                                  classes
========================  ==========================================================  =======
voc21, voc20              ``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass}``          21, 20
context60, context59      ``VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext}``   60, 59
context459                ``VOCdevkit/VOC2010/SegmentationClassContext459`` (uint16)       459
coco_stuff171             ``coco_stuff164k/annotations/val2017/*_labelTrainIds.png``       171
coco_stuff171_train       ``coco_stuff164k/annotations/train2017/*_labelTrainIds.png``     171
coco_object               ``coco_stuff164k/annotations/val2017/*_instanceTrainIds.png``     81
cityscapes                ``cityscapes/{leftImg8bit,gtFine}/val/<city>``                    19
ade20k_150                ``ADEChallengeData2016/{images,annotations}/validation``         150
ade20k_847                ``ADE20K_2021_17_01/{images,annotations}_detectron2/validation``  847
shapes_seg                ``shapes/seg_val`` (generated on first use, see below)            31
shapes_seg_objects        the same files, background pixels ignored (like VOC20)            30
========================  ==========================================================  =======

Instance (detection) sets: ``lvis_v1_train`` / ``lvis_v1_val`` (``lvis_v1/annotations/
lvis_v1_{train,val}.json``, images ``lvis_v1/{train2017,val2017}``, the COCO 2017 images) and
the OV-LVIS training set ``lvis_v1_train_norare`` (``lvis_v1/annotations/
lvis_v1_train_seen_1203_cat.json``: F-ViT's file, or
:func:`~ovdense.data.ov_splits.write_lvis_ov_train` of ``lvis_v1_train.json``).

The shapes world (:mod:`ovdense.data.synthetic`) is generated, not downloaded: ``shapes_seg``
and the instance set ``shapes_det`` (``shapes/det_val/instances.json``, COCO format) are
written on first use under the data root, or ``~/.cache/ovdense/datasets`` without one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from .catalog import register_semseg
from .metadata import SemSegMetadata
from .semseg import SemSegSample

__all__: list[str] = []

_HINT = "See datasets/README.md for how to lay out or convert this dataset."


def _require(path: Path, dataset: str, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{dataset}: {what} not found; expected '{path}'. {_HINT}")
    return path


def _read_ids(split_file: Path) -> list[str]:
    return [ln.strip() for ln in split_file.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _split_file_lister(
    dataset: str, split_file: str, image_dir: str, label_dir: str, label_ext: str = ".png"
) -> Callable[[Path], list[SemSegSample]]:
    """Ids from a split file; ``{image_dir}/{id}.jpg`` and ``{label_dir}/{id}{label_ext}``."""

    def list_samples(root: Path) -> list[SemSegSample]:
        ids = _read_ids(_require(root / split_file, dataset, "split file"))
        images = _require(root / image_dir, dataset, "image folder")
        labels = _require(root / label_dir, dataset, "label folder")
        return [SemSegSample(i, images / f"{i}.jpg", labels / f"{i}{label_ext}") for i in ids]

    return list_samples


def _image_folder_lister(
    dataset: str,
    image_dir: str,
    label_dir: str,
    label_ext: str,
    image_ext: str = ".jpg",
    require_label: bool = False,
) -> Callable[[Path], list[SemSegSample]]:
    """Every ``{image_dir}/{id}{image_ext}`` with ``{label_dir}/{id}{label_ext}``.

    With ``require_label``, images without a label file are left out (COCO: the same image
    folder serves two label sets).
    """

    def list_samples(root: Path) -> list[SemSegSample]:
        images = _require(root / image_dir, dataset, "image folder")
        labels = _require(root / label_dir, dataset, "label folder")
        samples = [
            SemSegSample(
                p.name[: -len(image_ext)], p, labels / (p.name[: -len(image_ext)] + label_ext)
            )
            for p in sorted(images.glob(f"*{image_ext}"))
            if not p.name.startswith(".")
        ]
        if require_label:
            with_label = [s for s in samples if s.label_path.is_file()]
            if samples and not with_label:
                raise FileNotFoundError(
                    f"{dataset}: no label file '<id>{label_ext}' in '{labels}' for the "
                    f"{len(samples)} images of '{images}'; write them with tools/prepare_coco.py. "
                    + _HINT
                )
            if len(with_label) < len(samples):
                warnings.warn(
                    f"{dataset}: {len(samples) - len(with_label)} image(s) of '{images}' have no "
                    f"'<id>{label_ext}' label and are left out.",
                    stacklevel=3,
                )
            samples = with_label
        return samples

    return list_samples


def _cityscapes_samples(root: Path) -> list[SemSegSample]:
    images = _require(root / "leftImg8bit" / "val", "cityscapes", "image folder")
    labels = _require(root / "gtFine" / "val", "cityscapes", "label folder")
    if next(labels.glob("*/*_gtFine_labelTrainIds.png"), None) is None:
        raise FileNotFoundError(
            f"cityscapes: no '*_gtFine_labelTrainIds.png' under '{labels}/<city>/'; create them "
            "with tools/prepare_cityscapes.py (or cityscapesscripts' createTrainIdLabelImgs). "
            + _HINT
        )
    samples = []
    suffix = "_leftImg8bit.png"
    for p in sorted(images.glob(f"*/*{suffix}")):
        city, stem = p.parent.name, p.name[: -len(suffix)]
        label = labels / city / f"{stem}_gtFine_labelTrainIds.png"
        samples.append(SemSegSample(f"{city}/{stem}", p, label))
    return samples


def _meta(
    name: str,
    classnames_file: str,
    num_classes: int,
    description: str,
    ignore_label: int = 255,
    background_index: int | None = None,
    reduce_zero_label: bool = False,
) -> SemSegMetadata:
    return SemSegMetadata(
        name=name,
        classnames_file=classnames_file,
        num_classes=num_classes,
        ignore_label=ignore_label,
        background_index=background_index,
        reduce_zero_label=reduce_zero_label,
        description=description,
    )


def _register_all() -> None:
    def voc(name: str) -> Callable[[Path], list[SemSegSample]]:
        return _split_file_lister(
            name, "ImageSets/Segmentation/val.txt", "JPEGImages", "SegmentationClass"
        )

    def context(name: str, label_dir: str) -> Callable[[Path], list[SemSegSample]]:
        return _split_file_lister(
            name, "ImageSets/SegmentationContext/val.txt", "JPEGImages", label_dir
        )

    register_semseg(
        _meta(
            "voc21",
            "cls_voc21.txt",
            21,
            "PASCAL VOC 2012 val, 1449 images, with background",
            background_index=0,
        ),
        voc("voc21"),
        "VOCdevkit/VOC2012",
    )
    register_semseg(
        _meta(
            "voc20",
            "cls_voc20.txt",
            20,
            "PASCAL VOC 2012 val without background",
            reduce_zero_label=True,
        ),
        voc("voc20"),
        "VOCdevkit/VOC2012",
    )

    register_semseg(
        _meta(
            "context60",
            "cls_context60.txt",
            60,
            "PASCAL Context val, 5105 images, 59 classes + background",
            background_index=0,
        ),
        context("context60", "SegmentationClassContext"),
        "VOCdevkit/VOC2010",
    )
    register_semseg(
        _meta(
            "context59",
            "cls_context59.txt",
            59,
            "PASCAL Context val without background",
            reduce_zero_label=True,
        ),
        context("context59", "SegmentationClassContext"),
        "VOCdevkit/VOC2010",
    )
    register_semseg(
        _meta(
            "context459",
            "cls_context459.txt",
            459,
            "PASCAL Context val, all 459 classes (uint16 labels)",
            ignore_label=65535,
        ),
        context("context459", "SegmentationClassContext459"),
        "VOCdevkit/VOC2010",
    )

    register_semseg(
        _meta("coco_stuff171", "cls_coco_stuff.txt", 171, "COCO-Stuff 164k val2017, 5000 images"),
        _image_folder_lister(
            "coco_stuff171",
            "images/val2017",
            "annotations/val2017",
            "_labelTrainIds.png",
            require_label=True,
        ),
        "coco_stuff164k",
    )
    register_semseg(
        _meta(
            "coco_stuff171_train",
            "cls_coco_stuff.txt",
            171,
            "COCO-Stuff 164k train2017, 118k images (the training split of trained heads)",
        ),
        _image_folder_lister(
            "coco_stuff171_train",
            "images/train2017",
            "annotations/train2017",
            "_labelTrainIds.png",
            require_label=True,
        ),
        "coco_stuff164k",
    )
    register_semseg(
        _meta(
            "coco_object",
            "cls_coco_object.txt",
            81,
            "COCO val2017 instance masks as semantic labels, 80 things + background",
            background_index=0,
        ),
        _image_folder_lister(
            "coco_object",
            "images/val2017",
            "annotations/val2017",
            "_instanceTrainIds.png",
            require_label=True,
        ),
        "coco_stuff164k",
    )

    register_semseg(
        _meta("cityscapes", "cls_city_scapes.txt", 19, "Cityscapes val, 500 images, train ids"),
        _cityscapes_samples,
        "cityscapes",
    )

    register_semseg(
        _meta(
            "ade20k_150",
            "cls_ade20k.txt",
            150,
            "ADE20K (SceneParsing) val, 2000 images",
            reduce_zero_label=True,
        ),
        _image_folder_lister("ade20k_150", "images/validation", "annotations/validation", ".png"),
        "ADEChallengeData2016",
    )
    register_semseg(
        _meta(
            "ade20k_847",
            "cls_ade20k847.txt",
            847,
            "ADE20K full val, 847 classes (uint16 TIFF labels, CAT-Seg layout)",
            ignore_label=65535,
        ),
        _image_folder_lister(
            "ade20k_847",
            "images_detectron2/validation",
            "annotations_detectron2/validation",
            ".tif",
        ),
        "ADE20K_2021_17_01",
    )

    _register_shapes()
    _register_lvis()


def _register_lvis() -> None:
    """LVIS v1 (mmdet's / F-ViT's layout: one folder with ``annotations/`` and COCO's image
    folders; an image's path is its ``coco_url``'s ``train2017/...`` or ``val2017/...``)."""
    from .catalog import register_instances

    for name, json_name in (
        ("lvis_v1_train", "lvis_v1_train.json"),
        ("lvis_v1_val", "lvis_v1_val.json"),
        ("lvis_v1_train_norare", "lvis_v1_train_seen_1203_cat.json"),
    ):
        register_instances(name, "lvis_v1", json_name=f"annotations/{json_name}", image_dir=".")


def _register_shapes() -> None:
    """The shapes world's val sets (:mod:`ovdense.data.synthetic`), generated on first use."""
    from . import synthetic
    from .catalog import register_instances
    from .semseg import list_folder_samples

    groups = tuple(synthetic.class_groups().items())
    register_semseg(
        SemSegMetadata(
            name="shapes_seg",
            classnames_file="",
            num_classes=len(synthetic.class_names()),
            ignore_label=255,
            background_index=0,
            reduce_zero_label=False,
            description=(
                f"shapes world val, {synthetic.VAL_IMAGES} generated images "
                f"({synthetic.VAL_SIZE} px), seen / held-out compositions"
            ),
            classes=tuple(synthetic.class_names()),
            class_groups=groups,
        ),
        lambda root: list_folder_samples(root / "images", root / "labels", ".png"),
        "shapes/seg_val",
        generate=synthetic.write_shapes_seg,
    )
    # The same files scored like VOC20: background pixels ignored, the 30 compositions only.
    objects = {g: tuple(c - 1 for c in members) for g, members in groups}
    register_semseg(
        SemSegMetadata(
            name="shapes_seg_objects",
            classnames_file="",
            num_classes=len(synthetic.class_names()) - 1,
            ignore_label=255,
            background_index=None,
            reduce_zero_label=True,
            description="shapes_seg without the background class (background pixels ignored)",
            classes=tuple(synthetic.class_names()[1:]),
            class_groups=tuple(objects.items()),
        ),
        lambda root: list_folder_samples(root / "images", root / "labels", ".png"),
        "shapes/seg_val",
        generate=synthetic.write_shapes_seg,
    )
    register_instances("shapes_det", "shapes/det_val", generate=synthetic.write_shapes_det)


_register_all()
