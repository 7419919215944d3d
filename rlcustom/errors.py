"""Errors a user sees as one line: they name the file, line or key at fault."""
from __future__ import annotations


class RLCustomError(Exception):
    """Base class; the CLI prints ``str(err)`` alone, without a traceback."""


class ConfigError(RLCustomError, ValueError):
    """A config file or override is malformed: names the file and the dotted key."""


class DataError(RLCustomError, ValueError):
    """A data file is missing or malformed: names ``file:line``."""


class ModelLoadError(RLCustomError, OSError):
    """A model path, alias or hub id cannot be loaded."""


class MissingExtraError(RLCustomError, ImportError):
    """An optional back-end is not installed: names the extra to install."""


class NonFiniteError(RLCustomError, FloatingPointError):
    """A loss, reward or gradient went NaN/Inf too many steps in a row."""


class CheckpointError(RLCustomError, OSError):
    """A checkpoint could not be written; the previous one is intact (its path is in the message)."""
