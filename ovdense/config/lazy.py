"""A detectron2-style "LazyConfig" system built on OmegaConf (no detectron2 dependency).

A lazy config is a tree of dicts and lists in which some dicts describe a call that has not
happened yet: the key ``_target_`` names the callable and the other keys are its keyword
arguments. :class:`LazyCall` (alias ``L``) writes such a dict, :func:`instantiate` performs
the calls (bottom-up), and :class:`LazyConfig` loads configs from Python or YAML files, saves
them to YAML and applies ``"a.b.c=value"`` command-line overrides.

Example config file ``configs/seg.py``::

    from torch import nn

    from ovdense.config import L

    from .base import train  # relative imports load sibling *config files*, fresh each time

    model = L(nn.Linear)(in_features=512, out_features=10)
    train.max_iter = 2000  # changes this file's copy of ``train`` only

Usage::

    cfg = LazyConfig.load("configs/seg.py")
    cfg = LazyConfig.apply_overrides(cfg, ["model.out_features=20", "train.max_iter=10"])
    model = instantiate(cfg.model)

Targets are stored as dotted import paths (``"torch.nn.Linear"``) so that configs round-trip
through YAML; a callable that cannot be imported by its dotted path (a lambda, a function
defined inside another function or in ``__main__``) is stored as the object itself, which
works with :func:`instantiate` but not with :meth:`LazyConfig.save`.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import os
import re
import threading
import types
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from ..utils.registry import closest_match

__all__ = [
    "InstantiationError",
    "L",
    "bad_argument_types",
    "LazyCall",
    "LazyConfig",
    "instantiate",
    "locate",
    "parse_override_value",
    "target_to_str",
    "to_py",
]

TARGET_KEY = "_target_"

# Config files are executed as if they lived in a (fake) package whose name starts with this
# prefix; the patched ``__import__`` recognises relative imports made from such files by it.
_CFG_PACKAGE_NAME = "ovdense._cfg_loader"

_PY_SUFFIXES = (".py",)
_YAML_SUFFIXES = (".yaml", ".yml")
_PRIMITIVES = (str, int, float, bool, type(None))

PathLike = str | os.PathLike


class InstantiationError(RuntimeError):
    """Raised by :func:`instantiate` when an error cannot be re-raised with its original type."""


# --------------------------------------------------------------------------------------------
# Targets: callables <-> dotted import paths
# --------------------------------------------------------------------------------------------


def locate(path: str) -> Any:
    """Import and return the object named by a dotted path such as ``"torch.nn.Linear"``.

    The longest importable module prefix is imported and the rest of the path is looked up
    with ``getattr`` (so nested classes, ``"pkg.mod.Class.method"``, work). A single name
    without dots is looked up in :mod:`builtins`.

    Args:
        path: Dotted path ``"module.sub.qualname"``.

    Returns:
        The object.

    Raises:
        ImportError: When no module prefix can be imported or an attribute is missing.
    """
    parts = path.split(".")
    if not path or not all(parts):
        raise ImportError(f"Invalid target path {path!r}: expected 'module.name'.")
    if len(parts) == 1 and hasattr(builtins, path):
        return getattr(builtins, path)
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # Swallow only "this prefix is not a module"; a module that exists but fails to
            # import one of *its* dependencies is a real error and must surface.
            if e.name is not None and (
                module_name == e.name or module_name.startswith(e.name + ".")
            ):
                continue
            raise
        obj: Any = module
        for j, attr in enumerate(parts[i:], start=i):
            try:
                obj = getattr(obj, attr)
            except AttributeError as e:
                raise ImportError(
                    f"Cannot locate {path!r}: {'.'.join(parts[:j])!r} has no attribute {attr!r}."
                ) from e
        return obj
    raise ImportError(f"Cannot locate {path!r}: no module named {parts[0]!r}.")


def _same_object(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:  # bound methods are re-created on every access but compare equal
        return isinstance(a, types.MethodType) and bool(a == b)
    except Exception:
        return False


def target_to_str(target: Any) -> str | None:
    """Return a dotted import path that :func:`locate` maps back to ``target``, or None.

    The shortest public module prefix that re-exports the object is preferred, e.g.
    ``torch.nn.Linear`` rather than ``torch.nn.modules.linear.Linear``.

    Args:
        target: A class, function or other named callable.

    Returns:
        The dotted path, or None when the object is not importable by name (lambdas, local
        functions, objects defined in ``__main__``).
    """
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module == "__main__" or "<" in qualname:  # "<lambda>", "f.<locals>.g"
        return None
    module_parts = module.split(".")
    candidates = [".".join(module_parts[:i]) for i in range(1, len(module_parts))] + [module]
    for prefix in candidates:
        if any(p.startswith("_") for p in prefix.split(".")[1:]) and prefix != module:
            continue  # do not shorten to a private module path
        path = f"{prefix}.{qualname}"
        try:
            if _same_object(locate(path), target):
                return path
        except Exception:
            continue
    return None


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    name = target_to_str(target)
    if name is not None:
        return name
    return getattr(target, "__qualname__", None) or repr(target)


# --------------------------------------------------------------------------------------------
# LazyCall / instantiate
# --------------------------------------------------------------------------------------------


def _new_config(content: Mapping[Any, Any] | None = None) -> DictConfig:
    """A DictConfig that may also hold arbitrary Python objects as values."""
    return DictConfig(content=dict(content or {}), flags={"allow_objects": True})


class LazyCall:
    """Write a call as a config instead of performing it (detectron2's ``L``).

    ``LazyCall(torch.nn.Linear)(in_features=4, out_features=2)`` returns the DictConfig
    ``{"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2}``;
    :func:`instantiate` turns it into ``torch.nn.Linear(in_features=4, out_features=2)``.

    Args:
        target: The callable, or its dotted import path. Importable callables are stored as
            their dotted path so the config can be saved to YAML; others are stored as-is.
    """

    def __init__(self, target: Callable[..., Any] | str) -> None:
        if not (callable(target) or isinstance(target, str)):
            raise TypeError(
                f"LazyCall target must be a callable or a dotted import path, got {target!r}."
            )
        self._target = target

    def __call__(self, **kwargs: Any) -> DictConfig:
        """Record the keyword arguments of the call.

        Args:
            **kwargs: Keyword arguments for the target; they may themselves be lazy calls.

        Returns:
            A DictConfig with ``_target_`` and the keyword arguments.
        """
        if TARGET_KEY in kwargs:
            raise ValueError(f"'{TARGET_KEY}' is reserved and cannot be passed as an argument.")
        target = self._target
        stored = target if isinstance(target, str) else (target_to_str(target) or target)
        return _new_config({TARGET_KEY: stored, **kwargs})

    def __repr__(self) -> str:
        return f"LazyCall({_target_name(self._target)})"


L = LazyCall


def _config_location(cfg: Any) -> str:
    """Full dotted key of a DictConfig/ListConfig inside its root config ('' for a root)."""
    if not isinstance(cfg, DictConfig | ListConfig):
        return ""
    parts: list[str] = []
    try:
        node: Any = cfg
        while node is not None and node._get_parent() is not None:
            parts.append(str(node._key()))
            node = node._get_parent()
    except Exception:  # private OmegaConf API: degrade to relative paths
        return ""
    return ".".join(reversed(parts))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _items(cfg: Mapping[Any, Any] | DictConfig) -> Iterator[tuple[Any, Any]]:
    # Indexing a DictConfig resolves interpolations and returns child containers as nodes.
    for key in cfg.keys():
        yield key, cfg[key]


def _rebuild_exception(exc: Exception, msg: str) -> Exception:
    """``exc``'s type with a new message, or an InstantiationError when that is not possible."""
    try:
        new = type(exc)(msg)
        if new.args == (msg,):
            return new
    except Exception:
        pass
    return InstantiationError(msg)


_INT_NAMES = frozenset({"int"})
_NUMBER_NAMES = frozenset({"int", "float"})
# Names an annotation may hold besides int/float and still mean "a number".
_NUMBER_COMPANIONS = frozenset(
    {"None", "NoneType", "Optional", "Union", "Tensor", "torch.Tensor", "typing.Optional"}
)


def _annotation_names(annotation: Any) -> set[str] | None:
    """The type names an annotation is made of, or None when it cannot be read."""
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return set(re.findall(r"[A-Za-z_][\w.]*", annotation))
    args = getattr(annotation, "__args__", None)
    if args:
        names: set[str] = set()
        for arg in args:
            sub = _annotation_names(arg)
            if sub is None:
                return None
            names |= sub
        return names
    if annotation is None or annotation is type(None):
        return {"None"}
    name = getattr(annotation, "__name__", None)
    return {name} if isinstance(name, str) else None


def _expected_number(param: inspect.Parameter) -> str | None:
    """``"an integer"`` / ``"a number"`` when ``param`` takes a number, else None."""
    names = _annotation_names(param.annotation)
    if names is not None:
        if names & _NUMBER_NAMES and not names - _NUMBER_NAMES - _NUMBER_COMPANIONS:
            return "an integer" if not names & _NUMBER_NAMES - _INT_NAMES else "a number"
        return None  # annotated, and text (or something else) is allowed
    default = param.default
    if isinstance(default, int | float) and not isinstance(default, bool):
        return "a number"
    return None


def bad_argument_types(target: Any, kwargs: Mapping[str, Any], path: str = "") -> list[str]:
    """Arguments given as text where ``target`` takes a number, one sentence each.

    A parameter takes a number when its annotation is made of ``int``/``float`` (optionally
    with ``None``/``Tensor``) or, without an annotation, when its default is a number. Used to
    name the config key behind a constructor's ``TypeError``/``ValueError``, e.g.
    ``"optimizer.lr: expected a number, got 'fast'"``.

    Args:
        target: The callable.
        kwargs: The keyword arguments it is (to be) called with.
        path: The config node's dotted key ('' for the root).

    Returns:
        One ``"<path>.<key>: expected ..., got <value>"`` per suspicious argument.
    """
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    found = []
    for key, value in kwargs.items():
        param = params.get(str(key))
        if param is None or not isinstance(value, str):
            continue
        expected = _expected_number(param)
        if expected is not None:
            found.append(f"{_join(path, key)}: expected {expected}, got {value!r}")
    return found


def _instantiate(cfg: Any, path: str) -> Any:
    if isinstance(cfg, ListConfig | list | tuple):
        items = [_instantiate(v, _join(path, i)) for i, v in enumerate(cfg)]
        return tuple(items) if isinstance(cfg, tuple) else items
    if not isinstance(cfg, DictConfig | Mapping):
        return cfg
    if isinstance(cfg, DictConfig) and cfg._is_none():
        return None
    values = {k: _instantiate(v, _join(path, k)) for k, v in _items(cfg) if k != TARGET_KEY}
    if TARGET_KEY not in cfg:
        return values
    target = cfg[TARGET_KEY]
    where = f"'{path}'" if path else "'<root>'"
    if isinstance(target, str):
        try:
            target = locate(target)
        except ImportError as e:
            raise ImportError(f"while instantiating {where}: {e}") from e
    if not callable(target):
        raise TypeError(
            f"while instantiating {where}: '{TARGET_KEY}' must be a callable or a dotted "
            f"import path, got {target!r}."
        )
    try:
        return target(**{str(k): v for k, v in values.items()})
    except Exception as e:
        original = str(e) or type(e).__name__
        if isinstance(e, TypeError | ValueError):
            # name the key behind a type error, e.g. lr='fast' for a float parameter
            bad = bad_argument_types(target, values, path)
            if bad:
                original = "; ".join(bad) + "."
        msg = f"while instantiating {where} ({_target_name(target)}): {original}"
        raise _rebuild_exception(e, msg) from e


def instantiate(cfg: Any) -> Any:
    """Recursively build the objects described by a lazy config.

    Dicts (``DictConfig`` or ``dict``) with a ``_target_`` key are called with their other
    keys as keyword arguments, after those arguments have themselves been instantiated
    (bottom-up). Dicts without ``_target_`` become plain dicts, lists (``ListConfig``/``list``)
    plain lists; anything else is returned unchanged. Interpolations are resolved.

    Args:
        cfg: A lazy config, a plain container holding some, or any other value.

    Returns:
        The built object(s).

    Raises:
        ImportError: When a ``_target_`` path cannot be imported (message names the key).
        Exception: An exception raised by a target is re-raised with the same type (when the
            type can be built from a message, else as :class:`InstantiationError`), chained
            to the original, with the message prefixed by
            ``"while instantiating 'model.backbone' (pkg.mod.Class): "``. A ``TypeError`` or
            ``ValueError`` raised while an argument holds text where the target takes a
            number names that key instead of the target's own message
            (``"...: lr_scheduler.max_iter: expected an integer, got 'abc'."``).
    """
    return _instantiate(cfg, _config_location(cfg))


def to_py(cfg: Any, resolve: bool = True) -> Any:
    """Convert a config (or a container holding configs) to plain dicts and lists.

    Args:
        cfg: DictConfig, ListConfig, dict, list or any other value.
        resolve: Resolve ``${...}`` interpolations.

    Returns:
        The same data with every OmegaConf container replaced by a ``dict``/``list``.
    """
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=resolve)
    if isinstance(cfg, Mapping):
        return {k: to_py(v, resolve) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [to_py(v, resolve) for v in cfg]
    return cfg


# --------------------------------------------------------------------------------------------
# Loading Python config files (relative imports resolve to sibling config files)
# --------------------------------------------------------------------------------------------

_import_lock = threading.RLock()


def _cast_to_config(value: Any) -> Any:
    if isinstance(value, dict):
        return _new_config(value)
    return value


def _fake_package_name(filename: str) -> str:
    stem = Path(filename).stem.replace(".", "_")
    return f"{_CFG_PACKAGE_NAME}_{uuid.uuid4().hex[:8]}.{stem}"


def _find_relative_file(original_file: str, name: str, level: int, fromlist: Sequence[str]) -> str:
    if not name:
        raise ImportError(
            f"{original_file}: 'from {'.' * level} import {', '.join(fromlist)}' is not "
            "supported in config files; import variables from the file instead, e.g. "
            f"'from {'.' * level}{fromlist[0] if fromlist else 'base'} import model'."
        )
    folder = Path(original_file).parent
    for _ in range(level - 1):
        folder = folder.parent
    candidate = folder.joinpath(*name.split("."))
    cur_file = candidate.with_name(candidate.name + ".py")
    if not cur_file.is_file():
        raise ImportError(
            f"{original_file}: relative import '{'.' * level}{name}' expects the config file "
            f"{cur_file}, which does not exist. Relative imports in config files must name a "
            "Python config file relative to the importing file's folder."
        )
    return str(cur_file)


def _exec_config_file(filename: str, namespace: dict[str, Any]) -> None:
    source = Path(filename).read_text(encoding="utf-8")
    exec(compile(source, filename, "exec"), namespace)


def _config_module(filename: str) -> types.ModuleType:
    """Execute a Python config file into a fresh module object."""
    module = types.ModuleType(_fake_package_name(filename))
    module.__file__ = filename
    module.__package__ = module.__name__
    _exec_config_file(filename, module.__dict__)
    return module


@contextmanager
def _patch_import() -> Iterator[None]:
    """Make relative imports inside config files load sibling config files (fresh each time).

    Only imports issued from code whose ``__package__`` carries the config-loader prefix are
    intercepted; every other import goes to the original ``__import__``.
    """
    with _import_lock:
        old_import = builtins.__import__
        loading: list[str] = []

        def new_import(
            name: str,
            globals: Mapping[str, Any] | None = None,
            locals: Mapping[str, Any] | None = None,
            fromlist: Sequence[str] | None = (),
            level: int = 0,
        ) -> Any:
            package = (globals or {}).get("__package__") or ""
            if globals is None or level == 0 or not package.startswith(_CFG_PACKAGE_NAME):
                return old_import(name, globals, locals, fromlist or (), level)
            fromlist = tuple(fromlist or ())
            cur_file = _find_relative_file(globals["__file__"], name, level, fromlist)
            if cur_file in loading:
                chain = " -> ".join([*loading, cur_file])
                raise ImportError(f"Circular import between config files: {chain}")
            loading.append(cur_file)
            try:
                module = _config_module(cur_file)
            finally:
                loading.pop()
            public = [k for k in module.__dict__ if not k.startswith("_")]
            for item in fromlist:
                if item == "*":
                    for key in public:
                        module.__dict__[key] = _cast_to_config(module.__dict__[key])
                    continue
                if item not in module.__dict__:
                    hint = closest_match(item, public)
                    suggestion = f" Did you mean '{hint}'?" if hint else ""
                    raise ImportError(
                        f"cannot import name '{item}' from config file {cur_file}.{suggestion} "
                        f"Available: {', '.join(sorted(public))}."
                    )
                module.__dict__[item] = _cast_to_config(module.__dict__[item])
            return module

        builtins.__import__ = new_import
        try:
            yield
        finally:
            builtins.__import__ = old_import


def _is_config_value(value: Any) -> bool:
    if isinstance(value, types.ModuleType | types.FunctionType | types.BuiltinFunctionType | type):
        return False
    return isinstance(value, (DictConfig, ListConfig, dict, list, tuple, *_PRIMITIVES))


class LazyConfig:
    """Load, save and override lazy configs (Python or YAML files)."""

    @staticmethod
    def load(path: PathLike) -> DictConfig:
        """Load a config file.

        A ``.py`` file is executed and every module-level variable holding a dict,
        DictConfig, list, tuple or primitive (str/int/float/bool/None) becomes a top-level
        key; modules, functions, classes, other objects and names starting with ``_`` are
        skipped. Inside the file, relative imports (``from .base import model``,
        ``from ..common.train import train``) execute the named sibling config file afresh
        each time, so changes a file makes to an imported config never leak into other files.
        ``.yaml``/``.yml`` files are read with OmegaConf.

        Args:
            path: Path of the config file.

        Returns:
            The config.

        Raises:
            FileNotFoundError: When the file does not exist.
            ValueError: For an unsupported extension or a YAML file that is not a mapping.
        """
        filename = os.path.abspath(os.fspath(path))
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"Config file not found: {os.fspath(path)}")
        suffix = Path(filename).suffix.lower()
        if suffix in _YAML_SUFFIXES:
            loaded = OmegaConf.load(filename)
            if not isinstance(loaded, DictConfig):
                raise ValueError(f"{filename}: a YAML config must contain a mapping at top level.")
            # a DictConfig (checked above) converts to a dict
            return _new_config(cast(dict, OmegaConf.to_container(loaded, resolve=False)))
        if suffix not in _PY_SUFFIXES:
            raise ValueError(
                f"Unsupported config file type {suffix!r} ({filename}); "
                f"expected one of {', '.join(_PY_SUFFIXES + _YAML_SUFFIXES)}."
            )
        with _patch_import():
            module = _config_module(filename)
        content = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in module.__dict__.items()
            if not name.startswith("_") and _is_config_value(value)
        }
        return _new_config(content)

    @staticmethod
    def to_yaml(cfg: DictConfig | Mapping[str, Any]) -> str:
        """The YAML text :meth:`save` writes (callables as dotted paths, tuples as lists,
        interpolations unresolved).

        Raises:
            ValueError: A value that YAML cannot represent (the message names its key), e.g. a
                lambda target or a tensor.
        """
        data = _to_yaml_data(to_py(cfg, resolve=False), "")
        return OmegaConf.to_yaml(OmegaConf.create(data))

    @staticmethod
    def save(cfg: DictConfig | Mapping[str, Any], path: PathLike) -> None:
        """Write a config as YAML that :meth:`load` reads back to an equal config, atomically
        (a temporary file renamed into place: never a truncated file).

        Args:
            cfg: The config.
            path: Destination ``.yaml``/``.yml`` file; parent folders are created.

        Raises:
            ValueError: For another extension, or a value that YAML cannot represent (see
                :meth:`to_yaml`).
        """
        from ..utils.io import atomic_write_text

        path = Path(path)
        if path.suffix.lower() not in _YAML_SUFFIXES:
            raise ValueError(f"LazyConfig.save writes YAML; use a .yaml path, got {path}.")
        atomic_write_text(path, LazyConfig.to_yaml(cfg))

    @staticmethod
    def to_dict(cfg: Any, resolve: bool = True) -> Any:
        """Alias of :func:`to_py`."""
        return to_py(cfg, resolve=resolve)

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Apply ``"key.path=value"`` overrides (command-line style) to ``cfg`` in place.

        Values are parsed as Python literals (``3``, ``1e-4``, ``True``, ``None``,
        ``[1, 2]``, ``(1, 2)`` -> list, ``{'a': 1}``, ``'quoted'``); ``true``/``false``/
        ``null`` (also inside lists and dicts) and ``inf``/``nan`` are accepted too; anything
        else is kept as a string. List items are addressed by index (``model.sizes.0=3``).

        Only existing keys may be overridden; under a lazy call (a node with ``_target_``)
        every keyword parameter of the target counts as existing, even when the config does
        not list it (any key when the target takes ``**kwargs``). ``+a.b=1`` adds a new key
        (and missing parent dicts) and fails if it exists; ``++a.b=1`` adds or overrides.

        Args:
            cfg: The config to modify.
            overrides: The overrides, applied in order.

        Returns:
            ``cfg`` itself.

        Raises:
            KeyError: For an unknown key (the message names it and suggests the closest valid
                key, target parameters included) or a ``+`` override of an existing key.
            ValueError: For an override without ``=``.
        """
        for override in overrides:
            _apply_override(cfg, override)
        return cfg


def _to_yaml_data(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _to_yaml_data(v, _join(path, k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_yaml_data(v, _join(path, i)) for i, v in enumerate(value)]
    if isinstance(value, _PRIMITIVES):
        return value
    if callable(value):
        name = target_to_str(value)
        if name is None:
            raise ValueError(
                f"Cannot save config key '{path}': {value!r} is not importable by a dotted "
                "path (lambdas, local functions and objects defined in __main__ cannot be "
                "saved); move it to a module."
            )
        return name
    raise ValueError(
        f"Cannot save config key '{path}': values of type {type(value).__name__} cannot be "
        "written to YAML."
    )


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------

_NAME_LITERALS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "inf": float("inf"),
    "nan": float("nan"),
}


class _NamesToConstants(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _NAME_LITERALS:
            return ast.copy_location(ast.Constant(_NAME_LITERALS[node.id]), node)
        return node


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_tuples_to_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _tuples_to_lists(v) for k, v in value.items()}
    return value


def parse_override_value(text: str) -> Any:
    """Parse the value part of an override (see :meth:`LazyConfig.apply_overrides`)."""
    stripped = text.strip()
    try:
        tree = ast.parse(stripped, mode="eval")
        value = ast.literal_eval(_NamesToConstants().visit(tree).body)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(value, set | frozenset | bytes | complex):
        return text
    return _tuples_to_lists(value)


def target_parameters(node: DictConfig) -> tuple[list[str], bool]:
    """Keyword parameters of a lazy call's target, and whether it takes ``**kwargs``.

    Returns ``([], False)`` for a node without ``_target_`` or whose target cannot be
    imported or inspected.
    """
    if TARGET_KEY not in node:
        return [], False
    try:
        target = node[TARGET_KEY]
        if isinstance(target, str):
            target = locate(target)
        signature = inspect.signature(target)
    except Exception:
        return [], False
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in signature.parameters.values() if p.kind in kinds]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    return names, var_kw


def _unknown_key_error(
    node: DictConfig, prefix: str, key: str, full_key: str, params: Sequence[str] = ()
) -> KeyError:
    valid = list(dict.fromkeys([*(str(k) for k in node.keys()), *params]))
    bad = _join(prefix, key)
    msg = f"Unknown config key '{bad}'."
    hint = closest_match(key, valid)
    if hint is not None:
        msg += f" Did you mean '{_join(prefix, hint)}'?"
    where = f"under '{prefix}'" if prefix else "at top level"
    msg += f" Valid keys {where}: {', '.join(sorted(valid)) or '(none)'}."
    if bad != full_key:
        msg += f" (in override key '{full_key}')"
    msg += f" To add a new key, write '+{full_key}=...'."
    return KeyError(msg)


def _dict_key(node: DictConfig, key: str) -> Any | None:
    """The actual key of ``node`` matching ``key`` (str, or int for int-keyed dicts)."""
    keys = list(node.keys())
    if key in keys:
        return key
    if key.lstrip("-").isdigit() and int(key) in keys:
        return int(key)
    return None


def _apply_override(cfg: DictConfig, override: str) -> None:
    if "=" not in override:
        raise ValueError(f"Invalid override {override!r}: expected 'key.path=value'.")
    raw_key, raw_value = override.split("=", 1)
    raw_key = raw_key.strip()
    mode = "set"
    if raw_key.startswith("++"):
        mode, raw_key = "force", raw_key[2:]
    elif raw_key.startswith("+"):
        mode, raw_key = "add", raw_key[1:]
    parts = raw_key.split(".")
    if not raw_key or not all(parts):
        raise ValueError(f"Invalid override {override!r}: empty key.")
    value = parse_override_value(raw_value)

    node: Any = cfg
    prefix = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, ListConfig):
            try:
                index = int(part)
                node[index]  # noqa: B018  (bounds check)
            except (ValueError, IndexError):
                raise KeyError(
                    f"Invalid config key '{_join(prefix, part)}': '{prefix}' is a list of "
                    f"{len(node)} items; use an index 0..{len(node) - 1}."
                ) from None
            if last:
                if mode == "add":
                    raise KeyError(f"Cannot add '{raw_key}': list items already exist.")
                node[index] = value
                return
            node = node[index]
        elif isinstance(node, DictConfig):
            key = _dict_key(node, part)
            if key is None:
                if mode == "set":
                    # A lazy call accepts any argument of its target, listed or not.
                    params, var_kw = target_parameters(node)
                    if not (last and (part in params or var_kw)):
                        raise _unknown_key_error(node, prefix, part, raw_key, params)
                with open_dict(node):
                    node[part] = value if last else _new_config()
                if last:
                    return
                key = part
            elif last:
                if mode == "add":
                    raise KeyError(
                        f"Cannot add config key '{raw_key}': it already exists. Override it "
                        f"with '{raw_key}=...' (or '++{raw_key}=...')."
                    )
                node[key] = value
                return
            node = node[key]
        else:
            raise KeyError(
                f"Invalid config key '{_join(prefix, part)}': '{prefix}' holds a value of type "
                f"{type(node).__name__}, not a config with keys."
            )
        prefix = _join(prefix, part)
