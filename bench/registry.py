"""Name → class registries for tasks and methods (timm-style `@register_*` decorators).

`bench/` never names a task or method itself: it asks the registry. Every module in the
`tasks` and `methods` packages is imported on first lookup so that its decorator runs; a
module that fails to import is an error, never silently missing (tests assert the registry
lists exactly the modules present).

Other installed packages add tasks and methods through Python entry points, in the groups
`smallspeech_bench.tasks` and `smallspeech_bench.methods`: each entry point names a class
(registered under the entry point's name unless its module's decorator registered it) or a
module whose decorators register what it holds. A plug-in that fails to load is one error
naming its distribution.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from importlib import metadata
from typing import TypeVar

from bench.config import ConfigError

T = TypeVar("T")

# Modules in the plug-in packages that hold shared code, not a task or method; shared code
# may also live in sub-packages (e.g. ``tasks/speech/``) or modules starting with "_".
_NOT_PLUGINS = {"base"}

ENTRY_POINT_GROUPS = {"tasks": "smallspeech_bench.tasks", "methods": "smallspeech_bench.methods"}

_TASKS: dict[str, type] = {}
_METHODS: dict[str, type] = {}
_discovered = False


class PluginError(ConfigError):
    """An installed plug-in (entry point) that cannot be loaded."""


class UnknownNameError(KeyError):
    """A task or method name that is not registered; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def decorator(cls: type[T]) -> type[T]:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} registered twice ({table[name].__module__}, {cls.__module__})")
        cls.name = name  # type: ignore[attr-defined]
        table[name] = cls
        return cls

    return decorator


def register_task(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a `tasks.base.Task` subclass available as `name`."""
    return _register(_TASKS, "task", name)


def register_method(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a `methods.base.Method` subclass available as `name`."""
    return _register(_METHODS, "method", name)


def plugin_modules(package: str) -> list[str]:
    """Names of the modules of `package` (``tasks`` or ``methods``) that define plug-ins."""
    pkg = importlib.import_module(package)
    return sorted(
        m.name
        for m in pkgutil.iter_modules(pkg.__path__)
        if not m.ispkg and m.name not in _NOT_PLUGINS and not m.name.startswith("_")
    )


def discover() -> None:
    """Import every task and method module once, so their decorators register them."""
    global _discovered
    if _discovered:
        return
    for package in ("tasks", "methods"):
        for module in plugin_modules(package):
            importlib.import_module(f"{package}.{module}")
    for kind, table in (("task", _TASKS), ("method", _METHODS)):
        _load_entry_points(kind, table)
    _discovered = True


def _load_entry_points(kind: str, table: dict[str, type]) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUPS[f"{kind}s"]):
        where = f"{ep.value}, from {ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
        try:
            loaded = ep.load()
            if isinstance(loaded, type) and loaded not in table.values():
                _register(table, kind, ep.name)(loaded)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            raise PluginError(f"{kind} plug-in {ep.name!r} ({where}) failed to load: {reason}") from None


def task_names() -> list[str]:
    discover()
    return sorted(_TASKS)


def method_names() -> list[str]:
    discover()
    return sorted(_METHODS)


def get_task_class(name: str) -> type:
    discover()
    if name not in _TASKS:
        raise UnknownNameError(f"unknown task {name!r}; choose from: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def get_method_class(name: str) -> type:
    discover()
    if name not in _METHODS:
        raise UnknownNameError(f"unknown method {name!r}; choose from: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]
