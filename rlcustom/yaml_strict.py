"""YAML as configs need it: ``yaml.safe_load`` that refuses a key given twice in one mapping.

Plain YAML keeps the last of two equal keys without a word, so a config that sets ``optim:`` twice silently
loses the first block. Here that is a :class:`~rlcustom.errors.ConfigError` naming both lines::

    c.yaml:7: duplicate key 'optim' (first at line 2)
"""
from __future__ import annotations

from typing import Any

import yaml

from rlcustom.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
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
