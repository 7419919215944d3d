"""Validation by pydantic: a YAML tree -> the typed, frozen config dataclasses, every error one line.

The dataclasses stay the one source of truth: pydantic reads their type hints (``Literal`` choices,
``X | None``, tuples, mappings, nested sections) and, from a field's ``metadata``, its bounds
(:func:`bounds`: ``gt``/``ge``/``lt``/``le`` are ``pydantic.Field`` arguments). The tree is checked as
JSON in pydantic's strict mode, which is what a text config needs: no silent casts (a string, a bool or
2.5 is no integer; an integer is a number, ``'0.1'`` is not), a list is a tuple, a mapping is a section
(null: its defaults), an unknown key is an error (``extra="forbid"``), NaN and infinities are refused.
:func:`validate` turns the first :class:`pydantic.ValidationError` entry into one
:class:`~rlcustom.errors.ConfigError` line naming the source, the dotted key and what was expected, with a
close match for a typo.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import operator
import types
import typing
from typing import Any, Literal, Union

from rlcustom.errors import ConfigError

STRICT = {"strict": True, "extra": "forbid", "allow_inf_nan": False}  # the pydantic ConfigDict of every section
_RANGE = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def bounds(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None) -> dict:
    """Field metadata that pydantic enforces: ``field(default=1e-5, metadata=bounds(gt=0))``."""
    return {k: v for k, v in {"gt": gt, "ge": ge, "lt": lt, "le": le}.items() if v is not None}


positive = bounds(gt=0)
non_negative = bounds(ge=0)
unit_interval = bounds(ge=0, le=1)


def bounds_text(meta: typing.Mapping[str, Any]) -> str:
    """``{"gt": 0, "le": 1}`` -> ``in (0, 1]``; ``{"ge": 0}`` -> ``>= 0``."""
    lo = ("(", meta["gt"]) if "gt" in meta else ("[", meta["ge"]) if "ge" in meta else None
    hi = (meta["lt"], ")") if "lt" in meta else (meta["le"], "]") if "le" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]}"
    return f"{'<' if hi[1] == ')' else '<='} {hi[0]}" if hi else "in range"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return inner + " or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Any: "any value"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _optional_inner(tp: Any) -> Any:
    """``X | None`` -> ``X`` (pydantic's nullable: no union member in the error location); else ``tp``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return tp


def _locate(cls: type, loc: tuple, prefix: str) -> tuple[str, Any, typing.Mapping[str, Any], tuple, tuple]:
    """Follow a pydantic error location through the type hints: (dotted key, its type, its field metadata,
    the location consumed, the rest). The rest is an unknown key, or a union's member name (pydantic tried
    each member; the union as a whole is what was expected)."""
    key, tp, meta = prefix, cls, {}
    for i, part in enumerate(loc):
        inner = _optional_inner(tp)
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if dataclasses.is_dataclass(inner):
            fields = {f.name: f for f in dataclasses.fields(inner)}
            if part not in fields:
                return key, inner, meta, loc[:i], loc[i:]
            tp, meta, key = typing.get_type_hints(inner)[part], fields[part].metadata, f"{key}.{part}" if key else part
        elif origin in (list, tuple) and isinstance(part, int):
            tp, meta, key = args[0] if origin is list or args[-1] is Ellipsis else args[part], {}, f"{key}[{part}]"
        elif origin is dict:
            tp, meta, key = args[1], {}, f"{key}.{part}"
        else:
            return key, tp, meta, loc[:i], loc[i:]
    return key, tp, meta, loc, ()


def _message(cls: type, err: dict, prefix: str, tree: Any) -> str:
    key, tp, meta, done, rest = _locate(cls, err["loc"], prefix)
    kind = err["type"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        name = f"{key}.{rest[0]}" if key else str(rest[0])
        close = difflib.get_close_matches(str(rest[0]), [f.name for f in dataclasses.fields(tp) if f.init], n=1)
        return f"unknown key '{name}'" + (f" (did you mean '{key + '.' if key else ''}{close[0]}'?)" if close else "")
    if kind in ("value_error", "assertion_error"):  # a section's cross-key check in __post_init__
        return f"section '{key or '<top>'}': {err['ctx']['error']}"
    if kind.startswith("missing"):
        return f"key '{key}' is required"
    got = functools.reduce(operator.getitem, done, tree)  # the value at the key (a union's error input is a part)
    hint = ""
    if kind in _RANGE:
        expected = bounds_text(meta)
    elif kind == "finite_number":
        expected = "a finite number"
    else:
        expected = _type_name(tp)
        if kind == "literal_error":
            choices = [str(a) for a in typing.get_args(_optional_inner(tp))]
            close = difflib.get_close_matches(str(got), choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"key '{key}' must be {expected}, got {got!r}{hint}"


@functools.cache
def _adapter(cls: type) -> Any:
    """pydantic's validator of ``cls``; the config goes on the class (``with_config``, as pydantic wants it for
    a stdlib dataclass) and its nested dataclasses use it too."""
    import pydantic

    return pydantic.TypeAdapter(pydantic.with_config(pydantic.ConfigDict(**STRICT))(cls))


def _null_sections(tp: Any, value: Any) -> Any:
    """A section written as null (``decoder: null``, or ``model:`` with nothing under it) is its defaults.
    A section that may be null (``model.lora``) stays null: ``X | None`` is no dataclass here."""
    if dataclasses.is_dataclass(tp) and value is None:
        return {}
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = typing.get_type_hints(tp)
        return {k: _null_sections(hints[k], v) if k in hints else v for k, v in value.items()}
    if typing.get_origin(tp) is dict and isinstance(value, dict):  # roles: {ROLE: null}
        return {k: _null_sections(typing.get_args(tp)[1], v) for k, v in value.items()}
    return value


def _reject(value: Any) -> Any:
    raise TypeError(f"{value!r} ({type(value).__name__}) is not a config value: use a string, number, "
                    "true/false, null, list or mapping")


def validate(cls: type, data: Any, *, source: str, prefix: str = "") -> Any:
    """``data`` (a YAML tree) as a ``cls`` instance; anything wrong is a one-line ConfigError naming ``source``
    and the dotted key under ``prefix``."""
    import pydantic

    try:
        text = json.dumps(_null_sections(cls, data), default=_reject)
    except (TypeError, ValueError) as e:  # a YAML !!binary or !!set, or an alias that contains itself
        raise ConfigError(f"{source}: {e}") from None
    try:
        return _adapter(cls).validate_json(text)
    except pydantic.ValidationError as e:
        raise ConfigError(f"{source}: {_message(cls, e.errors()[0], prefix, json.loads(text))}") from None


def to_dict(cfg: Any) -> Any:
    """Plain, YAML-safe data of a config (for W&B and checkpoints): sections as dicts, tuples as lists."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(cfg)
