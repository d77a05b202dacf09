"""Schemas that domain modules register into the config: pruning methods, data sets, models, ...

The config never imports a domain package. A module that defines an option of a config group
registers its dataclass here (``@register_schema("data", "digits")``; pruning configs do it
through :class:`~pquant.pruning.base.PruningConfig`), and :func:`discover` finds those modules
*by name*:

* every module of the packages in :data:`PROVIDERS` (``pquant/pruning/*.py``,
  ``pquant/data/*.py``, ``pquant/models/*.py``, ...): adding a method, data set or model to
  pquant is one ``.py`` there plus one ``.yaml`` in ``pquant/conf/<group>/``;
* every ``conf/<group>/*.py`` of the directory a command starts from (the same ``conf/`` folder
  whose YAML files are on Hydra's search path, see :mod:`hydra_plugins.pquant_user_conf`): a
  project adds ``conf/data/toy.py`` (its schema + class) and ``conf/data/toy.yaml`` (naming the
  schema) and runs ``python -m pquant data=toy``. Such a file is imported as the module
  ``pquant_conf.<group>.<name>``, so its ``_target_`` is best written ``f"{__name__}.ToyData"``.

The registered schemas are stored in Hydra's ConfigStore as ``schema/<group>/<name>`` by
:func:`pquant.config.store.register_configs` (never at import).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from pquant.errors import ConfigError

T = TypeVar("T", bound=type)

#: config group -> the packages (every module in them) or modules that register its options
PROVIDERS: dict[str, tuple[str, ...]] = {
    "pruning": ("pquant.pruning",),
    "data": ("pquant.data",),
    "model": ("pquant.models",),
    "distillation": ("pquant.distill.schema",),
    "export": ("pquant.export.config",),
}

#: package name under which the start directory's ``conf/<group>/*.py`` files are imported
USER_PACKAGE = "pquant_conf"

_SCHEMAS: dict[str, dict[str, type]] = {}
_BASES: dict[str, type] = {}
_loaded: set[str] = set()


def register_schema(group: str, name: str) -> Callable[[T], T]:
    """Class decorator: ``cls`` is the schema of option ``name`` of config group ``group``."""

    def add(cls: T) -> T:
        _SCHEMAS.setdefault(group, {})[name] = cls
        return cls

    return add


def register_base(group: str) -> Callable[[T], T]:
    """Class decorator: ``cls`` is the contract every schema of ``group`` derives from."""

    def add(cls: T) -> T:
        _BASES[group] = cls
        return cls

    return add


def base_schema(group: str) -> type:
    """The contract registered for ``group`` with :func:`register_base` (after discovery)."""
    discover([group])
    if group not in _BASES:
        raise ConfigError(f"no schema contract is registered for the config group {group!r}; "
                          f"groups with one: {sorted(_BASES)}")
    return _BASES[group]


def schemas(group: str) -> dict[str, type]:
    """Every registered schema of ``group`` (after :func:`discover`), keyed by option name."""
    discover([group])
    return dict(_SCHEMAS.get(group, {}))


def discover(groups: Iterable[str] | None = None, start_dir: Path | None = None) -> None:
    """Import the provider modules of ``groups`` (default: all) and the start directory's
    ``conf/<group>/*.py`` (each file once per process)."""
    for group in PROVIDERS if groups is None else groups:
        for name in PROVIDERS.get(group, ()):
            _import_tree(name)
        _import_user(group, (start_dir or Path.cwd()) / "conf" / group)


def _import_tree(name: str) -> None:
    if name in _loaded:
        return
    module = importlib.import_module(name)
    _loaded.add(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if not info.name.startswith("_"):
            _import_tree(f"{name}.{info.name}")


def _package(name: str) -> types.ModuleType:
    """An empty package module ``name`` in ``sys.modules`` (so dotted targets resolve)."""
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = []
        sys.modules[name] = module
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(_package(parent), leaf, module)
    return module


def _import_user(group: str, folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.py")):
        key = str(path.resolve())
        if key in _loaded or path.name.startswith("_"):
            continue
        _loaded.add(key)
        package = _package(f"{USER_PACKAGE}.{group}")
        name = f"{USER_PACKAGE}.{group}.{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's file, named
            del sys.modules[name]
            raise ConfigError(f"conf/{group}/{path.name} could not be imported (it defines "
                              f"{group} options of this project): {type(exc).__name__}: "
                              f"{exc}") from None
        setattr(package, path.stem, module)
