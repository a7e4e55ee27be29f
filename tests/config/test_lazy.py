"""Tests for the LazyConfig system (ovdense.config.lazy)."""

import codecs
import collections
import datetime
import fractions
import math
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from ovdense.config import (
    InstantiationError,
    L,
    LazyCall,
    LazyConfig,
    instantiate,
    locate,
    parse_override_value,
    target_to_str,
    to_py,
)
from ovdense.config.lazy import bad_argument_types


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# LazyCall / locate
# --------------------------------------------------------------------------------------------


def test_lazycall_stores_dotted_target_and_kwargs():
    cfg = L(fractions.Fraction)(numerator=3, denominator=4)
    assert L is LazyCall
    assert isinstance(cfg, DictConfig)
    assert to_py(cfg) == {"_target_": "fractions.Fraction", "numerator": 3, "denominator": 4}


def test_target_paths_prefer_public_short_module_paths():
    assert target_to_str(torch.nn.Linear) == "torch.nn.Linear"
    assert target_to_str(collections.OrderedDict) == "collections.OrderedDict"
    assert target_to_str(datetime.timedelta) == "datetime.timedelta"
    assert target_to_str(dict) == "builtins.dict"
    assert target_to_str(lambda: 0) is None
    assert locate("torch.nn.Linear") is torch.nn.Linear
    assert locate("fractions.Fraction.from_float")(0.5) == fractions.Fraction(1, 2)
    assert locate("dict") is dict


def test_locate_errors_name_the_path():
    with pytest.raises(ImportError, match="ovdense_no_such_module"):
        locate("ovdense_no_such_module.Thing")
    with pytest.raises(ImportError, match="'fractions' has no attribute 'Fractoin'"):
        locate("fractions.Fractoin")


def test_lazycall_rejects_non_callables_and_reserved_key():
    with pytest.raises(TypeError):
        L(3)
    with pytest.raises(ValueError, match="_target_"):
        L(dict)(_target_="x")


def test_unimportable_target_is_stored_as_object_and_still_instantiates():
    def make(x):
        return x * 2

    cfg = L(make)(x=21)
    assert cfg._target_ is make
    assert instantiate(cfg) == 42


# --------------------------------------------------------------------------------------------
# instantiate
# --------------------------------------------------------------------------------------------


def test_instantiate_nested_bottom_up():
    cfg = OmegaConf.create(
        {
            "model": L(collections.OrderedDict)(
                ratio=L(fractions.Fraction)(numerator=2, denominator=6),
                timeout=L(datetime.timedelta)(minutes=2, seconds=5),
                sizes=[1, L(fractions.Fraction)(numerator=1, denominator=2)],
                meta={"name": "m", "inner": {"k": [1, 2]}},
            ),
            "plain": {"a": 1, "b": [True, None]},
        },
        flags={"allow_objects": True},
    )
    out = instantiate(cfg)
    assert type(out) is dict and set(out) == {"model", "plain"}
    model = out["model"]
    assert type(model) is collections.OrderedDict
    assert model["ratio"] == fractions.Fraction(1, 3)
    assert model["timeout"] == datetime.timedelta(seconds=125)
    assert model["sizes"] == [1, fractions.Fraction(1, 2)]
    assert type(model["sizes"]) is list
    assert model["meta"] == {"name": "m", "inner": {"k": [1, 2]}}
    assert type(model["meta"]) is dict and type(model["meta"]["inner"]["k"]) is list
    assert out["plain"] == {"a": 1, "b": [True, None]}


def test_instantiate_plain_python_containers_and_torch_module():
    cfg = {
        "layers": [
            {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 3, "bias": False},
            L(torch.nn.Linear)(in_features=3, out_features=2),
        ],
        "value": 7,
    }
    out = instantiate(cfg)
    first, second = out["layers"]
    assert isinstance(first, torch.nn.Linear)
    assert tuple(first.weight.shape) == (3, 4) and first.bias is None
    assert tuple(second.weight.shape) == (2, 3) and second.bias is not None
    assert out["value"] == 7
    assert instantiate(5) == 5 and instantiate("x") == "x"


def test_instantiate_resolves_interpolations():
    cfg = OmegaConf.create({"base": 10, "model": {"_target_": "builtins.dict", "x": "${base}"}})
    assert instantiate(cfg.model) == {"x": 10}


