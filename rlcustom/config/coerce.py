"""The generic engine under every config section: YAML values -> typed, checked dataclass fields.

``_convert(type, value, key)`` follows the type hint (``Literal`` choices with a close-match hint,
``X | None``, lists/tuples, mappings, nested dataclasses, bool/int/float/str with no silent casts);
``_build(cls, mapping, prefix)`` builds one dataclass, rejecting unknown keys (with a did-you-mean)
and running each field's ``metadata=check(predicate, "description")``. Failures are a :class:`_Fail`
naming the dotted key; the loader turns it into a one-line :class:`~rlcustom.errors.ConfigError`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Callable, Literal, Mapping, Union

def check(pred: Callable[[Any], bool], desc: str, doc: str = "") -> dict:
    """Field metadata: ``field(default=1e-5, metadata=check(lambda v: v > 0, "> 0"))``."""
    return {"check": (pred, desc), "doc": doc}


positive = check(lambda v: v > 0, "> 0")
non_negative = check(lambda v: v >= 0, ">= 0")
unit_interval = check(lambda v: 0 <= v <= 1, "in [0, 1]")


class _Fail(Exception):
    def __init__(self, key: str, msg: str) -> None:
        super().__init__(msg)
        self.key, self.msg = key, msg


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
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to ``tp`` or raise _Fail naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key)
            except _Fail as e:
                errors.append(e)
        raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)[:1]
        return tuple(_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Fail(key, f"must be {_type_name(tp)}, got {value!r}")
        vt = typing.get_args(tp)[1]
        return types.MappingProxyType({str(k): _convert(vt, v, f"{key}.{k}") for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _Fail(key, f"must be a mapping, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise _Fail(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Fail(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Fail(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise _Fail(key, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Fail(key, f"must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise _Fail(key, f"unknown key '{key}'{hint}")
        f = fields[k]
        val = _convert(hints[k], v, key)
        chk = f.metadata.get("check")
        if chk and val is not None and not chk[0](val):
            raise _Fail(key, f"key '{key}' must be {chk[1]}, got {val!r}")
        kwargs[k] = val
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # cross-field checks in __post_init__
        raise _Fail(prefix or cls.__name__, f"section '{prefix or '<top>'}': {e}") from None


def _fmt(fail: _Fail) -> str:
    return fail.msg if fail.msg.startswith(("key ", "unknown key", "section ")) else f"key '{fail.key}' {fail.msg}"


def to_dict(cfg: Any) -> Any:
    """Plain, YAML-safe dict of a config (for W&B and checkpoints)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg
