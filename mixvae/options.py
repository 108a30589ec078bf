"""Part options: each registered part declares its own settings in a small dataclass.

A prior, guide or likelihood declares ``Options``, a dataclass whose fields are
made with :func:`option` (default, help text, validation)::

    @PRIORS.register("laplace-mixture")
    class LaplaceMixture(Prior):
        @dataclass
        class Options:
            components: int = option(10, "number K of mixture components", minimum=1)
            laplace_scale: float = option(1.0, "initial Laplace scale b", positive=True)

Registering the part declares its options here (:func:`declare`); the
training configuration (:class:`~mixvae.config.TrainConfig`) then accepts
them as keywords (``TrainConfig(prior="laplace-mixture", laplace_scale=2)``),
stores the chosen parts' options in ``config.json``, and the CLI makes a flag
of each (``--laplace-scale``).  Options share one namespace: parts that declare
the same name (``components``: the mixture priors and the guides with K
components) share its flag, and must agree on its type.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mixvae.errors import ConfigError, PluginError


def option(
    default: Any,
    help: str,
    *,
    choices: Iterable[Any] | None = None,
    minimum: float | None = None,
    positive: bool = False,
    exclusive: bool = False,
) -> Any:
    """A field of a part's ``Options`` dataclass.

    :param default: the value when the option is not given.
    :param help: one line for ``--help`` and ``mixvae list``.
    :param choices: the allowed values.
    :param minimum: the smallest allowed value (``None`` is always allowed for optional numbers).
    :param positive: the value must be > 0.
    :param exclusive: giving a non-default value when no chosen part declares the
        option is an error (for options whose only meaning is their part's, such
        as ``--mixture-weights``); other options of parts not chosen are ignored.
    """
    meta = {
        "help": help,
        "choices": None if choices is None else tuple(choices),
        "minimum": minimum,
        "positive": positive,
        "exclusive": exclusive,
    }
    return field(default=default, metadata=meta)


def components_option() -> Any:
    """The shared ``--components`` option: K of a mixture prior, and the values of y (or the
    components) of a guide with K components (one declaration for all of them)."""
    return option(
        10,
        "number K of mixture components of the prior (and values of y of the categorical guide)",
        minimum=1,
    )


@dataclass
class NoOptions:
    """The options of a part that has none."""


@dataclass(frozen=True)
class OptionSpec:
    """One option name as the registered parts declare it."""

    name: str
    kind: Any  # the type hint, e.g. int | None
    help: str
    choices: tuple[Any, ...] | None
    minimum: float | None
    positive: bool
    exclusive: bool
    #: ``(kind, part name) -> default`` of every part that declares it, in registration order
    defaults: tuple[tuple[tuple[str, str], Any], ...]

    @property
    def owners(self) -> list[tuple[str, str]]:
        return [owner for owner, _ in self.defaults]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe_owners(self) -> str:
        """``"prior gmm, gmm-full; guide categorical"``."""
        by_kind: dict[str, list[str]] = {}
        for kind, part in self.owners:
            by_kind.setdefault(kind, []).append(part)
        return "; ".join(f"{kind} {', '.join(parts)}" for kind, parts in by_kind.items())

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` naming the flag when ``value`` is not allowed."""
        if value is None and _optional(self.kind):
            return
        base = _base_type(self.kind)
        if base is tuple:  # a tuple of sizes, such as --conv-channels 32,64
            if not (
                isinstance(value, tuple)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ):
                raise ConfigError(f"{self.flag} must be integers such as 32,64, got {value!r}")
            for v in value:
                self._check_number(int, v)
            return
        if base is bool:
            ok = isinstance(value, bool)
        elif base is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif base is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, base) if isinstance(base, type) else True
        if not ok:
            raise ConfigError(f"{self.flag} must be of type {_type_name(self.kind)}, got {value!r}")
        self._check_number(base, value)

    def _check_number(self, base: Any, value: Any) -> None:
        if base is float and not math.isfinite(value):
            raise ConfigError(f"{self.flag} must be a finite number, got {value!r}")
        if base is int and abs(value) > MAX_SIZE:
            raise ConfigError(f"{self.flag} {value} is beyond any size mixvae can build (at most {MAX_SIZE})")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.flag} must be {' or '.join(map(repr, self.choices))}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            what = "a positive integer" if base is int and self.minimum == 1 else f">= {self.minimum}"
            raise ConfigError(f"{self.flag} must be {what}, got {value!r}")
        if self.positive and not value > 0:
            raise ConfigError(f"{self.flag} must be positive, got {value!r}")


