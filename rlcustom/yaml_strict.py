"""YAML as configs need it: ``yaml.safe_load`` that refuses a key given twice in one mapping.

Plain YAML keeps the last of two equal keys without a word, so a config that sets ``optim:`` twice silently
loses the first block. Here that is a :class:`~rlcustom.errors.ConfigError` naming both lines::

    c.yaml:7: duplicate key 'optim' (first at line 2)

Scalars are read as YAML 1.2 reads them (:class:`ConfigLoader`, for files and ``key=value`` overrides alike):
``1e-3`` is a number (YAML 1.1, PyYAML's default, reads an exponent without a dot as a string) and
``2024-01-01`` a string (a config has no dates).
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from rlcustom.errors import ConfigError

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 numbers (``1e-3``, ``1.0e5``) and no timestamps."""

    yaml_implicit_resolvers = {c: [r for r in rs if r[0] != _TIMESTAMP]
                               for c, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


def load_value(text: str) -> Any:
    """One YAML value (an override's right-hand side), read as :class:`ConfigLoader` reads files."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 -- ConfigLoader is a SafeLoader


class _StrictLoader(ConfigLoader):
    source = "<yaml>"


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # before flattening: keys merged in by << may be overridden, once
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: let the normal constructor report it
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            raise ConfigError(f"{loader.source}:{line}: duplicate key {key!r} (first at line {first}); "
                              "keep one of them")
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def safe_load_strict(text: str, source: str = "<yaml>") -> Any:
    """``yaml.safe_load(text)``; a key repeated within one mapping is a ConfigError naming ``source`` and both lines."""
    loader = _StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
