"""ovdense prepare coco (ovdense.data.converters.coco):
stuffthing maps -> labelTrainIds, instances -> instanceTrainIds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ovdense.data.converters import coco as pc
from ovdense.data.prepare import read_class_file

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

# stuffthing-map values (COCO-Stuff id - 1) that no annotation uses
UNUSED = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}


def _explicit_stuff_table() -> dict[int, int]:
    used = [v for v in range(182) if v not in UNUSED]
    assert len(used) == 171
    return {v: used.index(v) if v in used else 255 for v in range(256)}


def _all_values_map(tmp_path: Path) -> Path:
    stm = tmp_path / "coco" / "stuffthingmaps_trainval2017" / "val2017"
    stm.mkdir(parents=True)
    vals = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(vals).save(stm / "000000000001.png")
    Image.fromarray(vals[::-1].copy()).save(stm / "000000000002.png")
    return stm


def _load(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def test_stuff_table_matches_explicit_table_and_class_file():
    table = _explicit_stuff_table()
    lut = pc.stuff_lut()
    assert [int(lut[v]) for v in range(256)] == [table[v] for v in range(256)]
    # anchors: first thing, first value after a gap, first stuff, last stuff
    assert lut[0] == 0 and lut[12] == 11 and lut[91] == 80 and lut[181] == 170
    names = read_class_file("cls_coco_stuff.txt")
    ours = [pc.COCO_STUFF_CLASSES[i] for i in pc.used_stuff_ids()]
    assert pc.check_names(ours, names, "coco_stuff171") == []
    assert [n.replace(" ", "") for n in ours[:80]] == names[:80]  # the 80 things come first


def test_prepare_stuff_writes_mapped_values_and_skips_on_rerun(tmp_path):
    stm = _all_values_map(tmp_path)
    data = tmp_path / "data"
    s = pc.prepare_stuff(stm, data, progress=False)
    assert (s.written, s.skipped, s.failed) == (2, 0, 0)
    ann = data / "coco_stuff164k" / "annotations" / "val2017"
    table = _explicit_stuff_table()
    for name in ("000000000001", "000000000002"):
        src = _load(stm / f"{name}.png")
        out = _load(ann / f"{name}_labelTrainIds.png")
        assert out.dtype == np.uint8
        expected = np.vectorize(table.get)(src)
        np.testing.assert_array_equal(out, expected)
    # re-run: nothing rewritten (a marker value survives) unless --overwrite
    dst = ann / "000000000001_labelTrainIds.png"
    Image.fromarray(np.full((2, 2), 7, np.uint8)).save(dst)
    s = pc.prepare_stuff(stm, data, progress=False)
    assert (s.written, s.skipped) == (0, 2)
    assert _load(dst).shape == (2, 2)
    s = pc.prepare_stuff(stm, data, overwrite=True, progress=False)
    assert (s.written, s.skipped) == (2, 0)
    assert _load(dst).shape == (16, 16)
    assert not list(ann.glob(".*tmp"))  # no temporary files left behind


def test_object_from_stuffthingmaps_is_sclips_table(tmp_path):
    stm = _all_values_map(tmp_path)
    data = tmp_path / "data"
    s = pc.prepare_object_from_stuffthingmaps(stm, data, progress=False)
    assert s.written == 2
    things = [v for v in range(91) if v not in UNUSED]
    assert len(things) == 80
    expected = {v: 255 for v in range(256)}
    expected.update({v: i + 1 for i, v in enumerate(things)})
    expected.update({v: 0 for v in range(91, 182)})
    out = _load(data / "coco_stuff164k/annotations/val2017/000000000001_instanceTrainIds.png")
    src = _load(stm / "000000000001.png")
    np.testing.assert_array_equal(out, np.vectorize(expected.get)(src))
    assert expected[0] == 1 and expected[89] == 80 and expected[91] == 0 and expected[255] == 255


def _rle_uncompressed(m: np.ndarray) -> dict:
    """COCO's uncompressed RLE: column-major runs starting with zeros."""
    flat = m.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(m.shape)}


def _rle_compressed(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])}


