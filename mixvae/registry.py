"""Small name -> object registries shared by the CLI and the Python API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mixvae import options as _options
from mixvae.errors import PluginError, UnknownNameError

T = TypeVar("T")


def is_plugin_module(module: str) -> bool:
    """Whether a module (``obj.__module__`` of a registered part) lies outside the mixvae package."""
    return module != "mixvae" and not module.startswith("mixvae.")


def _describe(module: str) -> str:
    return f"plugin module {module!r}" if is_plugin_module(module) else f"module {module!r}"


class Registry(Generic[T]):
    """A mapping from names to classes (or factories) of one kind.

    Adding a prior, guide or dataset is one class plus one ``@REGISTRY.register``
    line; nothing else in the package dispatches on names.  Each entry remembers
    the module that defines it (:meth:`module_of`), so that a run can record the
    plugin modules its parts came from (:mod:`mixvae.plugins`).

    :param kind: what the entries are ("prior", "guide", ...), used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (and setting ``obj.name``).

        A name another object already holds raises :class:`~mixvae.errors.PluginError`
        naming both modules.  The same class registered again (same module and
        qualified name, as when its module is imported a second time) replaces
        the entry silently.
        """

        def decorate(obj: T) -> T:
            module = str(getattr(obj, "__module__", None) or "?")
            if name in self._entries:
                qualname = getattr(obj, "__qualname__", None)
                same = (
                    qualname is not None
                    and self._modules[name] == module
                    and getattr(self._entries[name], "__qualname__", None) == qualname
                )
                if not same:
                    holder = self._modules[name]
                    holder = _describe(holder) if is_plugin_module(holder) else holder
                    raise PluginError(
                        f"{_describe(module)} registers {self.kind} {name!r}, which {holder} already "
                        "registered; choose another name",
                        module=module,
                        problem=f"{self.kind} {name!r} is taken",
                    )
            if hasattr(obj, "Options"):  # a part's own options (mixvae.options)
                _options.declare(self.kind, name, obj.Options)
            self._entries[name] = obj
            self._modules[name] = module
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorate

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._entries)}"
            ) from None

    def get(self, name: str, default: T | None = None) -> T | None:
        """The entry ``name``, or ``default`` when none is registered under it."""
        return self._entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def module_of(self, name: str) -> str:
        """The module that defines the entry ``name`` (its ``__module__``)."""
        self[name]  # unknown names raise UnknownNameError
        return self._modules[name]

    def drop_module(self, module: str) -> list[str]:
        """Remove the entries defined in ``module`` or its submodules; returns their names.

        Used when a plugin fails to import, so that none of its parts stay half-registered.
        """
        dropped = [n for n, m in self._modules.items() if m == module or m.startswith(module + ".")]
        for n in dropped:
            del self._entries[n], self._modules[n]
            _options.forget(self.kind, n)
        return dropped

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, in registration order."""
        return list(self._entries.items())