def test_instantiate_error_names_config_path_and_keeps_type():
    cfg = OmegaConf.create(
        {"model": {"backbone": L(fractions.Fraction)(numerator=1, denominator=0)}},
        flags={"allow_objects": True},
    )
    with pytest.raises(ZeroDivisionError) as info:
        instantiate(cfg)
    msg = str(info.value)
    assert msg.startswith("while instantiating 'model.backbone' (fractions.Fraction): ")
    assert msg.endswith("Fraction(1, 0)")
    assert isinstance(info.value.__cause__, ZeroDivisionError)

    # The path is the full key even when a sub-config is instantiated on its own.
    with pytest.raises(ZeroDivisionError, match=r"^while instantiating 'model.backbone' "):
        instantiate(cfg.model)


def test_instantiate_error_for_bad_kwarg_and_inside_list():
    cfg = {"heads": [L(dict)(), L(datetime.timedelta)(minutes=1, hourz=2)]}
    with pytest.raises(TypeError, match=r"while instantiating 'heads.1' \(datetime.timedelta\)"):
        instantiate(cfg)


def test_instantiate_type_error_names_the_key_given_as_text():
    from ovdense.engine import WarmupCosine

    cfg = OmegaConf.create(
        {
            "optimizer": L(torch.optim.AdamW)(
                params=[torch.nn.Parameter(torch.zeros(2))], lr="fast"
            ),
            "lr_scheduler": L(WarmupCosine)(max_iter="abc", warmup_iters=2),
        },
        flags={"allow_objects": True},
    )
    with pytest.raises(TypeError) as info:
        instantiate(cfg.optimizer)
    assert str(info.value) == (
        "while instantiating 'optimizer' (torch.optim.AdamW): optimizer.lr: expected a number, "
        "got 'fast'."
    )
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(TypeError) as info:
        instantiate(cfg.lr_scheduler)
    assert str(info.value) == (
        "while instantiating 'lr_scheduler' (ovdense.engine.WarmupCosine): "
        "lr_scheduler.max_iter: expected an integer, got 'abc'."
    )


def test_instantiate_keeps_the_message_when_no_argument_is_text():
    # a numeric argument out of range: the target's own sentence is kept
    cfg = {"opt": L(fractions.Fraction)(numerator=1, denominator=0)}
    with pytest.raises(ZeroDivisionError, match=r"Fraction\(1, 0\)$"):
        instantiate(cfg)
    # text where text is expected is not blamed
    cfg = {"t": L(datetime.timedelta)(minutes="many")}
    with pytest.raises(TypeError) as info:
        instantiate(cfg)
    assert "t.minutes: expected" not in str(info.value)


