"""Running a segmentor over a benchmark: config resolution, resumable predictions, metrics.

Used by ``tools/eval_seg.py`` and ``tools/eval_all.py``; works under ``torchrun`` (one shard of
the images per process, metrics summed across processes).

An output folder holds the predictions of one setting only: ``fingerprint.json`` records what
made them (the resolved config, the weights, the dataset, the protocol, the ovdense version), a
re-run resumes only when its fingerprint is the same (``--limit`` is not part of it), and
``eval.lock`` keeps a second run out while one is at work.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import yaml
from omegaconf import DictConfig, ListConfig
from torch import nn
from tqdm.auto import tqdm

from ..config import LazyConfig, instantiate
from ..config.lazy import target_parameters, to_py
from ..data import (
    DatasetFileError,
    SemSegDataset,
    build_semseg_dataset,
    get_metadata,
    parse_dataset_spec,
)
from ..engine.distributed import init_distributed
from ..model_zoo import (
    ALIASES,
    CONFIGS_DIR,
    check_preset_kind,
    clip_source_overrides,
    get_config_file,
)
from ..utils.cli import USER_ERRORS, UserError, resolve_device
from ..utils.io import atomic_write, atomic_write_text, pid_alive, remove_stale_temporaries
from ..utils.labels import load_label_png, save_label_png
from ..utils.regions import read_region_map
from ..version import __version__
from .base import format_metric, json_safe
from .sem_seg import SemSegEvaluator

__all__ = [
    "FINGERPRINT_NAME",
    "LOCK_NAME",
    "PROTOCOLS",
    "NothingEvaluatedError",
    "OutputLock",
    "OutputLockedError",
    "OutputMismatchError",
    "EvalPreset",
    "default_output_dir",
    "default_suite",
    "eval_preset",
    "fingerprint_differences",
    "method_name",
    "output_fingerprint",
    "output_name",
    "resolve_eval_config",
    "run_eval",
]

PROTOCOLS = ("paper", "unified")

#: Files of an output folder: what made the predictions, and the lock of a run at work.
FINGERPRINT_NAME = "fingerprint.json"
LOCK_NAME = "eval.lock"
#: The files a run writes at the top of its output folder (``--overwrite`` deletes these and
#: ``preds/*.png``, nothing else).
OUTPUT_FILES = ("results.json", "results.md", "config.yaml", FINGERPRINT_NAME)
#: Version of the fingerprint's layout (a folder of another layout is not resumed).
_FINGERPRINT_FORMAT = 1
#: A lock file that is still empty this long after its creation was left by a crashed run.
_EMPTY_LOCK_GRACE_S = 30.0

_T = TypeVar("_T")


class OutputMismatchError(UserError):
    """The output folder holds predictions made by another setting (or of unknown origin)."""


class OutputLockedError(UserError):
    """Another run is at work in the output folder."""


class NothingEvaluatedError(UserError):
    """Not one image of the dataset could be evaluated (all skipped)."""


#: What an evaluation preset declares about its method, not about its settings: kept out of the
#: resolved config (and so out of ``config.yaml`` and the fingerprint); see :func:`eval_preset`.
PRESET_INFO_KEYS = ("method", "suite", "published", "published_source")


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalPreset:
    """What a method's evaluation preset declares besides its settings.

    Attributes:
        method: The method's name (the preset's ``method``; for a config file that declares
            none, inferred from the file name by :func:`method_name`).
        file: The config file the protocol loads (``configs/eval/<method>.py`` for a method
            preset under the paper protocol).
        suite: The benchmarks ``ovdense eval-all`` runs and averages, catalog name -> table
            column, in table order (the preset's ``suite``, else :func:`default_suite`).
        published: mIoU (%) the method's paper or repository published, per benchmark (the
            preset's ``published``; empty when none).
        published_source: Where ``published`` comes from.
    """

    method: str
    file: Path
    suite: dict[str, str]
    published: dict[str, float] = field(default_factory=dict)
    published_source: str = ""


def default_suite() -> dict[str, str]:
    """The eight standard OVSS benchmarks (``suite`` of ``configs/eval/unified.py``), catalog
    name -> table column, in table order."""
    suite = LazyConfig.load(CONFIGS_DIR / "eval" / "unified.py").suite
    return {str(k): str(v) for k, v in suite.items()}


def method_name(config: str) -> str:
    """``naclip`` for ``naclip``, ``seg/naclip_vitb16`` or ``.../naclip_vitb16.py``.

    Inferred from the name; the method presets declare theirs (``method`` of
    ``configs/eval/<method>.py``, see :func:`eval_preset`), so this is the fallback for user
    config files.
    """
    stem = Path(str(config)).stem
    for alias in ALIASES:
        if stem == alias or stem.startswith(alias + "_"):
            return alias
    return stem


def output_name(config: str | os.PathLike) -> str:
    """The folder name of a preset's runs; two different presets never share one.

    A method alias, or the preset file of an alias, gives the alias (``naclip``,
    ``seg/naclip_vitb16`` -> ``naclip``); another preset its path under ``ovdense/configs``
    (``shapes/maskclip`` -> ``shapes_maskclip``); a config file elsewhere its stem.
    """
    text = str(config)
    if text in ALIASES:
        return text
    path = Path(text)
    if path.suffix in (".py", ".yaml"):
        if path.is_file():
            try:
                rel = path.resolve().relative_to(CONFIGS_DIR.resolve())
            except ValueError:
                return path.stem
        elif (CONFIGS_DIR / text).is_file() and not path.is_absolute():
            rel = Path(text)
        else:
            return path.stem
    else:
        rel = Path(text)
    name = rel.with_suffix("").as_posix() if rel.suffix in (".py", ".yaml") else rel.as_posix()
    for alias, file in ALIASES.items():
        if name == Path(file).with_suffix("").as_posix():
            return alias
    return name.replace("/", "_")


def _eval_file(config: str | os.PathLike, protocol: str) -> Path:
    """The file a protocol loads: under ``paper``, ``configs/eval/<method>.py`` for a method
    preset that has one; else the config itself (``unified`` applies its settings on top)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    file = get_config_file(config)
    check_preset_kind(config, ("seg", "eval"))
    method = method_name(str(config))
    eval_file = CONFIGS_DIR / "eval" / f"{method}.py"
    is_preset = method in ALIASES and file.resolve() == get_config_file(method).resolve()
    return eval_file if protocol == "paper" and is_preset and eval_file.is_file() else file


def _declared_method(cfg: DictConfig) -> str | None:
    value = cfg.get("method")
    return value if isinstance(value, str) and value else None


def _py(node: Any) -> Any:
    return to_py(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def eval_preset(config: str | os.PathLike, protocol: str = "paper") -> EvalPreset:
    """The method, benchmark suite and published numbers of ``config`` under ``protocol``.

    Read from the file :func:`resolve_eval_config` loads: a method's evaluation preset
    (``configs/eval/<method>.py``) declares ``method``, ``suite`` (or imports the shared one of
    ``configs/eval/unified.py``), ``published`` (mIoU per benchmark) and ``published_source``.
    A config file that declares none of them gets its method from its file name, the default
    suite, and the published numbers of the method preset its name gives (:func:`output_name`,
    e.g. a copy named ``sclip.py``), if any.

    Raises:
        KeyError: Unknown preset.
        FileNotFoundError: A config file that does not exist.
        ValueError: Unknown protocol, or a training config.
    """
    file = _eval_file(config, protocol)
    cfg = LazyConfig.load(file)
    method = _declared_method(cfg) or method_name(str(config))
    suite = _py(cfg.get("suite")) or default_suite()
    published, source = _py(cfg.get("published")), cfg.get("published_source")
    if published is None:
        known = CONFIGS_DIR / "eval" / f"{output_name(config)}.py"
        if known.is_file() and known.resolve() != file.resolve():
            info = LazyConfig.load(known)
            published, source = _py(info.get("published")), info.get("published_source")
    return EvalPreset(
        method=method,
        file=file,
        suite={str(k): str(v) for k, v in suite.items()},
        published={str(k): float(v) for k, v in (published or {}).items() if v is not None},
        published_source=str(source or ""),
    )


def default_output_dir(config: str | os.PathLike, protocol: str, dataset: str) -> Path:
    """``output/eval/<output_name(config)>_<protocol>/<dataset>``."""
    return Path("output") / "eval" / f"{output_name(config)}_{protocol}" / dataset


def resolve_eval_config(
    config: str,
    dataset: str,
    protocol: str = "paper",
    overrides: Sequence[str] = (),
    *,
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> DictConfig:
    """The resolved config: ``model`` (segmentor), ``class_rule``, ``dataset``, ``protocol`` and
    ``method``.

    ``paper``: ``configs/eval/<method>.py`` when it exists (else the preset as is), with its
    per-benchmark changes; ``unified``: the preset's strategy under ``configs/eval/unified.py``.
    ``method`` is the one the file declares (else :func:`method_name`); the rest of what a
    preset declares about its method (suite, published numbers: :func:`eval_preset`) is left
    out, so it is no part of ``config.yaml`` nor of an output folder's fingerprint.
    ``model`` / ``pretrained`` / ``checkpoint`` replace the CLIP weights the way every tool does
    (:func:`ovdense.model_zoo.clip_source_overrides`); ``overrides`` are applied last.
    """
    cfg = LazyConfig.load(_eval_file(config, protocol))
    method = _declared_method(cfg) or method_name(config)
    for key in PRESET_INFO_KEYS:
        cfg.pop(key, None)
    cfg.setdefault("class_rule", "unified")
    cfg.setdefault("benchmarks", {})
    if protocol == "unified":
        unified = LazyConfig.load(CONFIGS_DIR / "eval" / "unified.py")
        params, any_key = target_parameters(cfg.model)
        alien = [k for k in unified.protocol if params and not any_key and k not in params]
        if alien:
            raise UserError(
                f"{method} takes no {', '.join(alien)}: the unified protocol (one setting of "
                "the CLIP methods) does not apply to it; evaluate it with --protocol paper."
            )
        for key, value in unified.protocol.items():
            cfg.model[key] = value
        cfg.class_rule = unified.class_rule
        cfg.benchmarks = unified.benchmarks
    for key, value in (cfg.benchmarks.get(dataset) or {}).items():
        cfg.model[key] = value
    cfg.dataset = dataset
    cfg.protocol = protocol
    cfg.method = method
    del cfg["benchmarks"]
    clip = clip_source_overrides(model=model, pretrained=pretrained, checkpoint=checkpoint)
    return LazyConfig.apply_overrides(cfg, [*clip, *overrides])


def versions() -> dict[str, str]:
    import open_clip

    return {
        "ovdense": __version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": sys.version.split()[0],
    }


# -- fingerprint of an output folder ----------------------------------------------------------
def _file_identity(path: str | os.PathLike) -> str:
    p = Path(path).expanduser()
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _checkpoint_files(node: Any, prefix: str = "") -> dict[str, str]:
    """``{dotted key: path:size:mtime}`` of every string value under a ``*checkpoint*`` key."""
    out: dict[str, str] = {}
    if not isinstance(node, dict | list | tuple):
        return out
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict | list | tuple):
            out.update(_checkpoint_files(value, path))
        elif isinstance(value, str) and "checkpoint" in str(key).lower():
            is_file = Path(value).expanduser().is_file()
            out[path] = _file_identity(value) if is_file else value
    return out


def weights_ids(seg: nn.Module) -> list[str]:
    """The ``ovdense_id`` of every CLIP (or other model carrying one) inside ``seg``."""
    ids = (getattr(m, "ovdense_id", None) for m in seg.modules())
    return list(dict.fromkeys(i for i in ids if isinstance(i, str)))


def output_fingerprint(
    cfg: DictConfig,
    seg: nn.Module,
    dataset: str,
    dataset_root: str | os.PathLike,
    protocol: str,
    region_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What made an output folder's predictions; equal fingerprints may share predictions.

    The resolved config as ``config.yaml`` text, the weights (``ovdense_id`` of the CLIP, which
    names a checkpoint file by path, size and mtime, or a tag) and any other ``*checkpoint*``
    file of the config (path, size, mtime), the dataset (name and folder), the protocol, the
    folder of region maps read (``region_dir``, if any) and the ovdense version. How many images
    are evaluated (``limit``) is not part of it.
    """
    regions = None if region_dir is None else os.path.abspath(os.fspath(region_dir))
    return {
        "regions": regions,
        "format": _FINGERPRINT_FORMAT,
        "ovdense": __version__,
        "protocol": protocol,
        "dataset": {"name": dataset, "root": os.path.abspath(os.fspath(dataset_root))},
        "config": LazyConfig.to_yaml(cfg),  # the text of config.yaml
        "weights": weights_ids(seg),
        "files": _checkpoint_files(to_py(cfg, resolve=True)),
    }


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(node, list) and node:
        out = {}
        for i, value in enumerate(node):
            out.update(_flatten(value, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: node} if prefix else {}


def _show(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


_UNSET = object()


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["model.strategy: naclip -> vanilla", ...]``: what differs between two fingerprints."""
    diffs: list[str] = []

    def add(what: str, a: Any, b: Any) -> None:
        if a != b:
            diffs.append(f"{what}: {_show(a)} -> {_show(b)}")

    add("fingerprint format", old.get("format"), new.get("format"))
    try:
        old_cfg = _flatten(yaml.safe_load(old.get("config") or "") or {})
    except yaml.YAMLError:
        old_cfg = {"config.yaml": "(unreadable)"}
    new_cfg = _flatten(yaml.safe_load(new.get("config") or "") or {})
    for key in sorted(old_cfg.keys() | new_cfg.keys()):
        add(key, old_cfg.get(key, _UNSET), new_cfg.get(key, _UNSET))
    old_w, new_w = old.get("weights") or [], new.get("weights") or []
    if old_w != new_w:
        diffs.append(f"CLIP weights: {', '.join(old_w) or '(none)'} -> {', '.join(new_w)}")
    old_f, new_f = old.get("files") or {}, new.get("files") or {}
    for key in sorted(old_f.keys() | new_f.keys()):
        add(key, old_f.get(key, _UNSET), new_f.get(key, _UNSET))
    old_d, new_d = old.get("dataset") or {}, new.get("dataset") or {}
    add("dataset", old_d.get("name"), new_d.get("name"))
    add("dataset root", old_d.get("root"), new_d.get("root"))
    add("protocol", old.get("protocol"), new.get("protocol"))
    add("region maps", old.get("regions"), new.get("regions"))
    add("ovdense version", old.get("ovdense"), new.get("ovdense"))
    return list(dict.fromkeys(diffs))


def _read_fingerprint(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: matches nothing
    return data if isinstance(data, dict) else {}


def _prediction_files(pred_dir: Path) -> list[Path]:
    if not pred_dir.is_dir():
        return []
    return [p for p in pred_dir.glob("*.png") if not p.name.startswith(".")]


def _delete_outputs(out_dir: Path) -> None:
    """Delete what a run wrote into ``out_dir`` (predictions, results, config, fingerprint)."""
    for path in _prediction_files(out_dir / "preds"):
        path.unlink(missing_ok=True)
    for name in OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)


def prepare_output(out_dir: Path, fingerprint: dict[str, Any], overwrite: bool = False) -> None:
    """Check that ``out_dir`` may take this run's predictions, then record its fingerprint.

    Called under the folder's lock. A folder whose predictions were made by another setting
    (or carry no fingerprint) is refused, unless ``overwrite``: then everything a run wrote
    there is deleted first. Temporary files of killed runs are removed.

    Raises:
        OutputMismatchError: The folder holds predictions of another setting.
    """
    pred_dir = out_dir / "preds"
    fp_path = out_dir / FINGERPRINT_NAME
    advice = "choose another --output or pass --overwrite to delete them and start afresh"
    if overwrite:
        _delete_outputs(out_dir)
    elif _prediction_files(pred_dir):  # the fingerprint guards the predictions
        old = _read_fingerprint(fp_path)
        if old is None or old.get("format") != _FINGERPRINT_FORMAT:
            what = f"no {FINGERPRINT_NAME}" if old is None else f"an unreadable {FINGERPRINT_NAME}"
            raise OutputMismatchError(
                f"Output folder {out_dir} holds predictions with {what} (made by an older "
                f"ovdense or by hand), so they may come from other settings; {advice}."
            )
        diffs = fingerprint_differences(old, fingerprint)
        if diffs:
            shown = "; ".join(diffs[:3]) + (
                f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
            )
            raise OutputMismatchError(
                f"Output folder {out_dir} holds predictions made with other settings "
                f"({shown}); {advice}."
            )
    remove_stale_temporaries(out_dir)
    remove_stale_temporaries(pred_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(fp_path, json.dumps(fingerprint, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out_dir / "config.yaml", fingerprint["config"])


# -- the lock of an output folder -------------------------------------------------------------
class OutputLock:
    """An exclusive lock file (``O_CREAT | O_EXCL``) holding the owner's pid and host.

    A lock whose process no longer runs on this host is stale: it is taken over with a warning.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.held = False

    def _owner(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _is_stale(self, owner: dict[str, Any] | None) -> bool:
        if owner is None:  # empty or garbled: a crash between creating and writing it
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return False  # released meanwhile: try again
            return age > _EMPTY_LOCK_GRACE_S
        pid = owner.get("pid")
        if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False  # cannot tell from here
        return pid == os.getpid() or not pid_alive(pid)

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            OutputLockedError: Another live run holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if not self._is_stale(owner):
                    if not self.path.exists():
                        continue
                    who = (
                        f"pid {owner.get('pid')} on {owner.get('host')}"
                        if owner
                        else "owner unknown"
                    )
                    raise OutputLockedError(
                        f"Output folder {self.path.parent} is in use by another evaluation "
                        f"({who}, lock file {self.path}); wait for it to end or choose another "
                        "--output (delete the lock file only if no such run is active)."
                    ) from None
                if self._owner() != owner:  # changed hands meanwhile: look again
                    continue
                who = f"process {owner['pid']}" if owner else "a crashed process"
                warnings.warn(
                    f"taking over the stale lock {self.path} of {who} (no longer running on "
                    f"{socket.gethostname()})",
                    stacklevel=2,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    },
                    f,
                )
            self.held = True
            return
        raise OutputLockedError(
            f"Could not take the lock file {self.path}: other runs keep taking it; run one "
            "evaluation per output folder at a time."
        )

    def release(self) -> None:
        """Give the lock back (only if this process holds it)."""
        if not self.held:
            return
        self.held = False
        owner = self._owner()
        if owner is None or owner.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


# -- distributed ------------------------------------------------------------------------------
def _join(device: str) -> tuple[int, int, torch.device]:
    """Rank, world size and this process's device, through the one torchrun set-up of ovdense
    (:func:`ovdense.engine.distributed.init_distributed`: gloo on CPU, nccl on GPU, ``cuda``
    -> ``cuda:LOCAL_RANK``)."""
    info = init_distributed(device=device)
    return info.rank, info.world_size, info.local_device(device)


def _on_rank0(fn: Callable[[], _T], rank: int, world: int, dev: torch.device) -> _T | None:
    """Run ``fn`` on rank 0 while the other ranks wait; an error of rank 0 is raised on every
    rank (the same class when it is one of the output-folder errors, else a ``UserError`` or
    ``RuntimeError`` with its message)."""
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - re-raised below, after telling the others
            error = err
    if world > 1:
        box: list[Any] = [None]
        if rank == 0 and error is not None:
            box = [(type(error).__name__, str(error), isinstance(error, USER_ERRORS))]
        dist.broadcast_object_list(box, src=0, device=dev if dev.type == "cuda" else None)
        if rank != 0 and box[0] is not None:
            name, message, user = box[0]
            known = {c.__name__: c for c in (OutputMismatchError, OutputLockedError)}
            cls = known.get(name, UserError if user else RuntimeError)
            raise cls(message)
    if error is not None:
        raise error
    return result


# -- evaluation -------------------------------------------------------------------------------
def _atomic_save_label(labels: np.ndarray, path: Path) -> None:
    with atomic_write(path, suffix=".png") as tmp:
        save_label_png(labels, tmp)


def _pred_path(pred_dir: Path, sample_id: str) -> Path:
    return pred_dir / (sample_id.replace("/", "__") + ".png")


def markdown_table(metrics: dict, title: str) -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    for key in ("mIoU", "fwIoU", "mAcc", "pAcc"):
        lines.append(f"| {key} | {format_metric(metrics[key])} |")
    lines += ["", "| class | IoU | Acc |", "|---|---|---|"]
    for name, iou in metrics["IoU"].items():
        lines.append(
            f"| {name} | {format_metric(iou)} | {format_metric(metrics['Acc'].get(name))} |"
        )
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_eval(
    config: str,
    dataset: str,
    *,
    protocol: str = "paper",
    data_root: str | None = None,
    output: str | os.PathLike | None = None,
    limit: int | None = None,
    device: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    overwrite: bool = False,
    region_dir: str | os.PathLike | None = None,
) -> dict:
    """Evaluate one method on one dataset; returns the results dict (also written to disk).

    Predictions already in ``output`` are reused when they were made with the same fingerprint
    (:func:`output_fingerprint`); ``overwrite`` deletes a folder's earlier outputs first.
    ``region_dir``: region maps generated beforehand (one ``<image stem>.npz`` per image,
    :func:`~ovdense.utils.regions.read_region_map`; CorrCLIP's ``data/region_masks`` layout)
    in place of the preset's mask source, which is then not built; the folder is part of the
    fingerprint.

    Raises:
        OutputMismatchError: ``output`` holds predictions of other settings (and not
            ``overwrite``).
        OutputLockedError: Another run is at work in ``output``.
        NothingEvaluatedError: Every image was skipped.
    """
    if dataset.startswith("folder:"):
        dataset = parse_dataset_spec(dataset)
    meta = get_metadata(dataset)
    if region_dir is not None:
        region_dir = Path(region_dir).expanduser().resolve()
        if not region_dir.is_dir():
            raise FileNotFoundError(f"--regions is not a folder: {region_dir}")
        overrides = [*overrides, "model.mask_source=None"]
    cfg = resolve_eval_config(
        config,
        dataset,
        protocol,
        overrides,
        model=model,
        pretrained=pretrained,
        checkpoint=checkpoint,
    )
    # no background class (None): a threshold then needs a class named background
    cfg.model.background_index = meta.background_index
    rank, world, dev = _join(resolve_device(device))
    out_dir = Path(output) if output else default_output_dir(config, protocol, dataset)
    pred_dir = out_dir / "preds"
    data: SemSegDataset = build_semseg_dataset(dataset, data_root, limit=limit)

    lock = OutputLock(out_dir / LOCK_NAME)
    _on_rank0(lock.acquire, rank, world, dev)
    try:
        vocab = meta.vocabulary(cfg.class_rule)
        seg = instantiate(cfg.model).to(dev)
        text = seg.encode_text(vocab)
        fingerprint = output_fingerprint(cfg, seg, dataset, data.root, protocol, region_dir)

        def prepare() -> None:
            prepare_output(out_dir, fingerprint, overwrite)
            found = sum(_pred_path(pred_dir, s.id).is_file() for s in data.samples)
            if found:
                tqdm.write(f"resumed {found} of {len(data)} images (predictions in {pred_dir})")

        _on_rank0(prepare, rank, world, dev)
        evaluator = SemSegEvaluator(
            meta.num_classes,
            meta.ignore_label,
            vocab.display_names,
            class_groups=dict(meta.class_groups or ()),
        )
        indices = list(range(rank, len(data), world))
        skipped: list[str] = []
        resumed = 0
        bar = tqdm(
            indices, desc=f"{cfg.method}/{dataset}", unit="img", disable=not progress or rank
        )
        for i in bar:
            try:
                item = data[i]
            except DatasetFileError as err:
                skipped.append(str(err))
                tqdm.write(f"skipped: {err}")
                continue
            path = _pred_path(pred_dir, item["id"])
            pred = None
            if path.is_file():
                try:
                    pred = load_label_png(path).astype(np.int64)
                except (ValueError, OSError):
                    pred = None  # a damaged prediction is recomputed
            if pred is not None and pred.shape == item["label"].shape:
                resumed += 1
            else:
                image = torch.from_numpy(np.array(item["image"])).permute(2, 0, 1)[None].float()
                given: dict[str, Any] = {}
                if region_dir is not None:
                    size = (int(image.shape[2]), int(image.shape[3]))
                    given["regions"] = read_region_map(region_dir, item["image_path"], size)[None]
                # a strategy whose features depend on the vocabulary (ResCLIP) gets the text
                needs_text = getattr(seg, "_strategy_needs_text", lambda: False)()
                feats = (
                    seg.encode_image(image / 255.0, text, **given)
                    if needs_text
                    else seg.encode_image(image / 255.0, **given)
                )
                out = seg.decode(feats, text, return_probs=False)
                pred = out.labels[0].cpu().numpy()
                _atomic_save_label(pred, path)
            evaluator.process(pred, item["label"])
        # every rank reports its skipped files and resumed count
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (skipped, resumed))
            skipped = [s for part, _ in gathered for s in part]
            resumed = sum(n for _, n in gathered)
        if len(skipped) >= len(data):
            first = f", first reason: {_one_line(skipped[0])}" if skipped else ""
            raise NothingEvaluatedError(
                f"no image could be evaluated: {len(skipped)} of {len(data)} skipped{first}"
            )
        metrics = evaluator.evaluate()["sem_seg"]
        results = {
            "method": cfg.method,
            "protocol": protocol,
            "dataset": dataset,
            "num_images": len(data) - len(skipped),
            "resumed_images": resumed,
            "skipped": skipped,
            "metrics": metrics,
            "versions": versions(),
            "config": str(out_dir / "config.yaml"),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if rank == 0:
            atomic_write_text(
                out_dir / "results.json",
                json.dumps(json_safe(results), indent=2, ensure_ascii=False),
            )
            title = f"{cfg.method} ({protocol} protocol) on {dataset}: mIoU {metrics['mIoU']:.2f}"
            atomic_write_text(out_dir / "results.md", markdown_table(metrics, title))
        return results
    finally:
        if rank == 0:
            lock.release()
