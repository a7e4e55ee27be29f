"""The CLIP-DINOiser / CLIPSelf export and convert tools: ``main`` raises user errors (the
``__main__`` block runs it through ``run_cli``), and an output is only ever replaced by a
complete file."""

from pathlib import Path

import pytest
import torch

from ovdense.cli import convert_clip_dinoiser, export_clip_dinoiser, export_clipself
from ovdense.engine.checkpoint import save_checkpoint
from ovdense.modeling.refiners.clip_dinoiser import CLIPDINOiserHead
from ovdense.utils.cli import run_cli

CLI_DIR = Path(__file__).resolve().parents[2] / "ovdense" / "cli"


def _head(width: int = 16, proj_dim: int = 8) -> CLIPDINOiserHead:
    torch.manual_seed(0)
    head = CLIPDINOiserHead(width, proj_dim=proj_dim)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn_like(p))
    return head


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _full_disk(good: bytes):
    def save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(good[: len(good) // 2])
        raise OSError(28, "No space left on device (simulated)")

    return save


def test_convert_clip_dinoiser_writes_atomically(tmp_path, monkeypatch):
    head = _head()
    src, dst = tmp_path / "last.pt", tmp_path / "head.pth"
    torch.save({"epoch": 3, "model_state_dict": head.state_dict()}, src)
    assert convert_clip_dinoiser.main([str(src), str(dst)]) == 0
    good = dst.read_bytes()
    state = torch.load(dst, weights_only=True)
    assert torch.equal(state["obj_proj.weight"], head.obj_proj.weight)
    monkeypatch.setattr(torch, "save", _full_disk(good))
    with pytest.raises(OSError, match="simulated"):
        convert_clip_dinoiser.main([str(src), str(dst)])
    assert dst.read_bytes() == good and _hidden(tmp_path) == []


def test_convert_clip_dinoiser_user_error_is_raised_then_reported(tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("nope")
    with pytest.raises(ValueError, match="junk.pt"):
        convert_clip_dinoiser.main([str(tmp_path / "junk.pt")])
    assert run_cli(convert_clip_dinoiser.main, [str(tmp_path / "junk.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def _run_folder(tmp_path: Path, head: CLIPDINOiserHead) -> Path:
    run = tmp_path / "run"
    model = {f"head.{k}": v for k, v in head.state_dict().items()}
    state = {"model": model, "optimizer": {}, "iter": 4, "data": {"epoch": 2}}
    save_checkpoint(state, run, 4)
    return run


def test_export_clip_dinoiser_from_a_run_folder_atomically(tmp_path, monkeypatch):
    head = _head()
    run, dst = _run_folder(tmp_path, head), tmp_path / "last.pt"
    assert export_clip_dinoiser.main([str(run), str(dst)]) == 0
    raw = torch.load(dst, weights_only=True)
    assert raw["epoch"] == 2
    assert torch.equal(raw["model_state_dict"]["bkg_decoder.weight"], head.bkg_decoder.weight)
    good = dst.read_bytes()
    monkeypatch.setattr(torch, "save", _full_disk(good))
    with pytest.raises(OSError, match="simulated"):
        export_clip_dinoiser.main([str(run), str(dst)])
    assert dst.read_bytes() == good and _hidden(tmp_path) == []


def test_export_clip_dinoiser_missing_run_is_raised_then_reported(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty"), str(tmp_path / "last.pt")]
    with pytest.raises(FileNotFoundError, match="no last_checkpoint"):
        export_clip_dinoiser.main(args)
    assert run_cli(export_clip_dinoiser.main, args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "last.pt").exists()


LINEAR_CONFIG = """
import torch
from ovdense.config import L

model = L(torch.nn.Linear)(in_features=4, out_features=2)
"""


def test_export_clipself_mismatched_checkpoint_is_a_user_error(tmp_path, capsys):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(LINEAR_CONFIG)
    run = tmp_path / "run"
    save_checkpoint({"model": {"weight": torch.zeros(3, 3)}, "optimizer": {}, "iter": 1}, run, 1)
    args = ["--config", str(cfg), "--checkpoint", str(run), "--output", str(tmp_path / "o.pt")]
    with pytest.raises(ValueError, match=r"model_0000001.pt does not fit the model of .*cfg.py"):
        export_clipself.main(args)
    assert run_cli(export_clipself.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize(
    "tool",
    [
        "train",
        "train_tiny_clip",
        "export_clipself",
        "export_clip_dinoiser",
        "convert_clip_dinoiser",
        "convert_eva_clip",
    ],
)
def test_every_tool_runs_main_through_run_cli(tool):
    source = (CLI_DIR / f"{tool}.py").read_text()
    assert "USER_ERRORS" not in source and "report_user_error" not in source
    main_block = source.split('if __name__ == "__main__":')[1]
    assert "sys.exit(run_cli(main" in main_block
