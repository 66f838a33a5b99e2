"""arrowquant: fast, calibration-free 2/4/8-bit quantization of neural-network weights."""

# pyarrow first: it loads the libarrow.so that the compiled core links against.
import pyarrow as _pyarrow  # noqa: F401

from . import _core
from .errors import ArrowQuantError, ColumnTypeError, DataError, ParameterError, SchemaError
from .quantizer import ArrowQuantV2

__version__ = "0.1.0"

FORMAT_NAME = "arrowquant.packed"
FORMAT_VERSION = "1"


def simd_info() -> dict:
    """The SIMD path in use ("active"), the ones this CPU supports, and whether it was forced
    (by the ARROWQUANT_ISA environment variable or :func:`set_simd_path`)."""
    return dict(_core.simd_info())


def set_simd_path(name: str) -> None:
    """Force a SIMD path for this process: "scalar", "avx2", "avx512", or "auto" (the best one).

    For tests and benchmarks; results are byte-identical on every path."""
    _core.select_isa(name)


__all__ = [
    "ArrowQuantV2",
    "ArrowQuantError",
    "ColumnTypeError",
    "DataError",
    "ParameterError",
    "SchemaError",
    "simd_info",
    "set_simd_path",
    "__version__",
]
