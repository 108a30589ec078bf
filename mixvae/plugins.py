"""Plugins: modules outside mixvae that register priors, guides, likelihoods or data sets.

A plugin is a module that registers its parts when it is imported
(``@PRIORS.register("name")`` on a :class:`~mixvae.models.Prior` subclass, and
so on).  It is loaded

* by ``import mixvae``, when an installed distribution declares it as an entry
  point of the group ``mixvae.plugins`` (in its ``pyproject.toml``:
  ``[project.entry-points."mixvae.plugins"]`` ``name = "package.module"``);
  one that fails to import is a :class:`PluginWarning`, not an error;
* for one command, by ``mixvae --plugin MODULE`` (repeatable) or the
  environment variable ``MIXVAE_PLUGINS`` (module names separated by commas
  or ``os.pathsep``);
* in Python, by :func:`load_plugin`.

A run records the plugin modules its parts came from
(``TrainConfig.plugins``, set by :func:`record_plugins`), and reading the run
back imports them first, so ``evaluate``, ``sample``, ``--resume`` and
:func:`~mixvae.runs.load_run` work in a fresh process without ``--plugin``.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixvae.data import DATASETS
from mixvae.errors import CheckpointError, PluginError
from mixvae.guides import GUIDES
from mixvae.models import LIKELIHOODS, PRIORS
from mixvae.networks import AUTO, GIVEN, NETWORKS
from mixvae.registry import Registry, is_plugin_module

if TYPE_CHECKING:
    from mixvae.config import TrainConfig

__all__ = [
    "ENTRY_POINT_FAILURES",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "PluginWarning",
    "env_plugins",
    "is_plugin_module",
    "load_entry_point_plugins",
    "load_env_plugins",
    "load_plugin",
    "load_recorded_plugins",
    "plugin_module",
    "plugin_modules",
    "record_plugins",
    "registries",
]

#: the entry-point group whose modules ``import mixvae`` loads
ENTRY_POINT_GROUP = "mixvae.plugins"
#: the environment variable naming plugin modules for one command
ENV_VAR = "MIXVAE_PLUGINS"
#: one line per entry-point plugin that failed to import (what the warning said)
ENTRY_POINT_FAILURES: list[str] = []

# "unloaded" -> "loading" -> "loaded": a plugin that imports mixvae (or calls
# load_entry_point_plugins) while the entry points are being loaded starts no second round
_entry_points_state = "unloaded"


class PluginWarning(RuntimeWarning):
    """An installed plugin (entry point of ``mixvae.plugins``) that could not be loaded."""


def registries() -> tuple[Registry[Any], ...]:
    """The registries a plugin may add to: priors, guides, likelihoods, networks, data sets."""
    return (PRIORS, GUIDES, LIKELIHOODS, NETWORKS, DATASETS)


def _problem(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _forget(module: str) -> None:
    for registry in registries():
        registry.drop_module(module)


def load_plugin(module: str) -> None:
    """Import a plugin module, which registers its parts (nothing happens the second time).

    :raises PluginError: one line naming the module and the problem, when it
        cannot be imported or registers a name another module holds; none of
        its parts stay registered.
    """
    module = module.strip()
    try:
        importlib.import_module(module)
    except PluginError:  # a taken name: the message names the module and the name
        _forget(module)
        raise
    except Exception as e:
        _forget(module)
        problem = _problem(e)
        missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
        if missing and (module == missing or module.startswith(missing + ".")):
            raise PluginError(
                f"plugin module {module!r} cannot be found ({problem}); check the name, install it "
                "or put its folder on PYTHONPATH",
                module=module,
                problem=problem,
            ) from None
        raise PluginError(
            f"plugin module {module!r} failed to import ({problem}); fix or uninstall it",
            module=module,
            problem=problem,
        ) from None


def load_entry_point_plugins() -> list[str]:
    """Load the installed plugins (entry points of the group ``mixvae.plugins``), once.

    ``import mixvae`` calls this after registering every built-in part.  A
    plugin that fails to import is one :class:`PluginWarning` (and a line in
    :data:`ENTRY_POINT_FAILURES`), so that one broken plugin does not break mixvae.

    :returns: the messages of the plugins that failed in this call.
    """
    global _entry_points_state
    if _entry_points_state != "unloaded":
        return []
    _entry_points_state = "loading"
    failures: list[str] = []
    try:
        seen: set[str] = set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(ep.value)
            try:
                load_plugin(ep.module)
                if ep.attr:  # "package.module:register" names a function to call
                    target = ep.load()
                    if callable(target):
                        target()
            except PluginError as e:
                failures.append(str(e))
            except Exception as e:
                _forget(ep.module)
                failures.append(
                    f"plugin entry point {ep.name!r} ({ep.value}) failed ({_problem(e)}); fix or uninstall it"
                )
    finally:
        _entry_points_state = "loaded"
    ENTRY_POINT_FAILURES.extend(failures)
    for message in failures:
        # filename "mixvae" has no source line to show: the warning stays one line
        warnings.warn_explicit(message, PluginWarning, "mixvae", 0, module="mixvae.plugins")
    return failures


def env_plugins(value: str | None = None) -> list[str]:
    """The module names in ``MIXVAE_PLUGINS`` (or ``value``), split at commas and ``os.pathsep``."""
    if value is None:
        value = os.environ.get(ENV_VAR, "")
    separators = "[" + re.escape("," + os.pathsep) + "]"
    return [m.strip() for m in re.split(separators, value) if m.strip()]


def load_env_plugins() -> list[str]:
    """Load the modules named by ``MIXVAE_PLUGINS``; returns their names.

    :raises PluginError: for the first one that cannot be loaded.
    """
    modules = env_plugins()
    for module in modules:
        load_plugin(module)
    return modules


def plugin_module(registry: Registry[Any], name: str) -> str | None:
    """The plugin module that defines the entry ``name``; ``None`` for a built-in or unknown name.

    A part defined in ``__main__`` (a script or a notebook) names no module that
    another process could import, so it counts as none.
    """
    if name not in registry:
        return None
    module = registry.module_of(name)
    if not is_plugin_module(module) or module in ("__main__", "?"):
        return None
    return module


def plugin_modules(config: TrainConfig) -> tuple[str, ...]:
    """The plugin modules of a configuration's prior, guide, likelihood, network and data set, in that order."""
    parts = (
        (PRIORS, config.prior),
        (GUIDES, config.guide),
        (LIKELIHOODS, config.likelihood),
        (NETWORKS, config.network),
        (DATASETS, config.dataset),
    )
    modules: list[str] = []
    for registry, name in parts:
        module = plugin_module(registry, name)
        if module is not None and module not in modules:
            modules.append(module)
    return tuple(modules)


