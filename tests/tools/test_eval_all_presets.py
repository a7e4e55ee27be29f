"""``ovdense eval-all`` reads its benchmark suite and the published numbers from each method's
evaluation preset (issue #11): data of ``ovdense/configs/eval/<method>.py``, not tool lists."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from ovdense.data import list_datasets
from ovdense.evaluation.base import format_metric
from ovdense.evaluation.runner import (
    PRESET_INFO_KEYS,
    default_suite,
    eval_preset,
    resolve_eval_config,
)
from ovdense.model_zoo import ALIASES, CONFIGS_DIR

ROOT = Path(__file__).resolve().parents[2]
EVAL_PRESETS = sorted(p.stem for p in (CONFIGS_DIR / "eval").glob("*.py") if p.stem != "unified")
OVSS = ["voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff171"]
OVSS += ["cityscapes", "ade20k_150"]


def _tool():
    return importlib.import_module("ovdense.cli.eval_all")


def _docs_rows() -> tuple[list[str], dict[str, list[float | None]]]:
    """The column labels and the rows of docs/results.md's training-free OVSS table."""
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    section = text.split("### Training-free OVSS", 1)[1].split("\n#", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r]
    head = [c.strip() for c in rows[0].strip("|").split("|")][2:]
    out = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        method = re.split(r"[ (]", cells[0])[0].lower().replace("-", "_")
        out[method] = [None if c == "–" else float(c) for c in cells[2:]]
    return head, out


def _trained_rows() -> tuple[list[str], dict[str, list[float | None]]]:
    """Column labels and rows of docs/results.md's trained OVSS table (``catseg`` = the
    CAT-Seg ViT-B row, the model of the ``catseg`` preset)."""
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    section = text.split("### Trained OVSS", 1)[1].split("\n#", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r]
    head = [c.strip() for c in rows[0].strip("|").split("|")][1:-1]
    out = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0] == "CAT-Seg ViT-B":
            out["catseg"] = [None if c == "–" else float(c) for c in cells[1:-1]]
    return head, out


#: methods whose evaluation preset declares its own suite (trained heads: the zero-shot
#: benchmarks of models trained on COCO-Stuff), with docs/results.md's table of those numbers
OWN_SUITE = {"catseg": _trained_rows}


def test_the_default_suite_is_the_eight_ovss_benchmarks():
    suite = default_suite()
    assert list(suite) == OVSS and set(suite) <= set(list_datasets())
    head, _ = _docs_rows()
    assert list(suite.values()) == head  # the column labels of docs/results.md


@pytest.mark.parametrize("method", EVAL_PRESETS)
def test_every_method_preset_declares_its_method_suite_and_published_numbers(method):
    assert method in ALIASES
    info = eval_preset(method)
    assert info.method == method and info.file == CONFIGS_DIR / "eval" / f"{method}.py"
    if method in OWN_SUITE:
        head, _ = OWN_SUITE[method]()
        assert set(info.suite) <= set(list_datasets()) and list(info.suite.values()) == head
    else:
        assert info.suite == default_suite()
    assert set(info.published) <= set(info.suite)
    assert all(0 < v < 100 for v in info.published.values())
    assert bool(info.published_source) == bool(info.published)
    # the same declarations under the unified protocol (the method's, whatever its settings)
    unified = eval_preset(method, "unified")
    assert (unified.method, unified.published) == (method, info.published)


@pytest.mark.parametrize("method", EVAL_PRESETS)
def test_published_numbers_are_those_of_docs_results(method):
    info = eval_preset(method)
    if not info.published:
        pytest.skip("no published numbers declared")
    _, rows = OWN_SUITE[method]() if method in OWN_SUITE else _docs_rows()
    assert [info.published.get(d) for d in info.suite] == rows[method]


def test_sclip_naclip_clearclip_maskclip_publish():
    assert {m for m in EVAL_PRESETS if eval_preset(m).published} == {
        "catseg",
        "corrclip",
        "sclip",
        "naclip",
        "clearclip",
        "maskclip",
        "resclip",
        "trident",
    }