def _poly_mask(poly: list[float], h: int, w: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w))).astype(bool)


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture()
def instances(tmp_path, write_blank_image):
    """Three images: overlapping polygons / RLE / crowd RLE, a pair of RLEs, no annotation."""
    cats = [
        {"id": i, "name": n, "supercategory": "x"}
        for i, n in pc.COCO_STUFF_CLASSES.items()
        if i <= 91 and n is not None
    ]
    h1, w1 = 20, 30
    big_poly = [1.0, 1.0, 28.0, 1.0, 28.0, 18.0, 1.0, 18.0]
    tri_poly = [12.0, 6.0, 24.0, 6.0, 18.0, 16.0]
    dog = _box(h1, w1, 5, 15, 10, 20)
    crowd = _box(h1, w1, 8, 12, 12, 26)
    anns, expected_masks = [], {1: [], 2: []}  # image -> [(ann id, mask, category, iscrowd)]

    def add(aid, img, cat, seg, m, iscrowd=0):
        anns.append(
            {"id": aid, "image_id": img, "category_id": cat, "segmentation": seg,
             "area": float(m.sum()), "bbox": [0, 0, 1, 1], "iscrowd": iscrowd}
        )  # fmt: skip
        expected_masks[img].append((aid, m, cat, iscrowd))

    # listed small-first, so insertion order would give the wrong answer
    add(10, 1, 90, _rle_uncompressed(crowd), crowd, iscrowd=1)  # toothbrush -> 80, crowd
    add(11, 1, 3, [tri_poly], _poly_mask(tri_poly, h1, w1))  # car -> 3
    add(12, 1, 1, [big_poly], _poly_mask(big_poly, h1, w1))  # person -> 1
    add(13, 1, 18, _rle_compressed(dog), dog)  # dog -> 17
    h2, w2 = 12, 10
    a = _box(h2, w2, 0, 8, 0, 8)
    b = _box(h2, w2, 4, 12, 3, 10)  # 8 x 7 = 56 < 64: b on top
    add(20, 2, 44, _rle_compressed(b), b)  # bottle -> 40
    add(21, 2, 27, _rle_compressed(a), a)  # backpack -> 25
    images = [
        {"id": 1, "file_name": "000000000001.jpg", "height": h1, "width": w1},
        {"id": 2, "file_name": "000000000002.jpg", "height": h2, "width": w2},
        {"id": 3, "file_name": "000000000003.jpg", "height": 5, "width": 6},
    ]
    path = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    for im in images:
        write_blank_image(
            tmp_path / "coco" / "val2017" / im["file_name"], (im["height"], im["width"])
        )
    label_of = {c["id"]: k for k, c in enumerate(cats, start=1)}
    return path, expected_masks, label_of, {im["id"]: im for im in images}


def _expected(masks, label_of, shape, crowd_ignore=False) -> np.ndarray:
    """Per pixel: label of the smallest-area mask covering it (0 where none)."""
    out = np.zeros(shape, np.uint8)
    if not masks:
        return out
    stack = np.stack([m for _, m, _, _ in masks])
    areas = np.array([m.sum() for _, m, _, _ in masks], float)
    cost = np.where(stack, areas[:, None, None], np.inf)
    top = cost.argmin(0)
    covered = stack.any(0)
    labels = np.array(
        [255 if (crowd_ignore and c) else label_of[cat] for _, _, cat, c in masks], np.uint8
    )
    out[covered] = labels[top[covered]]
    return out


@pytest.mark.parametrize("crowd", ["label", "ignore"])
def test_prepare_object_paints_small_on_top(tmp_path, instances, crowd):
    path, masks, label_of, images = instances
    data = tmp_path / "data"
    s = pc.prepare_object(path, data, crowd=crowd, progress=False)
    assert (s.written, s.skipped, s.failed) == (3, 0, 0)
    assert len(s.warnings) == 1 and "no images in" in s.warnings[0]  # not linked
    assert label_of[90] == 80 and label_of[18] == 17 and label_of[3] == 3
    ann = data / "coco_stuff164k" / "annotations" / "val2017"
    for img_id, im in images.items():
        out = _load(ann / f"{Path(im['file_name']).stem}_instanceTrainIds.png")
        shape = (im["height"], im["width"])
        exp = _expected(masks.get(img_id, []), label_of, shape, crowd_ignore=crowd == "ignore")
        np.testing.assert_array_equal(out, exp)
    out1 = _load(ann / "000000000001_instanceTrainIds.png")
    assert set(np.unique(out1)) == {0, 1, 3, 17, 80 if crowd == "label" else 255}
    # crowd (56 px) over car (58 px) over dog (100 px) over person (459 px)
    assert out1[10, 15] == (80 if crowd == "label" else 255)
    assert out1[7, 17] == 3 and out1[14, 10] == 17
    assert out1[0, 0] == 0 and out1[3, 3] == 1
    out2 = _load(ann / "000000000002_instanceTrainIds.png")
    assert out2[5, 5] == 40 and out2[1, 1] == 25 and out2[1, 9] == 0