def record_plugins(config: TrainConfig) -> TrainConfig:
    """Set ``config.plugins`` to :func:`plugin_modules` (before training; harmless twice).

    :returns: ``config`` itself.
    """
    config.plugins = plugin_modules(config)
    return config


def load_recorded_plugins(stored: Any, run_dir: str | Path) -> None:
    """Import the plugin modules a run's stored configuration records, before it is rebuilt.

    ``stored`` is the parsed configuration (its ``"plugins"`` list; one written
    before plugins were recorded has none).  A module that cannot be imported
    is an error, unless every part the run names is registered anyway (by a
    module loaded with ``--plugin``, e.g. after the plugin was renamed).

    :raises CheckpointError: one line naming the run, the module and the problem.
    """
    modules = stored.get("plugins") if isinstance(stored, dict) else None
    if not isinstance(modules, list):
        return
    for module in modules:
        if not isinstance(module, str):
            continue  # TrainConfig.validate names it
        try:
            load_plugin(module)
        except PluginError as e:
            keys = ("prior", "guide", "likelihood", "network", "dataset")
            named = {k: stored.get(k, "mlp" if k == "network" else None) for k in keys}
            if all(
                named[k] in r or (k == "network" and named[k] in (AUTO, GIVEN))
                for k, r in zip(keys, registries(), strict=True)
            ):
                continue
            raise CheckpointError(
                f"run {run_dir} was trained with parts from plugin module {module!r}, which cannot be "
                f"imported here ({e.problem or e}); install it or pass --plugin"
            ) from None