@pytest.mark.parametrize("method", EVAL_PRESETS)
def test_method_declarations_stay_out_of_the_resolved_config(method):
    cfg = resolve_eval_config(method, "voc21")
    assert list(cfg) == ["model", "class_rule", "dataset", "protocol", "method"]
    assert cfg.method == method and not set(PRESET_INFO_KEYS[1:]) & set(cfg)


def test_published_row_and_average():
    info = eval_preset("naclip")
    miou = {d: 50.0 for d in info.suite}
    table = _tool().build_table("naclip", "paper", miou, suite=info.suite, published=info.published)
    lines = table.splitlines()
    assert lines[2] == "| | " + " | ".join(info.suite.values()) + " | Avg |"
    assert lines[4] == "| ovdense | " + " | ".join(["50.00"] * 8) + " | 50.00 |"
    values = [64.07, 34.99, 36.19, 83.03, 38.35, 25.69, 38.27, 19.05]
    expected = [format_metric(v) for v in [*values, sum(values) / 8]]
    assert lines[5] == "| published | " + " | ".join(expected) + " |"
    unified = _tool().build_table("naclip", "unified", miou, published=info.published)
    assert "published" not in unified and unified.splitlines()[2] == lines[2]
    masked = eval_preset("maskclip").published  # no numbers for the first three: no average
    row = _tool().build_table("maskclip", "paper", miou, published=masked).splitlines()[5]
    assert row.startswith("| published | – | – | – | 61.80") and row.endswith("| – |")


def test_a_user_config_declaring_its_own_suite_and_numbers(tmp_path, tiny_preset):
    preset = tiny_preset("sclip")
    text = preset.read_text() + (
        'method = "mine"\n'
        'suite = {"ade20k_150": "ADE-150", "cityscapes": "City"}\n'
        'published = {"ade20k_150": 12.5}\n'
        'published_source = "my notes"\n'
    )
    mine = tmp_path / "mine.py"
    mine.write_text(text)
    info = eval_preset(mine)
    assert info.method == "mine" and list(info.suite) == ["ade20k_150", "cityscapes"]
    assert info.published == {"ade20k_150": 12.5} and info.published_source == "my notes"
    assert resolve_eval_config(str(mine), "ade20k_150").method == "mine"
    args = _tool().parse_args(["--config", str(mine)])
    assert args.datasets == ["ade20k_150", "cityscapes"]  # the preset's suite
    with pytest.raises(SystemExit):
        _tool().parse_args(["--config", str(mine), "--datasets", "voc21"])  # not in its suite


def test_a_user_config_named_after_a_method_gets_its_published_numbers(tmp_path, tiny_preset):
    """As before the numbers moved into the presets: a copy named ``sclip.py`` shows SCLIP's."""
    copy = tmp_path / "sclip.py"
    copy.write_text(tiny_preset("sclip").read_text())
    info = eval_preset(copy)
    assert info.method == "sclip" and info.published == eval_preset("sclip").published
    assert eval_preset(tiny_preset("naclip")).published == {}  # tiny_naclip.py: no method


def test_eval_all_default_datasets_and_table_json(tmp_path, tiny_preset, monkeypatch):
    tool = _tool()
    assert tool.parse_args(["--config", "naclip"]).datasets == OVSS
    assert tool.parse_args(["--config", "nope"]).datasets == OVSS  # main reports the name
    # a run over one benchmark: the published numbers and their source go to table.json
    copy = tmp_path / "naclip.py"
    copy.write_text(tiny_preset("naclip").read_text())

    def fake_run_eval(config, name, **kwargs):
        return {"metrics": {"mIoU": 40.0}}

    monkeypatch.setattr(tool, "run_eval", fake_run_eval)
    monkeypatch.setattr(tool, "build_semseg_dataset", lambda *a, **k: None)
    out = tmp_path / "out"
    argv = ["--config", str(copy), "--datasets", "voc21", "--output", str(out), "--device", "cpu"]
    assert tool.main(argv) == 0
    table = json.loads((out / "table.json").read_text())
    assert table["mIoU"] == {"voc21": 40.0} and table["published"]["voc21"] == 64.07
    assert table["published_source"].startswith("NACLIP")
    assert "| published | 64.07 | 64.07 |" in (out / "table.md").read_text()