def test_prepare_object_cli_links_images_and_reruns(tmp_path, instances, capsys):
    path, *_ = instances
    data = tmp_path / "data"
    argv = ["object", "--coco-root", str(tmp_path / "coco"), "--data-root", str(data)]
    assert pc.main([*argv, "--link-images"]) == 0
    assert "3 written, 0 skipped" in capsys.readouterr().out
    link = data / "coco_stuff164k" / "images" / "val2017" / "000000000002.jpg"
    assert link.is_symlink() and link.resolve() == (tmp_path / "coco/val2017/000000000002.jpg")
    assert pc.main(argv) == 0
    assert "0 written, 3 skipped" in capsys.readouterr().out


def test_missing_inputs_are_one_line_errors(tmp_path, capsys, monkeypatch):
    coco = tmp_path / "nowhere"
    assert pc.main(["stuff", "--coco-root", str(coco), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stuffthingmaps_trainval2017.zip" in err
    assert str(coco / "stuffthingmaps_trainval2017" / "val2017") in err
    assert pc.main(["object", "--coco-root", str(coco), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "instances_val2017.json" in err and "annotations_trainval2017.zip" in err
    monkeypatch.delenv("OVDENSE_DATASETS", raising=False)
    assert pc.main(["stuff", "--coco-root", str(coco)]) == 2
    assert "OVDENSE_DATASETS" in capsys.readouterr().err
    # --link-images needs the image folder
    stm = _all_values_map(tmp_path)
    argv = ["stuff", "--stuffthingmaps", str(stm), "--data-root", str(tmp_path / "d")]
    assert pc.main([*argv, "--images", str(coco), "--link-images"]) == 2
    assert "val2017.zip" in capsys.readouterr().err


def test_data_root_from_environment(tmp_path, monkeypatch):
    stm = _all_values_map(tmp_path)
    monkeypatch.setenv("OVDENSE_DATASETS", str(tmp_path / "env"))
    assert pc.main(["stuff", "--stuffthingmaps", str(stm)]) == 0
    out = tmp_path / "env/coco_stuff164k/annotations/val2017/000000000002_labelTrainIds.png"
    assert out.is_file()


def test_object_output_loads_through_the_catalog(tmp_path, instances):
    from ovdense.data import build_semseg_dataset

    path, masks, label_of, images = instances
    data = tmp_path / "data"
    s = pc.prepare_object(
        path, data, images=path.parents[1] / "val2017", link_images="symlink", progress=False
    )
    assert s.warnings == []
    ds = build_semseg_dataset("coco_object", data)
    assert len(ds) == 3
    item = ds[0]
    assert item["id"] == "000000000001"
    np.testing.assert_array_equal(item["label"], _expected(masks[1], label_of, (20, 30)))


def test_train_split_feeds_coco_stuff171_train(tmp_path):
    """``--split train2017``: the training split of trained heads, loadable from the catalog."""
    from ovdense.data import build_semseg_dataset

    coco = tmp_path / "coco"
    stm = coco / "stuffthingmaps_trainval2017" / "train2017"
    stm.mkdir(parents=True)
    vals = np.array([[0, 12, 91, 255], [181, 11, 0, 0]], dtype=np.uint8)
    Image.fromarray(vals).save(stm / "000000000009.png")
    (coco / "train2017").mkdir()
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(coco / "train2017" / "000000000009.jpg")
    data = tmp_path / "data"
    argv = ["stuff", "--split", "train2017", "--coco-root", str(coco), "--data-root", str(data)]
    assert pc.main([*argv, "--link-images"]) == 0
    ann = data / "coco_stuff164k" / "annotations" / "train2017" / "000000000009_labelTrainIds.png"
    assert _load(ann).tolist() == [[0, 11, 80, 255], [170, 255, 0, 0]]
    ds = build_semseg_dataset("coco_stuff171_train", data)
    assert len(ds) == 1 and ds[0]["label"].tolist() == [[0, 11, 80, 255], [170, 255, 0, 0]]
    assert not (data / "coco_stuff164k" / "annotations" / "val2017").exists()
