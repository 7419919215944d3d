"""Plugins: the modules whose import registers trainers, ``algo:`` sections, decoders and their options,
rewards, estimators, ... into the registries (the config's :data:`~rlcustom.config.sections.SECTIONS` and
:data:`~rlcustom.config.decoder.DECODER_OPTIONS` among them).

:func:`load_plugins` imports them by name, not at the top of a module: the config layer sits below the
trainers and decoders that register into it. A plugin that fails to import raises its own error here; it
is never read as "key 'algo' is not used" or an unknown decoder.
"""
from __future__ import annotations

import importlib

PLUGINS = ("rlcustom.builtins",)  # modules whose import registers trainers, sections, decoders, rewards, ...
_loaded = False


def load_plugins() -> None:
    """Import the built-ins and every ``rlcustom.plugins`` entry point, once."""
    global _loaded
    if _loaded:
        return
    from importlib.metadata import entry_points

    for name in PLUGINS:
        importlib.import_module(name)
    for ep in entry_points(group="rlcustom.plugins"):
        ep.load()
    _loaded = True  # only once all imported: a failing plugin fails again on the next load, never silently
