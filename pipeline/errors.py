"""The error types basketcast raises for problems a user can fix; the CLI prints them, never a traceback.

Every message names what is wrong (the file, the column and offending rows, the config key, the
missing model file), so it can be shown as is. :class:`BasketcastError` is the one parent the
command line catches (``error: …``, exit status 2); the subclasses tell the layers apart.
"""

from __future__ import annotations


class BasketcastError(Exception):
    """A problem with basketcast's inputs or artifacts, explained by its message."""


class DataError(BasketcastError, ValueError):
    """Input data (or a data/model folder) is not what basketcast expects."""


class OutputError(BasketcastError):
    """An output cannot be written where it was asked for (it would replace something that is not
    ours, or the disk refused the write); nothing was changed there."""


class ConfigError(DataError):
    """A training config file or value is invalid (unknown key, bad value, unreadable file)."""


class ExportError(BasketcastError):
    """A model cannot be exported for serving (e.g. the ONNX conversion fails the parity check)."""


class BundleError(BasketcastError, RuntimeError):
    """A serving bundle is missing, incomplete or corrupt; the message names the file."""