def test_bad_argument_types_reads_annotations_and_defaults():
    def target(a: int, b: float | None = None, c="x", d=0.5, e: str = "y", *, f: int | str = 1):
        pass

    kwargs = {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7"}
    assert bad_argument_types(target, kwargs, "node") == [
        "node.a: expected an integer, got '1'",
        "node.b: expected a number, got '2'",
        "node.d: expected a number, got '4'",
    ]
    assert bad_argument_types(target, {"a": 1, "b": 2.0}, "") == []


def test_instantiate_error_type_that_cannot_be_rebuilt_is_chained():
    cfg = {"decoder": L(codecs.decode)(obj=b"\xff", encoding="utf-8")}
    with pytest.raises(InstantiationError, match="while instantiating 'decoder'") as info:
        instantiate(cfg)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_instantiate_unknown_target_path_names_key():
    cfg = {"model": {"_target_": "fractions.Fractoin", "numerator": 1}}
    with pytest.raises(ImportError, match=r"while instantiating 'model'.*Fractoin"):
        instantiate(cfg)


# --------------------------------------------------------------------------------------------
# LazyConfig.load
# --------------------------------------------------------------------------------------------

BASE = """
    import collections
    from collections import OrderedDict

    from ovdense.config import L

    _private = dict(hidden=True)

    def helper():
        return 1

    class Thing:
        pass

    name = "base"
    lr = 0.1
    use_amp = False
    nothing = None
    sizes = (1, 2)
    model = dict(
        depth=12,
        logit_scale=100.0,
        backbone=L(OrderedDict)(width=64, heads=[1, 2]),
    )
    train = dict(max_iter=100, lr="${lr}")
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    root = tmp_path / "configs"
    write(root / "base.py", BASE)
    write(
        root / "common" / "optim.py",
        """
        from ovdense.config import L
        import fractions

        optimizer = L(fractions.Fraction)(numerator=1, denominator=10)
        """,
    )
    write(
        root / "seg" / "child.py",
        """
        from ..base import lr, model, train
        from ..common.optim import optimizer

        model.depth = 24
        model.backbone.width = 128
        train.max_iter = 5
        optimizer.denominator = 20
        extra = [model.depth, "x"]
        """,
    )
    write(
        root / "sibling.py",
        """
        from .base import model

        model.depth = 6
        """,
    )
    return root


def test_load_python_config_collects_config_variables(config_dir: Path):
    cfg = LazyConfig.load(config_dir / "base.py")
    assert isinstance(cfg, DictConfig)
    assert list(cfg.keys()) == ["name", "lr", "use_amp", "nothing", "sizes", "model", "train"]
    assert cfg.name == "base" and cfg.lr == 0.1 and cfg.use_amp is False and cfg.nothing is None
    assert isinstance(cfg.sizes, ListConfig) and list(cfg.sizes) == [1, 2]
    assert cfg.model.backbone._target_ == "collections.OrderedDict"
    assert cfg.train.lr == 0.1  # interpolation
    built = instantiate(cfg.model)
    assert built == {"depth": 12, "logit_scale": 100.0, "backbone": {"width": 64, "heads": [1, 2]}}
    assert type(built["backbone"]) is collections.OrderedDict


def test_relative_imports_load_fresh_copies(config_dir: Path):
    child = LazyConfig.load(config_dir / "seg" / "child.py")
    assert list(child.keys()) == ["lr", "model", "train", "optimizer", "extra"]
    assert child.model.depth == 24 and child.model.backbone.width == 128
    assert child.model.logit_scale == 100.0  # inherited
    assert child.train.max_iter == 5
    assert child.optimizer.denominator == 20
    assert list(child.extra) == [24, "x"]
    assert instantiate(child.optimizer) == fractions.Fraction(1, 20)

    sibling = LazyConfig.load(config_dir / "sibling.py")
    assert sibling.model.depth == 6 and sibling.model.backbone.width == 64

    # The child's edits never leak into the base file or other loads.
    base = LazyConfig.load(config_dir / "base.py")
    assert base.model.depth == 12 and base.model.backbone.width == 64
    assert base.train.max_iter == 100
    common = LazyConfig.load(config_dir / "common" / "optim.py")
    assert common.optimizer.denominator == 10

    # Loading again gives a fresh config that does not see changes to an earlier result.
    child.model.depth = 99
    assert LazyConfig.load(config_dir / "seg" / "child.py").model.depth == 24


def test_relative_import_of_missing_file_or_name(tmp_path: Path):
    write(tmp_path / "base.py", "model = dict(depth=1)\n")
    bad_file = write(tmp_path / "a.py", "from .nope import model\n")
    with pytest.raises(ImportError, match="nope.py"):
        LazyConfig.load(bad_file)
    bad_name = write(tmp_path / "b.py", "from .base import modle\n")
    with pytest.raises(ImportError, match="cannot import name 'modle'.*Did you mean 'model'"):
        LazyConfig.load(bad_name)
    dot_only = write(tmp_path / "c.py", "from . import base\n")
    with pytest.raises(ImportError, match="not supported"):
        LazyConfig.load(dot_only)


def test_circular_relative_import_is_reported(tmp_path: Path):
    write(tmp_path / "x.py", "from .y import b\na = 1\n")
    write(tmp_path / "y.py", "from .x import a\nb = 2\n")
    with pytest.raises(ImportError, match="Circular import"):
        LazyConfig.load(tmp_path / "x.py")


def test_import_is_restored_after_load_errors(tmp_path: Path):
    import builtins

    original = builtins.__import__
    write(tmp_path / "boom.py", "raise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError, match="boom"):
        LazyConfig.load(tmp_path / "boom.py")
    assert builtins.__import__ is original


def test_load_missing_file_and_bad_extension(tmp_path: Path):
    missing = tmp_path / "nope.py"
    with pytest.raises(FileNotFoundError, match="nope.py"):
        LazyConfig.load(missing)
    other = write(tmp_path / "cfg.json", "{}")
    with pytest.raises(ValueError, match=".json"):
        LazyConfig.load(other)


def test_load_yaml(tmp_path: Path):
    path = write(
        tmp_path / "cfg.yaml",
        """
        model:
          _target_: fractions.Fraction
          numerator: 3
          denominator: 9
        lr: 1.0e-3
        """,
    )
    cfg = LazyConfig.load(path)
    assert cfg.lr == pytest.approx(1e-3)
    assert instantiate(cfg.model) == fractions.Fraction(1, 3)


# --------------------------------------------------------------------------------------------
# LazyConfig.save
# --------------------------------------------------------------------------------------------


def test_save_load_round_trip(config_dir: Path, tmp_path: Path):
    cfg = LazyConfig.load(config_dir / "seg" / "child.py")
    out = tmp_path / "out" / "saved.yaml"
    LazyConfig.save(cfg, out)
    loaded = LazyConfig.load(out)
    assert loaded == cfg
    assert to_py(loaded, resolve=False) == to_py(cfg, resolve=False)
    assert loaded.train.lr == 0.1  # interpolation kept, resolves the same
    assert "${lr}" in out.read_text()
    assert instantiate(loaded.optimizer) == instantiate(cfg.optimizer) == fractions.Fraction(1, 20)

    # Saving what was loaded from YAML writes the same file again.
    again = tmp_path / "again.yaml"
    LazyConfig.save(loaded, again)
    assert again.read_text() == out.read_text()


def test_save_round_trip_of_built_config(tmp_path: Path):
    cfg = OmegaConf.create(
        {
            "model": L(torch.nn.Linear)(in_features=4, out_features=2, bias=False),
            "values": [1, 2.5, None, True, "1", "true", {"k": "v"}],
            "missing": "???",
        },
        flags={"allow_objects": True},
    )
    path = tmp_path / "cfg.yaml"
    LazyConfig.save(cfg, path)
    loaded = LazyConfig.load(path)
    assert loaded == cfg
    assert list(loaded["values"])[4:6] == ["1", "true"]  # strings stay strings
    assert OmegaConf.is_missing(loaded, "missing")
    layer = instantiate(loaded.model)
    assert isinstance(layer, torch.nn.Linear) and tuple(layer.weight.shape) == (2, 4)


def test_save_rejects_unsaveable_values(tmp_path: Path):
    cfg = {"model": L(lambda x: x)(x=1)}
    with pytest.raises(ValueError, match="'model._target_'"):
        LazyConfig.save(cfg, tmp_path / "a.yaml")
    with pytest.raises(ValueError, match="'t'.*Tensor"):
        LazyConfig.save({"t": torch.zeros(2)}, tmp_path / "b.yaml")
    with pytest.raises(ValueError, match="yaml"):
        LazyConfig.save({"a": 1}, tmp_path / "c.py")


# --------------------------------------------------------------------------------------------
# LazyConfig.apply_overrides
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("-2", -2),
        ("0.5", 0.5),
        ("1e-4", 1e-4),
        ("True", True),
        ("false", False),
        ("true", True),
        ("None", None),
        ("null", None),
        ("[1, 2.5, 'a']", [1, 2.5, "a"]),
        ("(1, 2)", [1, 2]),
        ("[true, null, (3, 4)]", [True, None, [3, 4]]),
        ("{'a': 1, 'b': [2]}", {"a": 1, "b": [2]}),
        ("hello", "hello"),
        ("'quoted'", "quoted"),
        ("'42'", "42"),
        ("ViT-B/16", "ViT-B/16"),
        ("a=b", "a=b"),
        ("torch.nn.Linear", "torch.nn.Linear"),
        ("", ""),
    ],
)
def test_parse_override_value(text, expected):
    value = parse_override_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_override_value_inf_nan():
    assert parse_override_value("inf") == math.inf
    assert parse_override_value("-inf") == -math.inf
    assert math.isnan(parse_override_value("nan"))


@pytest.fixture
def cfg(config_dir: Path) -> DictConfig:
    return LazyConfig.load(config_dir / "base.py")


def test_apply_overrides_sets_typed_values(cfg: DictConfig, config_dir: Path):
    out = LazyConfig.apply_overrides(
        cfg,
        [
            "model.depth=6",
            "model.logit_scale=50.5",
            "use_amp=true",
            "nothing=[1, 2]",
            "lr=None",
            "name=my run",
            "model.backbone.heads=(4, 8)",
            "model.backbone.width='32'",
            "sizes.1=7",
            "train=lr=3",
        ],
    )
    assert out is cfg
    assert cfg.model.depth == 6
    assert cfg.model.logit_scale == 50.5
    assert cfg.use_amp is True
    assert list(cfg.nothing) == [1, 2]
    assert cfg.lr is None
    assert cfg.name == "my run"
    assert list(cfg.model.backbone.heads) == [4, 8]
    assert cfg.model.backbone.width == "32"
    assert list(cfg.sizes) == [1, 7]
    assert cfg.train == "lr=3"  # split on the first '=' only; a subtree can be replaced
    # The file itself is untouched: loading again gives the original values.
    assert LazyConfig.load(config_dir / "base.py").model.depth == 12


def test_override_target(cfg: DictConfig):
    LazyConfig.apply_overrides(cfg, ["model.backbone._target_=builtins.dict"])
    assert type(instantiate(cfg.model.backbone)) is dict


def test_misspelled_key_suggests_nearest(cfg: DictConfig):
    with pytest.raises(KeyError) as info:
        LazyConfig.apply_overrides(cfg, ["model.logit_scal=3"])
    msg = info.value.args[0]
    assert "Unknown config key 'model.logit_scal'." in msg
    assert "Did you mean 'model.logit_scale'?" in msg
    assert "Valid keys under 'model': backbone, depth, logit_scale." in msg
    assert cfg.model.logit_scale == 100.0

    with pytest.raises(KeyError, match="Unknown config key 'modle'.*Did you mean 'model'"):
        LazyConfig.apply_overrides(cfg, ["modle.depth=3"])
    with pytest.raises(KeyError, match="Valid keys at top level"):
        LazyConfig.apply_overrides(cfg, ["zzzzzz=3"])
    with pytest.raises(KeyError, match="index 0..1"):
        LazyConfig.apply_overrides(cfg, ["sizes.5=3"])
    with pytest.raises(KeyError, match="'name' holds a value of type str"):
        LazyConfig.apply_overrides(cfg, ["name.x=3"])


def test_plus_prefix_creates_keys(cfg: DictConfig):
    LazyConfig.apply_overrides(cfg, ["+new=1", "+model.head.dim=3", "++model.depth=5"])
    assert cfg.new == 1
    assert cfg.model.head.dim == 3
    assert cfg.model.depth == 5
    LazyConfig.apply_overrides(cfg, ["new=2", "++other=x"])
    assert cfg.new == 2 and cfg.other == "x"
    with pytest.raises(KeyError, match="already exists"):
        LazyConfig.apply_overrides(cfg, ["+model.depth=1"])


def test_overrides_work_on_struct_configs():
    cfg = OmegaConf.create({"a": {"b": 1}})
    OmegaConf.set_struct(cfg, True)
    LazyConfig.apply_overrides(cfg, ["a.b=2", "+a.c=3"])
    assert cfg.a.b == 2 and cfg.a.c == 3


def test_malformed_override():
    with pytest.raises(ValueError, match="key.path=value"):
        LazyConfig.apply_overrides(OmegaConf.create({"a": 1}), ["a"])
    with pytest.raises(ValueError, match="empty key"):
        LazyConfig.apply_overrides(OmegaConf.create({"a": 1}), ["a..b=1"])


def test_lazy_call_accepts_unlisted_target_parameters():
    cfg = OmegaConf.create(
        {"model": L(torch.nn.Linear)(in_features=4, out_features=2)}, flags={"allow_objects": True}
    )
    OmegaConf.set_struct(cfg, True)
    LazyConfig.apply_overrides(cfg, ["model.bias=False", "model.out_features=3"])
    assert cfg.model.bias is False and cfg.model.out_features == 3
    layer = instantiate(cfg.model)
    assert layer.bias is None and tuple(layer.weight.shape) == (3, 4)

    with pytest.raises(KeyError) as info:
        LazyConfig.apply_overrides(cfg, ["model.biass=True"])
    msg = info.value.args[0]
    assert "Unknown config key 'model.biass'. Did you mean 'model.bias'?" in msg
    assert "_target_, bias, device, dtype, in_features, out_features" in msg
    # A parameter name cannot be used as a parent of deeper keys when it is not set.
    with pytest.raises(KeyError, match="'model.device'"):
        LazyConfig.apply_overrides(cfg, ["model.device.index=0"])


def test_lazy_call_new_parameter_and_unimportable_target():
    cfg = OmegaConf.create({"m": L(fractions.Fraction)(numerator=1)}, flags={"allow_objects": True})
    LazyConfig.apply_overrides(cfg, ["m.denominator=4"])  # a parameter of Fraction.__new__
    assert instantiate(cfg.m) == fractions.Fraction(1, 4)
    bad = {"m": {"_target_": "ovdense_no_such_module.X", "a": 1}}
    with pytest.raises(KeyError, match="Unknown config key 'm.b'"):
        LazyConfig.apply_overrides(OmegaConf.create(bad), ["m.b=2"])
