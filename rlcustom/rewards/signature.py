"""What a reward function reads from a prompt record, from its signature.

The documented signature is ``fn(prompt, completion, *, response_ids, **row_fields, **kwargs)``:
``row_fields`` are the prompt record's other columns (``answer``, ``tests``, ...; see
:mod:`rlcustom.data.fields`), ``kwargs`` the config's ``reward.kwargs`` (which win on a clash).
A function that takes ``**kwargs`` gets every column; one that names its keyword arguments gets
only the columns it names, so ``length_tokens`` is not handed an ``answer`` it never asked for.

A keyword-only parameter without a default (``*, answer``) is a *required* column:
:func:`rlcustom.rewards.columns.check_reward_columns` fails before Ray starts when the data lacks it.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

__all__ = ["accepted_fields", "required_fields", "call_kwargs"]

_SAMPLE_ARGS = ("prompt", "completion", "response_ids")


def _params(fn: Callable) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: assume it takes everything
        return [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]


def accepted_fields(fn: Callable) -> frozenset[str] | None:
    """Names of the row fields ``fn`` accepts; None when it takes ``**kwargs`` (all of them)."""
    names = set()
    for p in _params(fn):
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _SAMPLE_ARGS:
            names.add(p.name)
    return frozenset(names)


def required_fields(fn: Callable, kwargs: Mapping[str, Any] | None = None) -> list[str]:
    """Keyword-only parameters without a default that the config's ``kwargs`` do not supply."""
    kwargs = dict(kwargs or {})
    given = set(kwargs)
    hook = getattr(fn, "required_fields_for", None)  # composite rewards: their components' needs
    if callable(hook):
        return [f for f in hook(kwargs.get("components")) if f not in given]
    return [p.name for p in _params(fn) if p.kind is p.KEYWORD_ONLY and p.default is p.empty
            and p.name not in _SAMPLE_ARGS and p.name not in given]


def call_kwargs(accepted: frozenset[str] | None, row: Mapping[str, Any] | None,
                kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one call: the row fields ``fn`` accepts, then the config's kwargs."""
    out = {} if not row else (dict(row) if accepted is None else {k: v for k, v in row.items() if k in accepted})
    out.update(kwargs)
    return out


