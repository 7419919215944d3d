"""The ``decoder:`` section: guided decoding for ``rlcustom generate`` (``hf`` engine).

``decoder.name`` picks a registered decoder; the section's other keys are that decoder's own options. A
decoder declares them as a frozen dataclass subclassing :class:`DecoderConfig` and registers it with its
factory (``@register_decoder("vas", options=VASOptions)``, :mod:`rlcustom.decoding.registry_cli`), which
lands here in :data:`DECODER_OPTIONS`: this layer imports no decoder, decoders register into it (as
trainers do with :func:`~rlcustom.config.sections.register_section`). The YAML stays flat::

    decoder:
      name: vas
      value: [runs/vas/value]
      beta: [2.0]

:func:`decoder_from_dict` validates it against the named decoder's class with the same pydantic validation
as every section (types, bounds, ``Literal`` choices, unknown keys with a close match); another decoder's
key is "decoder.lam is not used by decoder.name=vas (it takes ...)". Keys that go together (a required
path, one weight per model) are checked by :meth:`DecoderConfig.check` when the section is used, not while
overrides apply one at a time: ``decoder.name=vas decoder.value=DIR`` must not fail after its first half.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union

from rlcustom.config.plugins import load_plugins
from rlcustom.config.validation import validate
from rlcustom.errors import ConfigError

DECODER_OPTIONS: dict[str, type[DecoderConfig]] = {}  # decoder name -> its options class


@dataclass(frozen=True)
class DecoderConfig:
    """Guided decoding for ``rlcustom generate`` (``hf`` engine): ``name`` picks a registered decoder, whose
    own keys sit next to it (their tables: ``decoder (name: ...)``). A bare number or path is accepted where a
    list is (``decoder.beta=2`` is ``[2.0]``). Keys that go together are checked before any model loads.

    A decoder's options class subclasses this one (its keys as fields, each with a default and help) and may
    extend :meth:`check`, :meth:`check_files` and :meth:`describe`; it defines :meth:`load`.
    """

    name: str | None = None  # a registered decoder (vas, dera, dera_lora, qadapter, a plugin's); null: plain sampling

    def __post_init__(self) -> None:
        for k in _list_keys(type(self)):  # a bare item where a list is accepted: a list of one
            v = getattr(self, k)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, k, tuple(v) if isinstance(v, list) else (v,))

    @staticmethod
    def of(name: str | None = None, **options: Any) -> DecoderConfig:
        """The section from Python, validated as a config file's: ``DecoderConfig.of("vas", value="runs/v")``
        is a ``VASOptions``."""
        return decoder_from_dict({"name": name, **options}, source="DecoderConfig.of")

    def options(self) -> dict[str, Any]:
        """The keys set (not null, not an empty list) besides ``name``, lists as lists."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items() if v not in ((), None)}

    def check(self) -> None:
        """Keys that go together (ValueError naming the key), before anything is loaded. A decoder extends it
        (``super().check()`` first)."""
        if self.name is None and self.options():
            raise ValueError(f"decoder.{next(iter(self.options()))} is set but decoder.name is not "
                             f"({_one_of(decoder_names())})")

    def check_files(self) -> None:
        """What can be checked on disk before a model loads (the paths exist); ValueError naming the key."""

    def describe(self) -> str:
        """One line for the run's summary."""
        return f"{self.name} ({', '.join(f'{k}={v}' for k, v in self.options().items())})"

    def load(self, factory: Callable[..., Any], base_model: Any, tokenizer: Any = None) -> Callable[..., Any]:
        """The decoder's own (its options class in :mod:`rlcustom.decoding`): load what it needs besides
        ``base_model`` once and return ``make(**per_call)``, which gives the engine's ``decoder=`` (a
        ``factory(engine_model) -> StepModel``) by calling ``factory``, the function registered in
        :data:`rlcustom.registry.DECODERS`. ``per_call``: options that may change between calls (vas: beta)."""
        raise NotImplementedError(f"decoder {self.name!r}: {type(self).__name__} defines no load()")


def register_decoder_options(name: str, options: type, *, override: bool = False) -> None:
    """Declare ``options`` (a ``@dataclass(frozen=True)`` subclassing :class:`DecoderConfig`) as the keys of
    decoder ``name``; :func:`rlcustom.decoding.registry_cli.register_decoder` calls it with the factory."""
    if not (isinstance(options, type) and issubclass(options, DecoderConfig)
            and "__dataclass_fields__" in vars(options)):
        raise TypeError(f"decoder {name!r}: options must be a @dataclass(frozen=True) subclassing DecoderConfig, "
                        f"got {options!r}")
    required = [f.name for f in dataclasses.fields(options)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:  # overrides apply one at a time: `decoder.name=X` alone must validate; check() requires keys
        raise TypeError(f"decoder {name!r}: every option needs a default (require it in check()): {required}")
    if DECODER_OPTIONS.get(name, options) is not options and not override:
        raise KeyError(f"decoder {name!r} already has options {DECODER_OPTIONS[name].__name__} "
                       "(pass override=True to replace them)")
    DECODER_OPTIONS[name] = options


def decoder_names() -> list[str]:
    """The registered decoders (built-ins and plugins loaded), sorted."""
    load_plugins()
    return sorted(DECODER_OPTIONS)


def decoder_from_dict(raw: Any, *, source: str) -> DecoderConfig:
    """The ``decoder:`` section of a config tree (null: none) as the named decoder's options class; an error
    is one line naming ``source`` and the key. A key of another decoder set to null or ``[]`` is unset."""
    if raw is None:
        return DecoderConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key 'decoder' must be a mapping, got {raw!r}")
    name = raw.get("name")
    if name is None:  # keys before their name (a file read before --decoder): any decoder's type for each
        cls = _any_decoder() if any(k != "name" for k in raw) else DecoderConfig
        return validate(cls, raw, source=source, prefix="decoder")
    if not isinstance(name, str) or name not in DECODER_OPTIONS:
        names = decoder_names()
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            raise ConfigError(f"{source}: key 'decoder.name' must be one of {', '.join(map(repr, names))} or null, "
                              f"got {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    cls = DECODER_OPTIONS[name]
    own = {f.name for f in dataclasses.fields(cls)}
    others = {f.name for c in DECODER_OPTIONS.values() for f in dataclasses.fields(c)} - own
    takes = ", ".join(f"decoder.{f.name}" for f in dataclasses.fields(cls) if f.name != "name") or "no other key"
    for k, v in raw.items():
        if k in others and v not in ((), [], None):
            raise ConfigError(f"{source}: decoder.{k} is not used by decoder.name={name} (it takes {takes})")
    return validate(cls, {k: v for k, v in raw.items() if k not in others}, source=source, prefix="decoder")


def _one_of(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


@functools.cache
def _list_keys(cls: type) -> tuple[str, ...]:
    """The keys typed ``X | tuple[X, ...]`` (a bare item is a list of one)."""
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in dataclasses.fields(cls) if typing.get_origin(hints[f.name]) in (Union, types.UnionType)
                 and any(typing.get_origin(a) is tuple for a in typing.get_args(hints[f.name])))


def _any_decoder() -> type[DecoderConfig]:
    load_plugins()
    return _merged(tuple(sorted(DECODER_OPTIONS.items())))


@functools.cache
def _merged(items: tuple[tuple[str, type], ...]) -> type[DecoderConfig]:
    """Every registered decoder's keys in one class, each key typed to take what any decoder takes (``Literal``
    choices joined, in the decoders' name order); bounds kept where the decoders agree."""
    by_key: dict[str, list[tuple[dataclasses.Field, Any]]] = {}
    for _, cls in items:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name != "name":
                by_key.setdefault(f.name, []).append((f, hints[f.name]))
    specs = []
    for key, decls in by_key.items():
        first = decls[0][0]
        meta = dict(first.metadata) if all(f.metadata == first.metadata for f, _ in decls) else {}
        default = ({"default": first.default} if first.default is not dataclasses.MISSING
                   else {"default_factory": first.default_factory})
        specs.append((key, _either([tp for _, tp in decls]), dataclasses.field(metadata=meta, **default)))
    cls = dataclasses.make_dataclass("AnyDecoderConfig", specs, bases=(DecoderConfig,), frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = "The keys of every registered decoder, while decoder.name is not set."
    return cls


def _either(tps: list[Any]) -> Any:
    """One type taking what each of ``tps`` takes: their ``Literal`` choices joined, else their union."""
    distinct = list(dict.fromkeys(tps))
    if len(distinct) == 1:
        return distinct[0]
    choices: list[Any] = []
    nullable = False
    for tp in distinct:
        for a in typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,):
            if a is type(None):
                nullable = True
            elif typing.get_origin(a) is Literal:
                choices += typing.get_args(a)
            else:
                return Union[tuple(distinct)]
    joined = Literal[tuple(dict.fromkeys(choices))]
    return Optional[joined] if nullable else joined
