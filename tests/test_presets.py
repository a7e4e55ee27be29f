"""Kinds of presets (issue #11): segmentor presets apart from training and evaluation configs."""

from __future__ import annotations

import pytest

from ovdense import build_segmentor, list_presets
from ovdense.cli import main
from ovdense.evaluation.runner import resolve_eval_config
from ovdense.model_zoo import ALIASES, PRESET_KINDS, check_preset_kind, preset_kind


def test_list_presets_by_kind():
    seg, ev, train, every = (list_presets(k) for k in ("seg", "eval", "train", "all"))
    assert list_presets() == seg
    assert seg[: len(ALIASES)] == sorted(ALIASES)
    assert all(n in ALIASES or n.split("/")[0] in ("seg", "shapes") for n in seg)
    assert "shapes/vanilla" in seg and "seg/naclip_vitb16" in seg
    assert ev and all(n.startswith("eval/") for n in ev) and "eval/naclip" in ev
    assert train and all(n.startswith("train/") for n in train)
    assert "train/clipself_vitb16" in train
    assert sorted(every) == sorted(seg + ev + train)  # every file has one kind
    with pytest.raises(ValueError, match="Unknown preset kind 'segmentor'"):
        list_presets("segmentor")


def test_preset_kind(tmp_path):
    assert preset_kind("naclip") == preset_kind("shapes/naclip") == "seg"
    assert preset_kind("eval/naclip") == "eval" and preset_kind("train/clipself_vitb16") == "train"
    mine = tmp_path / "mine.py"
    mine.write_text("x = 1\n")
    assert preset_kind(mine) is None  # a file elsewhere: not judged by its folder
    assert set(PRESET_KINDS) == {"seg", "eval", "train"}


@pytest.mark.parametrize(
    "name, what", [("train/clipself_vitb16", "a training config"), ("eval/naclip", "an evaluation")]
)
def test_build_segmentor_refuses_other_kinds_in_one_sentence(name, what):
    with pytest.raises(ValueError) as err:
        build_segmentor(name, device="cpu")
    message = str(err.value)
    assert message.startswith(f"'{name}' is {what}") and "not a segmentor preset" in message
    assert "list_presets('seg')" in message and "ovdense presets" in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")


def test_check_preset_kind_lets_segmentors_and_files_through(tmp_path):
    check_preset_kind("naclip")
    check_preset_kind("shapes/sclip")
    check_preset_kind("eval/naclip", ("seg", "eval"))
    mine = tmp_path / "mine.py"
    mine.write_text("x = 1\n")
    check_preset_kind(mine)


def test_evaluation_refuses_a_training_config():
    with pytest.raises(ValueError, match="is a training config"):
        resolve_eval_config("train/clipself_vitb16", "voc21")
    assert resolve_eval_config("eval/naclip", "voc21").method == "naclip"  # an eval config is fine


def test_presets_command_kinds(capsys):
    assert main(["presets", "--names"]) == 0
    assert capsys.readouterr().out.split() == list_presets("seg")
    for kind in ("eval", "train", "all"):
        assert main(["presets", "--kind", kind, "--names"]) == 0
        assert capsys.readouterr().out.split() == list_presets(kind)
    assert main(["presets", "train", "--names"]) == 0  # a group alone: whatever its kind
    assert capsys.readouterr().out.split() == list_presets("train")
    assert main(["presets", "--kind", "train"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("preset") and "CLIPSelf" in "\n".join(lines)
    with pytest.raises(SystemExit) as exit_:
        main(["presets", "--kind", "nope"])
    assert exit_.value.code == 2