#: the largest integer a part option may take (a component count, a network width)
MAX_SIZE = 1_000_000

_PARTS: dict[tuple[str, str], type] = {}
_SPECS: dict[str, OptionSpec] = {}


def _optional(kind: Any) -> bool:
    return type(None) in typing.get_args(kind)


def _base_type(kind: Any) -> Any:
    if typing.get_origin(kind) is tuple:
        return tuple
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args else kind
    return tuple if typing.get_origin(base) is tuple else base


def _type_name(kind: Any) -> str:
    base = _base_type(kind)
    name = getattr(base, "__name__", str(base))
    return f"{name} or None" if _optional(kind) else name


def declare(kind: str, part: str, options_cls: type | None) -> None:
    """Record the ``Options`` dataclass of a registered part (called by the registries).

    :raises PluginError: when a name is declared by another part with another type.
    """
    if options_cls is None:
        options_cls = NoOptions
    if not dataclasses.is_dataclass(options_cls):
        raise PluginError(
            f"{kind} {part!r} declares Options that is not a dataclass; decorate it with @dataclass"
        )
    _PARTS[(kind, part)] = options_cls
    hints = typing.get_type_hints(options_cls)
    for f in dataclasses.fields(options_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        meta = f.metadata
        spec = _SPECS.get(f.name)
        if spec is not None and _base_type(spec.kind) is not _base_type(hints[f.name]):
            raise PluginError(
                f"{kind} {part!r} declares option {f.name!r} as {_type_name(hints[f.name])}, but "
                f"{spec.describe_owners()} declare it as {_type_name(spec.kind)}; rename it"
            )
        defaults = tuple(d for d in (spec.defaults if spec else ()) if d[0] != (kind, part))
        _SPECS[f.name] = OptionSpec(
            name=f.name,
            kind=hints[f.name] if spec is None else spec.kind,
            help=meta.get("help", "") if spec is None else spec.help,
            choices=meta.get("choices") if spec is None else spec.choices,
            minimum=meta.get("minimum") if spec is None else spec.minimum,
            positive=meta.get("positive", False) if spec is None else spec.positive,
            exclusive=meta.get("exclusive", False) if spec is None else spec.exclusive,
            defaults=(*defaults, ((kind, part), default)),
        )


def is_tuple_option(spec: OptionSpec) -> bool:
    """Whether an option holds a tuple of integers (given as ``32,64`` on the command line)."""
    return _base_type(spec.kind) is tuple


def forget(kind: str, part: str) -> None:
    """Drop a part's declaration (when a plugin that registered it fails to import)."""
    _PARTS.pop((kind, part), None)
    for name, spec in list(_SPECS.items()):
        defaults = tuple(d for d in spec.defaults if d[0] != (kind, part))
        if defaults:
            _SPECS[name] = dataclasses.replace(spec, defaults=defaults)
        else:
            del _SPECS[name]


def specs() -> dict[str, OptionSpec]:
    """Every declared option name, in declaration order."""
    return dict(_SPECS)


def options_of(kind: str, part: str) -> type:
    """The ``Options`` dataclass of a registered part."""
    return _PARTS.get((kind, part), NoOptions)


def option_names(kind: str, part: str) -> list[str]:
    """The option names a registered part declares."""
    return [f.name for f in dataclasses.fields(options_of(kind, part))]


def default_for(name: str, chosen: Iterable[tuple[str, str]]) -> Any:
    """The default of option ``name``: the first chosen part's that declares it, else the first declarer's.

    :raises KeyError: when no registered part declares ``name``.
    """
    spec = _SPECS[name]
    declared = dict(spec.defaults)
    for owner in chosen:
        if owner in declared:
            return declared[owner]
    return spec.defaults[0][1]
