"""arrowquant: fast, calibration-free quantization of neural-network weights, Arrow-native."""

import sys as _sys


def _interrupted_while_starting(previous_hook):
    """Ctrl-C while the `arrowquant` command is still importing (its first few tenths of a second)
    ends it with the one line a later Ctrl-C gives, not a traceback from inside numpy or pyarrow.
    Any other exception, and every program that merely imports arrowquant, is left alone."""
    def hook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            print("arrowquant: interrupted while starting; nothing was written", file=_sys.stderr)
        else:
            previous_hook(kind, value, traceback)
    return hook


def _is_the_command() -> bool:
    argv = getattr(_sys, "orig_argv", [])
    started_as_module = len(argv) >= 3 and argv[1] == "-m" and argv[2] in ("arrowquant", "arrowquant.cli")
    script = _sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] if _sys.argv else ""
    return started_as_module or script in ("arrowquant", "arrowquant.exe")


if _is_the_command():
    _sys.excepthook = _interrupted_while_starting(_sys.excepthook)

# pyarrow first: it loads the libarrow.so that the compiled core links against.
import pyarrow as _pyarrow  # noqa: F401

from ._version import DISTRIBUTION, PYARROW_MAJOR, __version__  # noqa: E402

# The pyarrow releases whose libarrow the compiled core links (pyproject.toml: pyarrow>=26,<27).
PYARROW_BUILT_FOR = f"{PYARROW_MAJOR}.x"


def _moved_pyarrow() -> ImportError:
    return ImportError(f"arrowquant was built for pyarrow {PYARROW_BUILT_FOR}, found pyarrow {_pyarrow.__version__}; "
                       f"pip install 'pyarrow>={PYARROW_MAJOR},<{PYARROW_MAJOR + 1}' (or an {DISTRIBUTION} release "
                       "built for your pyarrow)")


if _pyarrow.__version__.split(".")[0] != str(PYARROW_MAJOR):
    raise _moved_pyarrow()
try:
    from . import _core  # noqa: E402
except ImportError as error:
    if "libarrow" in str(error):  # same major, yet its libarrow is not the one the core was linked with
        raise ImportError(f"arrowquant's compiled core cannot load pyarrow {_pyarrow.__version__}'s libarrow ({error}); "
                          f"reinstall {DISTRIBUTION}") from None
    raise
from .aq_file import AqFile  # noqa: E402
from .errors import (  # noqa: E402
    AccuracyError, ArrowQuantError, ColumnTypeError, DataError, FileFormatError, MissingFileError, ParameterError,
    SchemaError, UnsafePathError)
from .quantizer import ArrowQuantV2  # noqa: E402
from .tensor import QuantizedTensor, dequantize_tensors  # noqa: E402
from .diffusion import DiffusionQuantConfig, validate_quality  # noqa: E402
from .diffusion import quantize_diffusion_model as _quantize_diffusion_model  # noqa: E402


def quantize_diffusion_model(model_path, output_path, config=None, progress_callback=None, *, overwrite=False,
                             variant=None, allow_pickle=False):
    """Quantize a diffusers-style model folder, one component folder, a safetensors file or a
    sharded index with ``config`` (a DiffusionQuantConfig; default: the "local" settings without an
    accuracy target) in diffusion mode. The output mirrors the input and must lie outside it; an
    existing output is replaced only with ``overwrite``; ``variant="fp16"`` takes the
    ``*.fp16.safetensors`` weights; ``allow_pickle=True`` reads PyTorch pickles (``.ckpt``, ``.bin``)
    with ``torch.load(weights_only=True)``. Returns a report."""
    report = _quantize_diffusion_model(model_path, output_path, config, progress_callback, mode="diffusion",
                                       overwrite=overwrite, variant=variant, allow_pickle=allow_pickle)
    report.pop("_markov")
    return report

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


def open(path) -> AqFile:  # noqa: A001 - mirrors the built-in on purpose: aq.open("model.aq")
    """Memory-map a .aq file: layer names, metadata, per-layer tensors without copying,
    ``dequantize(name)`` and ``to_safetensors(path)``."""
    return AqFile(path)


def dequantize(quantized, dtype=None):
    """Decode a QuantizedTensor (to an ndarray, float32 unless ``dtype``) or a quantized Arrow
    table (to a table of float32 weights)."""
    if isinstance(quantized, QuantizedTensor):
        return quantized.dequantize(dtype if dtype is not None else "float32")
    if dtype is not None:
        raise ParameterError("dtype applies to a QuantizedTensor; tables always decode to float32")
    return ArrowQuantV2().dequantize_arrow(quantized)


__all__ = [
    "AccuracyError",
    "DiffusionQuantConfig",
    "quantize_diffusion_model",
    "validate_quality",
    "AqFile",
    "QuantizedTensor",
    "FileFormatError",
    "MissingFileError",
    "open",
    "dequantize",
    "ArrowQuantV2",
    "ArrowQuantError",
    "ColumnTypeError",
    "DataError",
    "ParameterError",
    "SchemaError",
    "UnsafePathError",
    "simd_info",
    "set_simd_path",
    "__version__",
]
