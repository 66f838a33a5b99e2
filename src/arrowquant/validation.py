"""Validators and constants of the quantization parameters, at the bottom of the package: every
front end (ArrowQuantV2, the diffusion pipeline, GGUF) checks its arguments here, and this module
imports nothing of arrowquant but its errors."""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from .errors import ParameterError

MODES = ("diffusion", "base")
METHODS = ("rtn", "search")
# The default when neither the call nor the instance names a method: the per-tensor and Arrow
# APIs keep RTN (search is about 7x slower, docs/search.md); the whole-model pipelines' defaults
# depend on the scheme (schemes.DEFAULT_PIPELINE_METHODS).
DEFAULT_METHOD = "rtn"
BIT_WIDTHS = (2, 4, 8)  # the affine scheme's (schemes.BIT_WIDTHS_BY_SCHEME has every scheme's)


def check_bit_width(bit_width: Any) -> int:
    if isinstance(bit_width, bool) or not isinstance(bit_width, int) or bit_width not in BIT_WIDTHS:
        raise ParameterError(f"bit_width must be 2, 4 or 8; got {bit_width!r}")
    return bit_width


def check_group_size(group_size: Any) -> int:
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or not 16 <= group_size <= 4096
        or group_size & (group_size - 1)
    ):
        raise ParameterError(
            f"group_size must be a power of two from 16 to 4096 (e.g. 32, 64, 128, 256); got {group_size!r}"
        )
    return group_size


def check_symmetric(symmetric: Any) -> bool:
    if not isinstance(symmetric, bool):
        raise ParameterError(f"symmetric must be True or False; got {symmetric!r}")
    return symmetric


def check_num_threads(num_threads: Any) -> int | None:
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ParameterError(f"num_threads must be a positive integer or None (all cores); got {num_threads!r}")
    return num_threads


def check_method(method: Any) -> str:
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    return method


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    return mode


def closest(value: Any, names: Sequence[str]) -> str | None:
    """The name a mistyped ``value`` most likely meant, or None: the same letters without the
    underscores or dashes ("Q4KM", "q4-k-m" -> Q4_K_M), else the nearest spelling."""
    if not isinstance(value, str):
        return None
    by_letters = {n.upper().replace("_", "").replace("-", ""): n for n in names}
    by_upper = {n.upper(): n for n in names}
    near = by_letters.get(value.upper().replace("_", "").replace("-", ""))
    if near is None:
        matches = difflib.get_close_matches(value.upper(), list(by_upper), n=1)
        near = by_upper[matches[0]] if matches else None
    return near
