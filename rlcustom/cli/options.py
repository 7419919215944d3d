"""What several commands share: the ``CONFIG [key=value ...]`` arguments and flag -> key overrides.

Public so that other command modules (cluster submit, benchmarks) read a config the way the CLI does,
without importing the command table.

    rlcustom train configs/ppo.yaml steps=4 optim.lr=1e-4
    rlcustom generate model.path=runs/x/model --out gens.jsonl     # overrides only: no config file
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Iterable, List, Mapping, Optional

import typer

__all__ = ["ConfigArg", "OverridesArg", "split_config", "load", "flag_overrides"]

ConfigArg = Annotated[Optional[str], typer.Argument(
    help="YAML config (see configs/); may be left out when only key=value overrides are given",
    show_default=False)]
OverridesArg = Annotated[Optional[List[str]], typer.Argument(
    help="dotted overrides, e.g. sampling.temperature=0.7 (anywhere on the line)", show_default=False)]


def split_config(config: str | None, overrides: Iterable[str] | None) -> tuple[str | None, list[str]]:
    """``(config, overrides)`` with a first argument that is an override (``k=v``, not a file) moved
    to the overrides: ``rlcustom generate model.path=x`` has no config file."""
    rest = list(overrides or [])
    if config is not None and "=" in config and not Path(config).exists():
        return None, [config, *rest]
    return config, rest


def load(config: str | None, overrides: Iterable[str] | None, extra: Iterable[str] = (), *, command: str = "train",
         **checks: Any):
    """The validated config: file, then its overrides, then ``extra`` (flags win over both); then the preflight
    (every check that needs no Ray and no weights: paths, registry names, model files, resume; ``checks`` are
    the command's ``out``/``limit``/``pairs``/``n``/``new_tokens``/``policy``/``reference``/``rescore``)."""
    from types import SimpleNamespace

    from rlcustom.config import load_config
    from rlcustom.preflight import preflight_args

    path, ov = split_config(config, overrides)
    cfg = load_config(path, ov + list(extra))
    preflight_args(cfg, SimpleNamespace(command=command, config=path, **checks))
    return cfg


def flag_overrides(values: Mapping[str, Any], table: Mapping[str, str]) -> list[str]:
    """``key=value`` for every flag in ``table`` (flag name -> config key) that was given."""
    return [f"{key}={values[name]}" for name, key in table.items() if values.get(name) is not None]
