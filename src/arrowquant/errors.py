"""Exceptions raised by arrowquant.

Every error derives from :class:`ArrowQuantError`; each subclass is also the built-in
exception a Python user would expect (``ValueError`` for bad values, ``TypeError`` for bad
types), so ``except ValueError`` keeps working.
"""


class ArrowQuantError(Exception):
    """Base class of every arrowquant error."""


class ParameterError(ArrowQuantError, ValueError):
    """A bad argument: bit_width, group_size, mode, num_threads, ..."""


class SchemaError(ArrowQuantError, ValueError):
    """A required column is missing from the input table."""


class ColumnTypeError(SchemaError, TypeError):
    """A column has the wrong Arrow type, or the input is not a table at all."""


class DataError(ArrowQuantError, ValueError):
    """The data itself is unusable: NaN/Inf, nulls, a shape that does not match, bad lengths."""


__all__ = ["ArrowQuantError", "ParameterError", "SchemaError", "ColumnTypeError", "DataError"]


class FileFormatError(DataError):
    """A file (safetensors checkpoint, .aq file) is truncated, corrupt or lies about its contents."""


class MissingFileError(ArrowQuantError, FileNotFoundError):
    """An input file or folder does not exist, or holds no checkpoint."""


class UnsafePathError(ParameterError):
    """A path named inside a file (a component, a shard, a symlink) leads outside its folder."""


class AccuracyError(ArrowQuantError, ValueError):
    """A layer cannot reach the requested accuracy (min_accuracy) at any allowed bit width."""


__all__ += ["FileFormatError", "MissingFileError", "UnsafePathError", "AccuracyError"]
