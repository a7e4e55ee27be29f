"""``tools/parity_official.py``'s own pieces (no official repository needed): the synthetic
inputs it writes and the table it keeps between markers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

TOOL = Path(__file__).resolve().parents[2] / "tools" / "parity_official.py"


def _tool():
    spec = importlib.util.spec_from_file_location("tool_parity_official", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing must not run the tool
    return module


def test_region_maps_in_corrclips_layout(tmp_path):
    """One ``<stem>.npz`` per image holding an int64 ``instance_mask`` at the image's size,
    with some area left without a mask (0) and several regions; the same images on request."""
    tool = _tool()
    images = tool.make_images(tmp_path, [(30, 44), (40, 26)], "t")
    assert [p.name for p in images] == ["t0.png", "t1.png"]
    again = tool.make_images(tmp_path / "again", [(30, 44), (40, 26)], "t")
    assert np.array_equal(np.array(Image.open(images[0])), np.array(Image.open(again[0])))
    folder = tool.make_regions(tmp_path, images)
    for path, (h, w) in zip(images, [(30, 44), (40, 26)], strict=True):
        with np.load(folder / f"{path.stem}.npz") as f:
            regions = f["instance_mask"]
        assert regions.shape == (h, w) and regions.dtype == np.int64
        values = set(np.unique(regions).tolist())
        assert 0 in values and len(values - {0}) >= 3 and values <= set(range(13))


def test_table_rows_survive_a_merge(tmp_path):
    """``write_table`` replaces only what lies between the markers; ``read_rows`` reads back
    the rows it wrote (as ``--merge`` does), with their settings lines."""
    tool = _tool()
    out = tmp_path / "parity.md"
    out.write_text("# Title\n\nText before.\n")
    row = {
        "method": "trident (official in fp32) (SAM-size images)",
        "setting": "voc21",
        "revision": "a93b346",
        "settings": "official: prob_thd=0.2; ovdense: prob_thd=0.2",
    }
    metrics = {
        "max_abs_diff": 6.4e-7,
        "agreement": 100.0,
        "argmax_agreement": 100.0,
        "official_classes": 1,
        "official_class0": 100.0,
    }
    row["mmseg_resize"] = row["ovdense_resize"] = metrics
    table = "| a |\n" + "\n".join(
        [
            f"| {row['method']} | `cfg_voc21.py` | a93b346 | 1 (100.0 %) | 6.44e-07 | x | y |",
            "",
            f"- {row['method']} / voc21: {row['settings']}",
            "",
        ]
    )
    tool.write_table(out, table)
    tool.write_table(out, table)  # a second run replaces, not appends
    text = out.read_text()
    assert text.startswith("# Title\n\nText before.\n") and text.count(tool.BEGIN) == 1
    rows = tool.read_rows(out)
    assert [(r["method"], r["setting"], r["settings"]) for r in rows] == [
        (row["method"], "voc21", row["settings"])
    ]
    assert tool._base(rows[0]["method"]) == "trident"
