"""Loading: YAML file, then ``a.b=value`` overrides, each validated so that an error names its source.

A trainer's ``algo:`` section is typed by the dataclass it registered (:func:`register_section`), the
``decoder:`` section by the options class of the decoder it names (:mod:`rlcustom.config.decoder`);
the registrations come from plugins, imported by name before the first lookup
(:func:`~rlcustom.config.plugins.load_plugins`: ``rlcustom.builtins`` and any ``rlcustom.plugins`` entry
point). A plugin that fails to import raises its own error here; it is never read as "key 'algo' is not used".
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Mapping

import yaml

from rlcustom.config.decoder import decoder_from_dict
from rlcustom.config.plugins import load_plugins
from rlcustom.config.sections import SECTIONS, RunConfig
from rlcustom.config.validation import validate
from rlcustom.errors import ConfigError
from rlcustom.yaml_strict import load_value, safe_load_strict


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': bad key {key!r}")
    try:
        value = load_value(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):  # `data={prompts: P}` merges into data
        value = _merged(node[path[-1]], value)
    node[path[-1]] = value


def _merged(old: dict, new: dict) -> dict:
    return {**old, **{k: _merged(old[k], v) if isinstance(v, dict) and isinstance(old.get(k), dict) else v
                      for k, v in new.items()}}


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = safe_load_strict(p.read_text(), str(p))  # a key given twice is an error naming both lines
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def from_dict(data: Mapping[str, Any], *, source: str = "<config>", cls: type = RunConfig) -> Any:
    """Build ``cls`` from a plain mapping; errors name ``source`` and the key."""
    data = dict(data)
    algo_raw = data.pop("algo", None)
    decoder_raw = data.pop("decoder", None) if cls is RunConfig else None  # typed by the decoder it names
    cfg = validate(cls, data, source=source)
    if cls is RunConfig:
        section = SECTIONS.get(cfg.trainer)
        if section is None:
            load_plugins()
            section = SECTIONS.get(cfg.trainer)
        if section is None and cfg.trainer != "generate":  # an unknown trainer, not its algo: key, is the error
            from rlcustom.registry import TRAINERS

            if TRAINERS.names() and cfg.trainer not in TRAINERS:
                close = difflib.get_close_matches(cfg.trainer, TRAINERS.names() + ["generate"], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(TRAINERS.names())})"
                raise ConfigError(f"{source}: key 'trainer': unknown trainer '{cfg.trainer}'{hint}")
        if algo_raw is not None and section is None:
            raise ConfigError(f"{source}: key 'algo' is not used by trainer '{cfg.trainer}'")
        if section is not None:
            algo = validate(section, algo_raw or {}, source=source, prefix="algo")
            cfg = dataclasses.replace(cfg, algo=algo)
        if decoder_raw is not None:
            cfg = dataclasses.replace(cfg, decoder=decoder_from_dict(decoder_raw, source=source))
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type = RunConfig) -> Any:
    """Load YAML (optional) then apply dotted overrides; validate everything.

    Errors from an override name the override, so a user sees which of the
    two sources was wrong.
    """
    tree = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    # validate the file alone first, so its errors name the file
    from_dict(tree, source=source, cls=cls)
    for ov in overrides:
        keys, value = parse_override(ov)
        _set_path(tree, keys, value)
        from_dict(tree, source=f"override '{ov}'", cls=cls)
    return from_dict(tree, source=source, cls=cls)
